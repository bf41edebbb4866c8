"""`MapRunDocuments` on hand-written documents of a 2 × 3 map: frames, lines, events."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from opmap.callbacks.frames import DatumRows, FrameReader, FrameReadError
from opmap.callbacks.live import MapRunDocuments, detector_frame_key
from opmap.plans import MapGeometry

GEOMETRY = MapGeometry(z_start_um=5.0, z_count=2, x_start_um=0.0, x_stop_um=30.0, x_count=3)
START = {"uid": "run-1", "time": 0.0, "map_geometry": GEOMETRY.model_dump()}
FRAMES = {"external": "STREAM:", "shape": [4, 5], "dtype": "array", "source": "sim"}
SCALAR = {"shape": [], "dtype": "number", "source": "sim"}


class Recorder(MapRunDocuments):
    """Remembers the located frame batches instead of reading them."""

    def __init__(self, start, reader) -> None:
        super().__init__(start, reader)
        self.batches: list[DatumRows] = []

    def frames(self, rows: DatumRows) -> None:
        self.batches.append(rows)


def descriptor(uid: str, name: str, data_keys: dict) -> dict:
    return {"uid": uid, "name": name, "run_start": "run-1", "data_keys": data_keys}


def datum(resource: str, rows: tuple[int, int], seq: tuple[int, int]) -> dict:
    return {
        "uid": f"{resource}/{rows[0]}",
        "stream_resource": resource,
        "descriptor": "d-primary",
        "indices": {"start": rows[0], "stop": rows[1]},
        "seq_nums": {"start": seq[0], "stop": seq[1]},
    }


def event_page(descriptor_uid: str, **columns: list) -> dict:
    n = len(next(iter(columns.values())))
    return {
        "descriptor": descriptor_uid,
        "uid": [f"{descriptor_uid}-{i}" for i in range(n)],
        "seq_num": list(range(1, n + 1)),
        "time": [0.0] * n,
        "data": columns,
        "timestamps": {key: [0.0] * n for key in columns},
        "filled": {},
    }


@pytest.fixture
def times_file(tmp_path):
    path = tmp_path / "run_master.h5"
    with h5py.File(path, "w") as f:
        f["entry/opmap/time_s"] = np.arange(6, dtype=float) + 100.0
    return path


def documents(times_file) -> list[tuple[str, dict]]:
    uri = f"file://localhost{times_file}"
    return [
        ("start", START),
        ("descriptor", descriptor("d-primary", "primary", {"eiger": FRAMES, "x_um": SCALAR})),
        ("descriptor", descriptor("d-lines", "lines", {"line_index": SCALAR})),
        ("descriptor", descriptor("d-state", "ec_state", {"potentiostat_time_s": SCALAR})),
        ("descriptor", descriptor("d-ec", "electrochemistry", {"potentiostat_current_a": SCALAR})),
        ("stream_resource", {"uid": "r-frames", "data_key": "eiger", "uri": uri}),
        (
            "stream_resource",
            {
                "uid": "r-times",
                "data_key": "eiger-time_s",
                "uri": uri,
                "parameters": {"dataset": "/entry/opmap/time_s"},
            },
        ),
        ("stream_datum", datum("r-frames", (0, 6), (1, 7))),
        ("stream_datum", datum("r-times", (0, 6), (1, 7))),
        (
            "event_page",
            event_page(
                "d-lines",
                line_index=[0, 1],
                line_first_frame=[0, 3],
                line_n_frames=[3, 3],
                line_z_um=[5.0, 6.0],
                line_x_um=[[5.0, 15.0, 25.0]] * 2,
            ),
        ),
        ("event_page", event_page("d-state", potentiostat_time_s=[10.0, 20.0])),
        (
            "event_page",
            event_page(
                "d-ec",
                potentiostat_current_a=[1e-6, 3e-6],
                potentiostat_potential_v=[4.0, 4.2],
            ),
        ),
        ("stop", {"uid": "stop-1", "run_start": "run-1", "exit_status": "success"}),
    ]


def test_router_locates_frames_reads_times_and_records_lines_and_cell_state(times_file):
    run = Recorder(START, FrameReader()).follow(documents(times_file))
    assert run.frame_key == "eiger"
    (batch,) = run.batches
    assert (batch.data_key, batch.stream, batch.rows, batch.seq) == (
        "eiger",
        "primary",
        (0, 6),
        (1, 7),
    )
    assert batch.dataset == "/entry/data/data"  # the Dectris frames when the resource names none
    np.testing.assert_array_equal(batch.frame_indices, np.arange(6))
    acc = run.accumulator
    assert acc.valid_frames() == [0, 1, 2, 3, 4, 5]
    assert acc.frame_time_s == {i: 100.0 + i for i in range(6)}
    assert acc.map_time_s() == 15.0  # ec_state readbacks win over the frame times
    assert acc.cell_state() == pytest.approx({"potential_v": 4.1, "current_a": 2e-6})
    assert run.stop_doc["exit_status"] == "success"


def test_a_datum_whose_rows_and_events_disagree_is_refused(times_file):
    docs = documents(times_file)
    docs[7] = ("stream_datum", datum("r-frames", (0, 6), (1, 6)))
    with pytest.raises(FrameReadError, match="indices"):
        Recorder(START, FrameReader()).follow(docs)


def test_unreadable_frame_times_leave_the_map_time_to_ec_state(times_file, caplog):
    times_file.unlink()
    run = Recorder(START, FrameReader(retries=0)).follow(documents(times_file))
    assert run.accumulator.frame_time_s == {}
    assert run.accumulator.map_time_s() == 15.0
    assert "frame times not read" in caplog.text


@pytest.mark.parametrize(
    ("name", "data_key", "expected"),
    [
        ("primary", FRAMES, "eiger"),
        ("primary", {**FRAMES, "shape": [2, 4, 5]}, "eiger"),
        ("primary", {**FRAMES, "shape": [1, 4, 5]}, "eiger"),  # ophyd-async's [1, H, W]
        ("primary", {**FRAMES, "shape": [1, 5]}, None),  # one spectrum per event
        ("primary", {**FRAMES, "external": None}, None),  # inside the events: not frames
        ("primary", {**FRAMES, "shape": [5]}, None),  # a spectrum, not an image
        ("baseline", FRAMES, None),  # only the frames stream holds the map's frames
    ],
)
def test_frame_key_rule(name, data_key, expected):
    assert detector_frame_key(descriptor("d", name, {"eiger": data_key})) == expected
