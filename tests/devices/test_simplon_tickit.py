"""Conformance of the SIMPLON Eiger against tickit-devices' Eiger simulator (a subprocess).

tickit-devices is a SIMPLON simulation written by others: the device must configure it and
run series on it over real HTTP. Where tickit differs from the Dectris documentation, the
``test_tickit_differs_*`` tests pin the difference (docs/real-hardware.md lists them).
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
import httpx
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

from opmap.devices.simplon import SimplonEiger, SimplonError

from ._simplon_servers import API, initialize, tickit_eiger

pytestmark = pytest.mark.slow


@pytest.fixture
def tickit(tmp_path):
    with tickit_eiger(tmp_path) as base_url:
        yield base_url


@pytest.fixture
def eiger(RE, tickit, tmp_path):
    provider = StaticPathProvider(StaticFilenameProvider("scan"), tmp_path)
    with init_devices():
        eiger = SimplonEiger(tickit, provider)
    yield eiger
    call_in_bluesky_event_loop(eiger.aclose())


def _lines(eiger, n_lines: int, info: TriggerInfo):
    @stage_decorator([eiger])
    @run_decorator()
    def plan():
        for line in range(n_lines):
            yield from bps.prepare(eiger, info, wait=True)
            if line == 0:
                yield from bps.declare_stream(eiger, name="primary", collect=True)
            yield from bps.kickoff(eiger, wait=True)
            yield from bps.complete(eiger, wait=True)
            yield from bps.collect(eiger, name="primary")

    return plan()


def _get(base: str, path: str):
    return httpx.get(f"{base}/{path}", timeout=5.0).json()["value"]


def test_ints_series_on_tickit_configure_it_and_give_one_resource_per_arm(RE, tickit, eiger):
    initialize(tickit)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(_lines(eiger, 2, TriggerInfo(number_of_events=4, livetime=0.01)))
    assert _get(tickit, f"{API}/config/trigger_mode") == "ints"
    assert _get(tickit, f"{API}/config/nimages") == 4
    assert _get(tickit, f"{API}/config/ntrigger") == 1
    assert _get(tickit, f"{API}/config/count_time") == pytest.approx(0.01)
    # frame_time = count_time + the detector's own detector_readout_time (0.01 s in tickit)
    assert _get(tickit, f"{API}/config/frame_time") == pytest.approx(0.02)
    assert _get(tickit, "filewriter/api/1.8.0/config/name_pattern") == "scan_0002"
    assert _get(tickit, "filewriter/api/1.8.0/config/nimages_per_file") == 1000
    assert _get(tickit, f"{API}/status/state") == "idle"
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    key = descriptor["data_keys"]["eiger"]
    assert key["shape"] == [1, 4362, 4148]  # one frame per event, y_pixels x x_pixels (16M)
    assert key["dtype_numpy"] == "<u2"  # bit_depth_image 16
    resources = [d for n, d in docs if n == "stream_resource"]
    assert [r["uri"].rsplit("/", 1)[1] for r in resources] == [
        "scan_0001_master.h5",
        "scan_0002_master.h5",
    ]
    assert resources[0]["parameters"]["link_template"] == "/entry/data/data_{:06d}"
    datums = [d for n, d in docs if n == "stream_datum"]
    assert [(d["indices"], d["seq_nums"]) for d in datums] == [
        ({"start": 0, "stop": 4}, {"start": 1, "stop": 5}),
        ({"start": 0, "stop": 4}, {"start": 5, "stop": 9}),
    ]
    assert [d["stream_resource"] for d in datums] == [r["uid"] for r in resources]


@pytest.mark.parametrize(
    ("trigger", "mode"),
    [(DetectorTrigger.EXTERNAL_EDGE, "exts"), (DetectorTrigger.EXTERNAL_LEVEL, "exte")],
)
def test_external_trigger_modes_set_one_image_per_trigger(RE, tickit, eiger, trigger, mode):
    initialize(tickit)
    info = TriggerInfo(trigger=trigger, number_of_events=7, livetime=0.02)

    def plan():
        yield from bps.stage(eiger, wait=True)
        yield from bps.prepare(eiger, info, wait=True)  # arms: the detector awaits triggers
        yield from bps.unstage(eiger, wait=True)

    RE(plan())
    assert _get(tickit, f"{API}/config/trigger_mode") == mode
    assert (_get(tickit, f"{API}/config/nimages"), _get(tickit, f"{API}/config/ntrigger")) == (
        1,
        7,
    )
    assert _get(tickit, f"{API}/status/state") == "idle"  # disarmed by unstage


def test_a_detector_not_initialized_is_refused_naming_device_and_endpoint(RE, tickit, eiger):
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.stage(eiger, wait=True))
    err = excinfo.value.__cause__
    assert isinstance(err, SimplonError)
    assert "eiger: the detector state is 'na' (not initialized)" in str(err)
    assert f"{tickit}/{API}/command/initialize" in str(err)


def test_a_missing_endpoint_fails_with_the_url_and_status(RE, tickit, eiger):
    pattern = r"eiger: GET .*/filewriter/api/1.8.0/config/compression answered HTTP 404"
    with pytest.raises(SimplonError, match=pattern):
        call_in_bluesky_event_loop(eiger.client.get("filewriter", "config", "compression"))


def test_tickit_differs_from_dectris_in_validation_version_and_files(tickit):
    initialize(tickit)
    put = httpx.put(f"{tickit}/{API}/config/trigger_mode", json={"value": "bogus"}, timeout=5)
    assert put.status_code == 200  # a DCU refuses a value outside allowed_values
    assert httpx.get(f"{tickit}/detector/api/version/", timeout=5).status_code == 404
    fw = "filewriter/api/1.8.0"
    assert httpx.get(f"{tickit}/{fw}/config/compression", timeout=5).status_code == 404
    assert _get(tickit, f"{fw}/config/compression_enabled") is False
    assert _get(tickit, f"{fw}/status/files") == []  # it writes no files
    ro = httpx.put(f"{tickit}/{API}/config/x_pixel_size", json={"value": 1.0}, timeout=5)
    assert ro.status_code == 200  # read-only parameters are writable in tickit
