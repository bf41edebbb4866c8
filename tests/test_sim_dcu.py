"""``opmap sim-dcu`` as a process, driven by the SIMPLON Eiger over real HTTP.

The DCU renders the twin into Dectris files; the tests read those files back the way the
stream resources describe them (master, per-file links of ``frames_per_file`` frames).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import httpx
import numpy as np
import pytest
from bluesky.preprocessors import run_decorator, stage_decorator
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus
from ophyd_async.core import (
    DetectorTrigger,
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    init_devices,
)
from ophyd_async.sim import SimMotor

from opmap.cli import build_parser
from opmap.devices.simplon import SimplonEiger, SimplonError
from opmap.plans import MapGeometry, fly_map

from .devices._simplon_servers import API, initialize, sim_dcu

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dcu(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dcu")
    with sim_dcu(data_dir, "--x-um", "500", "--z-um", "20") as base_url:
        initialize(base_url)
        yield base_url, data_dir


def _eiger(RE, base_url: str, data_dir: Path, stem: str, per_file: int = 1000):
    provider = StaticPathProvider(StaticFilenameProvider(stem), data_dir)
    with init_devices():
        eiger = SimplonEiger(base_url, provider, frames_per_file=per_file, external_timeout_s=30.0)
    return eiger


def _series(eiger, info: TriggerInfo):
    @stage_decorator([eiger])
    @run_decorator()
    def plan():
        yield from bps.prepare(eiger, info, wait=True)
        yield from bps.declare_stream(eiger, name="primary", collect=True)
        yield from bps.kickoff(eiger, wait=True)
        yield from bps.complete(eiger, wait=True)
        yield from bps.collect(eiger, name="primary")

    return plan()


def read_frames(resource: dict, indices: dict) -> np.ndarray:
    """What a reader must do: frame i is row i % n of link i // n + 1 in the master."""
    params = resource["parameters"]
    per_file, template = params["frames_per_file"], params["link_template"]
    with h5py.File(urlparse(resource["uri"]).path, "r") as master:
        return np.stack(
            [
                master[template.format(i // per_file + params["first_link"])][i % per_file]
                for i in range(indices["start"], indices["stop"])
            ]
        )


def test_ints_series_writes_dectris_files_that_the_documents_describe(RE, dcu):
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "count", per_file=4)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(_series(eiger, TriggerInfo(number_of_events=10, livetime=0.02)))
    names = sorted(p.name for p in data_dir.glob("count_0001_*"))
    assert names == [
        "count_0001_data_000001.h5",
        "count_0001_data_000002.h5",
        "count_0001_data_000003.h5",
        "count_0001_master.h5",
    ]
    with h5py.File(data_dir / "count_0001_master.h5", "r") as master:
        links = {k: master["/entry/data"].get(k, getlink=True) for k in master["/entry/data"]}
        counts = [master[f"/entry/data/data_{n:06d}"].shape[0] for n in (1, 2, 3)]
        assert master["/entry/instrument/detector/count_time"][()] == pytest.approx(0.02)
        data = master["/entry/data/data_000001"]
        assert data.dtype == np.uint32 and "32008" in data._filters  # bitshuffle-LZ4
    assert counts == [4, 4, 2]
    assert links["data_000002"].filename == "count_0001_data_000002.h5"
    assert links["data_000002"].path == "/entry/data/data"
    (resource,) = [d for n, d in docs if n == "stream_resource"]
    (datum,) = [d for n, d in docs if n == "stream_datum"]
    assert resource["uri"] == f"file://localhost{data_dir}/count_0001_master.h5"
    assert resource["mimetype"] == "application/x-hdf5;layout=dectris-links"
    assert resource["parameters"]["frames_per_file"] == 4
    assert datum["indices"] == {"start": 0, "stop": 10}
    frames = read_frames(resource, datum["indices"])
    assert frames.shape == (10, 541, 517) and frames.sum(axis=(1, 2)).min() > 0
    assert httpx.get(f"{base_url}/{API}/status/state").json()["value"] == "idle"


def test_fly_map_runs_over_http_one_series_per_line(RE, dcu):
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "map")
    with init_devices():
        stage_x = SimMotor(instant=False, units="um")
        stage_z = SimMotor(units="um")
    RE(bps.mv(stage_x.acceleration_time, 0.01))
    geometry = MapGeometry(
        z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=50.0, x_count=5, exposure_s=0.01
    )
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    result = RE(fly_map(eiger, stage_x, stage_z, geometry))
    assert result.exit_status == "success"
    resources = [d for n, d in docs if n == "stream_resource"]
    datums = [d for n, d in docs if n == "stream_datum"]
    assert [Path(urlparse(r["uri"]).path).name for r in resources] == [
        f"map_{k:04d}_master.h5" for k in (1, 2, 3)
    ]
    assert [d["seq_nums"] for d in datums] == [
        {"start": 1 + 5 * k, "stop": 6 + 5 * k} for k in range(3)
    ]
    for resource, datum in zip(resources, datums, strict=True):
        assert read_frames(resource, datum["indices"]).shape == (5, 541, 517)


