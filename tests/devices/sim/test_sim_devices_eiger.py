import re
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from bluesky.utils import FailedStatus
from event_model import DocumentNames, schema_validators
from ophyd_async.core import (
    FlyMotorInfo,
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    init_devices,
)

from opmap.devices import BITSHUFFLE_FILTER_ID, EigerMetadata
from opmap.devices.sim import ClockMode, SimClock, SimEiger, SimMapStage
from opmap.twin import BeamScene

SHAPE = (6, 8)
META = EigerMetadata(3e-4, 3e-4, 0.1, 4.0, 3.0, 0.6888)


class EchoScene:
    def scene(self, *, z_um, x_start_um, x_stop_um, time_s):
        return BeamScene(time_s, z_um, x_start_um, x_stop_um, layer_weights={"lco": 1.0})


class EchoRenderer:
    """Writes what it was asked to render into the frame, in milli-units."""

    def render(self, scene, *, exposure_s, rng):
        frame = np.zeros(SHAPE, np.uint32)
        frame[0, :4] = [
            round(1000 * (scene.x_start_um + 1000)),
            round(1000 * (scene.x_stop_um + 1000)),
            round(1000 * scene.time_s),
            round(1000 * exposure_s),
        ]
        frame[1, 0] = round(1000 * scene.z_um)
        return frame


def _decode(frame):
    x0, x1, t, exp = (frame[0, :4].astype(float) / 1000) - [1000, 1000, 0, 0]
    return x0, x1, t, exp, frame[1, 0] / 1000


@pytest.fixture
def rig(RE, tmp_path):
    clock = SimClock()
    path_provider = StaticPathProvider(StaticFilenameProvider("map_0001"), tmp_path)
    with init_devices():
        stage = SimMapStage(clock)
        eiger = SimEiger(
            path_provider,
            clock,
            EchoScene(),
            EchoRenderer(),
            stage.x,
            stage.z,
            SHAPE,
            META,
            frames_per_file=4,
        )
    return clock, stage, eiger, tmp_path


def _validated(RE):
    docs = []

    def check(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        docs.append((name, doc))

    RE.subscribe(check)
    return docs


def test_count_writes_dectris_layout_with_metadata_and_compression(RE, rig):
    _clock, stage, eiger, tmp_path = rig
    docs = _validated(RE)
    RE(bps.mv(stage.z, 10.0))
    RE(bp.count([eiger], num=6))
    master = tmp_path / "map_0001_master.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "map_0001_data_000001.h5",
        "map_0001_data_000002.h5",
        "map_0001_master.h5",
    ]
    with h5py.File(master, "r") as f:
        det = f["/entry/instrument/detector"]
        assert det["x_pixel_size"][()] == 3e-4 and det["x_pixel_size"].attrs["units"] == "m"
        assert det["detector_distance"][()] == 0.1
        assert (det["beam_center_x"][()], det["beam_center_y"][()]) == (4.0, 3.0)
        assert det["count_time"][()] == 0.05 and det["count_time"].attrs["units"] == "s"
        wl = f["/entry/instrument/beam/incident_wavelength"]
        assert wl[()] == 0.6888 and wl.attrs["units"] == "angstrom"
        first, second = f["/entry/data/data_000001"], f["/entry/data/data_000002"]
        assert (first.shape, second.shape) == ((4, *SHAPE), (2, *SHAPE))
        assert first.dtype == np.uint32 and first.chunks == (1, *SHAPE)
        assert first.id.get_create_plist().get_filter(0)[0] == BITSHUFFLE_FILTER_ID
        frames = f["/entry/data/data"][()]
        times = f["/entry/opmap/time_s"][()]
    assert frames.shape == (6, *SHAPE)
    # frame k exposes [k, k+1) x (0.05 s + 0.1 µs dead time) after the z move; z = 10 µm
    decoded = np.array([_decode(fr) for fr in frames])
    np.testing.assert_allclose(np.diff(decoded[:, 2]), 0.05, atol=2e-3)
    np.testing.assert_allclose(decoded[:, 3], 0.05)
    np.testing.assert_allclose(decoded[:, 4], 10.0)
    np.testing.assert_allclose(times, decoded[:, 2], atol=1e-3)
    names = [n for n, _ in docs]
    assert names.count("stream_resource") == 3 and names.count("event") == 6
    descriptor = next(d for n, d in docs if n == "descriptor")
    # ophyd-async's convention: one collection per event leads the shape
    assert descriptor["data_keys"]["eiger"]["shape"] == [1, *SHAPE]
    assert descriptor["data_keys"]["eiger-x_um"]["shape"] == [1]
    resource = next(d for n, d in docs if n == "stream_resource" and d["data_key"] == "eiger")
    assert resource["uri"].endswith("map_0001_master.h5")
    assert resource["parameters"]["dataset"] == "/entry/data/data"


