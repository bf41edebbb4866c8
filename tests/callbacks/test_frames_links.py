"""FrameReader on a Dectris master read through its per-file links (what a real DCU writes)."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from opmap.callbacks.frames import FrameReader, FrameReadError

from .._dectris_links import links_resource, write_links_master

SHAPE = (6, 5)


def _stack(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5000, (n, *SHAPE), dtype=np.uint32)


def _datum(start: int, stop: int, seq_start: int, resource: str = "r1") -> dict:
    return {
        "uid": f"{resource}/{start}",
        "stream_resource": resource,
        "descriptor": "d1",
        "indices": {"start": start, "stop": stop},
        "seq_nums": {"start": seq_start, "stop": seq_start + stop - start},
    }


def _reader(**options) -> FrameReader:
    reader = FrameReader(**options)
    reader("descriptor", {"uid": "d1", "name": "primary"})
    return reader


def test_rows_map_to_link_and_row_across_data_files_and_series(tmp_path):
    first, second = _stack(10, seed=1), _stack(3, seed=2)
    reader = _reader()
    reader("stream_resource", links_resource(write_links_master(tmp_path, "m_0001", first, 4), 4))
    batch = reader("stream_datum", _datum(0, 10, 1))  # 3 data files: 4 + 4 + 2 frames
    np.testing.assert_array_equal(batch.values, first)
    assert batch.seq_start == 1 and batch.frame_indices.tolist() == list(range(10))
    assert not (tmp_path / "m_0001_data_000004.h5").exists()
    # a second series (one resource per arm) continues the stream's sequence numbers
    master = write_links_master(tmp_path, "m_0002", second, 4)
    reader("stream_resource", links_resource(master, 4, uid="r2"))
    rows = reader.locate(_datum(1, 3, 12, resource="r2"))
    assert rows.dataset is None and rows.links.frames_per_file == 4
    np.testing.assert_array_equal(reader.read(rows).values, second[1:3])


def test_rows_inside_one_file_and_straddling_two(tmp_path):
    stack = _stack(10)
    reader = _reader()
    reader("stream_resource", links_resource(write_links_master(tmp_path, "s", stack, 4), 4))
    np.testing.assert_array_equal(reader("stream_datum", _datum(5, 7, 6)).values, stack[5:7])
    np.testing.assert_array_equal(reader("stream_datum", _datum(3, 9, 4)).values, stack[3:9])


def test_missing_data_file_is_a_clear_error_naming_the_file(tmp_path):
    master = write_links_master(tmp_path, "gone", _stack(10), 4)
    (tmp_path / "gone_data_000002.h5").unlink()
    reader = _reader(retries=2, retry_delay_s=0.001)
    reader("stream_resource", links_resource(master, 4))
    np.testing.assert_array_equal(
        reader("stream_datum", _datum(0, 4, 1)).values.shape, (4, *SHAPE)
    )
    with pytest.raises(FrameReadError) as excinfo:
        reader("stream_datum", _datum(4, 8, 5))
    message = str(excinfo.value)
    assert f"data file {tmp_path / 'gone_data_000002.h5'} does not exist" in message
    assert "unreadable after 3 attempts" in message


def test_a_data_file_with_frames_not_yet_written_is_not_read(tmp_path):
    stack = _stack(4)
    master = write_links_master(tmp_path, "half", stack, 4)
    with h5py.File(tmp_path / "half_data_000001.h5", "a") as f:  # frames 2, 3 not written
        del f["entry/data/data"]
        node = f.create_dataset("entry/data/data", (4, *SHAPE), np.uint32, chunks=(1, *SHAPE))
        node[:2] = stack[:2]
    reader = _reader(retries=1, retry_delay_s=0.001)
    reader("stream_resource", links_resource(master, 4))
    np.testing.assert_array_equal(reader("stream_datum", _datum(0, 2, 1)).values, stack[:2])
    with pytest.raises(FrameReadError, match=r"half_data_000001\.h5: frame 2 not written yet"):
        reader("stream_datum", _datum(0, 4, 1))


def test_a_data_file_is_read_once_it_appears(tmp_path):
    stack = _stack(6)
    master = write_links_master(tmp_path, "late", stack, 4)
    late = tmp_path / "late_data_000002.h5"
    held = late.rename(tmp_path / "held.h5")
    timer = threading.Timer(0.3, lambda: held.rename(late))
    reader = _reader(retries=200, retry_delay_s=0.01)
    reader("stream_resource", links_resource(master, 4))
    timer.start()
    try:
        batch = reader("stream_datum", _datum(0, 6, 1))
    finally:
        timer.join()
    np.testing.assert_array_equal(batch.values, stack)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"frames_per_file": 0}, "frames_per_file=0"), ({"first_link": "1"}, "first_link='1'")],
)
def test_bad_link_parameters_name_the_parameter(tmp_path, parameters, message):
    resource = links_resource(tmp_path / "x_master.h5", 4)
    resource["parameters"].update(parameters)
    reader = _reader()
    reader("stream_resource", resource)
    with pytest.raises(FrameReadError, match=message):
        reader("stream_datum", _datum(0, 1, 1))