def test_an_ints_series_is_armed_in_prepare_and_kickoff_only_triggers_it(RE, dcu):
    """Arming opens the series' files (0.1 s to seconds): in a fly line's kickoff, after
    the stage is at speed, it put the frames in the run-down. The kickoff bounds the start."""
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "armed")
    state = f"{base_url}/{API}/status/state"
    info = TriggerInfo(number_of_events=4, livetime=0.05)
    seen: dict[str, object] = {}

    @stage_decorator([eiger])
    @run_decorator()
    def plan():
        yield from bps.prepare(eiger, info, wait=True)
        yield from bps.prepare(eiger, info, wait=True)  # again, before the kickoff: kept
        seen["prepared"] = httpx.get(state).json()["value"]
        yield from bps.declare_stream(eiger, name="primary", collect=True)
        before_s = time.time()
        yield from bps.kickoff(eiger, wait=True)
        seen["bounds"] = (before_s, *eiger.series_start_window_s(), time.time())
        yield from bps.complete(eiger, wait=True)
        yield from bps.collect(eiger, name="primary")

    RE(plan())
    assert seen["prepared"] == "ready"  # armed by prepare, waiting for its trigger
    assert sorted(p.name for p in data_dir.glob("armed_*_master.h5")) == ["armed_0001_master.h5"]
    before_s, earliest_s, latest_s, after_s = seen["bounds"]
    assert before_s <= earliest_s <= latest_s <= after_s
    assert latest_s - earliest_s < 0.05 * 4  # well before the series could have ended


def test_external_series_is_fired_by_the_simulated_trigger_box(RE, dcu):
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "edge")
    info = TriggerInfo(trigger=DetectorTrigger.EXTERNAL_EDGE, number_of_events=3, livetime=0.02)
    RE(_series(eiger, info))
    with h5py.File(data_dir / "edge_0001_master.h5", "r") as master:
        assert master["/entry/data/data_000001"].shape == (3, 541, 517)


def test_detector_error_state_fails_with_a_clear_error(RE, dcu):
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "fault")
    httpx.put(f"{base_url}/opmap/api/1/fault", json={"value": "high voltage off"})
    try:
        with pytest.raises(FailedStatus) as excinfo:
            RE(bps.stage(eiger, wait=True))
    finally:
        initialize(base_url)
    err = excinfo.value.__cause__
    assert isinstance(err, SimplonError)
    assert str(err) == (
        f"eiger: {base_url}/{API}/status/state reports 'error': ['high voltage off']"
    )
    call_in_bluesky_event_loop(eiger.aclose())


def test_a_refused_value_names_the_endpoint_and_the_reason(RE, dcu):
    base_url, data_dir = dcu
    eiger = _eiger(RE, base_url, data_dir, "bad")

    async def put_negative() -> None:
        await eiger.driver.nimages.set(-1)

    with pytest.raises(SimplonError, match=r"eiger: PUT .*/config/nimages answered HTTP 400"):
        call_in_bluesky_event_loop(put_negative())


def test_sim_dcu_is_an_opmap_command():
    help_text = build_parser().format_help()
    assert "sim-dcu" in help_text


def test_abort_during_an_ints_trigger_ends_the_series_without_error(dcu):
    # a real DCU ends the series on abort; the exposure under way must not fault it later
    base_url, _ = dcu
    api = f"{base_url}/{API}"
    for key, value in [("trigger_mode", "ints"), ("count_time", 0.5), ("frame_time", 0.5)]:
        httpx.put(f"{api}/config/{key}", json={"value": value}, timeout=10).raise_for_status()
    for key, value in [("nimages", 40), ("ntrigger", 1)]:
        httpx.put(f"{api}/config/{key}", json={"value": value}, timeout=10).raise_for_status()
    httpx.put(f"{base_url}/filewriter/api/1.8.0/config/name_pattern", json={"value": "abort"})
    httpx.put(f"{api}/command/arm", timeout=30).raise_for_status()
    trigger = threading.Thread(
        target=lambda: httpx.put(f"{api}/command/trigger", timeout=60), daemon=True
    )
    trigger.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/status/state").json()["value"] != "acquire":
        assert time.monotonic() < deadline, "the trigger never started acquiring"
        time.sleep(0.05)
    httpx.put(f"{api}/command/abort", timeout=30).raise_for_status()
    trigger.join(timeout=30)
    time.sleep(12.0)  # past the simulated detector's 10 s wait for a frame
    state = httpx.get(f"{api}/status/state").json()["value"]
    errors = httpx.get(f"{api}/status/error").json()["value"]
    assert (state, errors) == ("idle", []), errors