def test_fly_line_one_frame_per_33um_bin(RE, rig):
    _clock, stage, eiger, tmp_path = rig
    docs = _validated(RE)
    n_frames, exposure_s, bin_um = 10, 0.05, 33.0
    info = FlyMotorInfo(
        start_position=0.0, end_position=n_frames * bin_um, time_for_move=n_frames * exposure_s
    )

    def fly():
        yield from bps.stage(eiger)
        yield from bps.open_run()
        yield from bps.prepare(stage.x, info, wait=True)
        yield from bps.prepare(
            eiger, TriggerInfo(number_of_events=n_frames, livetime=exposure_s), wait=True
        )
        yield from bps.declare_stream(eiger, name="primary", collect=True)
        yield from bps.kickoff(stage.x, wait=True)
        yield from bps.kickoff(eiger, wait=True)
        yield from bps.collect_while_completing([stage.x, eiger], [eiger], flush_period=0.2)
        yield from bps.close_run()
        yield from bps.unstage(eiger)

    RE(fly())
    with h5py.File(tmp_path / "map_0001_master.h5", "r") as f:
        frames = f["/entry/data/data"][()]
        x_um = f["/entry/opmap/x_um"][()]
    decoded = np.array([_decode(fr) for fr in frames])
    assert len(frames) == n_frames
    travel = decoded[:, 1] - decoded[:, 0]
    np.testing.assert_allclose(travel, bin_um, rtol=1e-3)  # constant speed: 660 µm/s
    np.testing.assert_allclose(decoded[:, 0], np.arange(n_frames) * bin_um, atol=0.1)
    np.testing.assert_allclose(x_um, (decoded[:, 0] + decoded[:, 1]) / 2, atol=1e-3)
    datums = [d for n, d in docs if n == "stream_datum" and d["stream_resource"]]
    assert sum(d["indices"]["stop"] - d["indices"]["start"] for d in datums) == 3 * n_frames


def test_non_positive_exposure_is_refused_before_anything_is_written(RE, rig):
    _clock, _stage, eiger, tmp_path = rig

    def plan():
        yield from bps.stage(eiger)
        yield from bps.prepare(eiger, TriggerInfo(number_of_events=3, livetime=0.0), wait=True)

    eiger.acquisition.count_time_s = -0.05
    with pytest.raises(FailedStatus) as excinfo:
        RE(plan())
    cause = excinfo.value.__cause__
    assert isinstance(cause, ValueError)
    assert re.search(r"exposure \(livetime\) = -0.05 s must be > 0", str(cause))
    assert list(Path(tmp_path).iterdir()) == []
    with pytest.raises(ValueError, match="livetime"):
        TriggerInfo(livetime=-1.0)


def test_on_a_wall_clock_frames_are_written_as_they_are_exposed(RE, tmp_path):
    # a detector on the wall clock renders each frame once its exposure ends, while the next
    # ones are exposed: frames_written counts up through the series, not at its end
    clock = SimClock(ClockMode.REAL_TIME)
    path_provider = StaticPathProvider(StaticFilenameProvider("wall"), tmp_path)
    with init_devices():
        stage = SimMapStage(clock)
        eiger = SimEiger(path_provider, clock, EchoScene(), EchoRenderer(), stage.x, stage.z,
                         SHAPE, META, frames_per_file=4)  # fmt: skip
    n_frames, exposure_s = 12, 0.05
    seen: list[int] = []

    def series():
        yield from bps.stage(eiger)
        yield from bps.open_run()
        yield from bps.prepare(
            eiger, TriggerInfo(number_of_events=n_frames, livetime=exposure_s), wait=True
        )
        yield from bps.kickoff(eiger, wait=True)
        while not seen or seen[-1] < n_frames:  # frames written, every 10 ms
            seen.append((yield from bps.rd(eiger.acquisition.frames_written)))
            yield from bps.sleep(0.01)
        yield from bps.complete(eiger, wait=True)
        yield from bps.close_run()
        yield from bps.unstage(eiger)

    RE(series())
    assert seen[-1] == n_frames
    assert len({n for n in seen if 0 < n < n_frames}) >= 2, seen  # written during the series
    with h5py.File(tmp_path / "wall_master.h5", "r") as f:
        frames = f["/entry/data/data"][()]
    decoded = np.array([_decode(fr) for fr in frames])
    np.testing.assert_allclose(np.diff(decoded[:, 2]), exposure_s, atol=2e-3)  # in order
