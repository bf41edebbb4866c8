"""Live frames over the Dectris stream v2 of ``opmap sim-dcu`` (a process), files as the record.

The SIMPLON Eiger takes series over HTTP; the DCU writes its files and pushes the same
compressed chunks as CBOR over ZeroMQ. `StreamFrameSource` pulls them; the stream resource
names the series (the ``sequence id`` of ``arm``), and `reduce_datum_rows` takes each
announced row from the stream, or from the files where the stream has a gap.
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
import httpx
import numpy as np
import pytest
from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, TriggerInfo, init_devices
from ophyd_async.sim import SimMotor

from opmap.analysis.geometry import DetectorGeometry, eiger4m_integrator
from opmap.analysis.pipeline import ExperimentAnalysis, analyze_map
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.frames import FrameReader
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis, layout_from_start
from opmap.callbacks.stream_frames import StreamFrameSource, reduce_datum_rows
from opmap.devices.simplon import SimplonEiger
from opmap.plans import MapGeometry, fly_map

from .callbacks.test_live_analysis import PARAMS
from .devices._simplon_servers import free_port, initialize, sim_dcu
from .test_sim_dcu import _eiger, _series, read_frames
from .test_simplon_links import frames_through_links

pytestmark = pytest.mark.slow

STREAM_API = "stream/api/1.8.0"


def _flat(frames: np.ndarray) -> np.ndarray:
    """A 'reduction' that keeps every pixel, so equality is bit for bit."""
    return np.asarray(frames).reshape(len(frames), -1)


@pytest.fixture(scope="module")
def streaming_dcu(tmp_path_factory):
    data_dir, port = tmp_path_factory.mktemp("dcu-stream"), free_port()
    with sim_dcu(data_dir, "--stream-port", str(port)) as base_url:
        initialize(base_url)
        mode = f"{base_url}/{STREAM_API}/config/mode"
        httpx.put(mode, json={"value": "enabled"}, timeout=10).raise_for_status()
        with StreamFrameSource(f"tcp://127.0.0.1:{port}", series_wait_s=10.0) as source:
            yield base_url, data_dir, source


def _take_series(RE, base_url, data_dir, stem, n_frames):
    eiger = _eiger(RE, base_url, data_dir, stem, per_file=2)
    docs = []
    info = TriggerInfo(number_of_events=n_frames, livetime=0.01)
    RE(_series(eiger, info), lambda n, d: docs.append((n, d)))
    reader = FrameReader()
    rows = []
    for name, doc in docs:
        reader(name, doc) if name != "stream_datum" else rows.append(reader.locate(doc))
    resource = next(d for n, d in docs if n == "stream_resource")
    datum = next(d for n, d in docs if n == "stream_datum")
    return reader, rows, read_frames(resource, datum["indices"])


def test_stream_frames_equal_the_files_bit_for_bit(RE, streaming_dcu):
    base_url, data_dir, source = streaming_dcu
    source.reduce_with(None)  # frames kept whole, reduced when claimed
    before = (source.from_stream, source.from_files)
    reader, rows, in_files = _take_series(RE, base_url, data_dir, "whole", 5)
    assert len(rows) == 1 and rows[0].series_id is not None
    indices, flat = reduce_datum_rows(rows[0], reader, source, _flat)
    np.testing.assert_array_equal(indices, np.arange(5))
    np.testing.assert_array_equal(flat, _flat(in_files))
    assert flat.dtype == np.uint32
    assert (source.from_stream - before[0], source.from_files - before[1]) == (5, 0)
    assert source.errors == []


def test_a_gap_in_the_stream_is_read_from_the_files_and_nothing_counts_twice(RE, streaming_dcu):
    base_url, data_dir, source = streaming_dcu
    source.reduce_with(_flat)  # reduced on the decoding threads as they arrive
    drop = httpx.put(f"{base_url}/opmap/api/1/stream_drop", json={"value": 2}, timeout=10)
    drop.raise_for_status()
    before = (source.from_stream, source.from_files)
    reader, rows, in_files = _take_series(RE, base_url, data_dir, "gap", 6)
    indices, flat = reduce_datum_rows(rows[0], reader, source, _flat)
    np.testing.assert_array_equal(indices, np.arange(6))
    np.testing.assert_array_equal(flat, _flat(in_files))
    assert (source.from_stream - before[0], source.from_files - before[1]) == (4, 2)
    # claimed rows are gone: a second claim finds nothing in the stream
    assert source.take(rows[0].series_id, range(6)) == {}
    assert source.late == 0


def test_stream_mode_is_validated_and_off_by_default(streaming_dcu, tmp_path):
    base_url, _, _ = streaming_dcu
    bad = httpx.put(f"{base_url}/{STREAM_API}/config/mode", json={"value": "on"}, timeout=10)
    assert bad.status_code == 400 and "mode" in bad.text
    with sim_dcu(tmp_path) as fresh:
        reply = httpx.get(f"{fresh}/{STREAM_API}/config/mode", timeout=10).json()
        assert reply["value"] == "disabled"
        no_stream = httpx.put(f"{fresh}/opmap/api/1/stream_drop", json={"value": 1}, timeout=10)
        assert no_stream.status_code == 400


def test_live_analysis_on_the_stream_computes_the_map_of_the_files(RE, streaming_dcu):
    base_url, data_dir, source = streaming_dcu
    geometry_3x5 = MapGeometry(
        z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=50.0, x_count=5, exposure_s=0.01
    )
    # the device itself enables the DCU's stream (stream_v2=True)
    mode = f"{base_url}/{STREAM_API}/config/mode"
    httpx.put(mode, json={"value": "disabled"}, timeout=10).raise_for_status()
    provider = StaticPathProvider(StaticFilenameProvider("live"), data_dir)
    with init_devices():
        eiger = SimplonEiger(base_url, provider, frames_per_file=4, stream_v2=True)
        stage_x = SimMotor(instant=False, units="um")
        stage_z = SimMotor(units="um")
    RE(bps.mv(stage_x.acceleration_time, 0.01))
    geometry = DetectorGeometry.from_integrator(eiger4m_integrator(binning=4))
    live = LiveAnalysis(PARAMS, geometry, frame_stream=source)
    guard, starts = GuardedCallback(live), []
    RE.subscribe(guard)
    RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    drop = httpx.put(f"{base_url}/opmap/api/1/stream_drop", json={"value": 3}, timeout=10)
    drop.raise_for_status()
    before = (source.from_stream, source.from_files)
    md = {"experiment_id": "streamed", "map_index": 0}
    assert RE(fly_map(eiger, stage_x, stage_z, geometry_3x5, md=md)).exit_status == "success"
    live.finish()

    # 15 frames: the 3 the stream lost (first line) from the files, 12 from the stream
    assert (source.from_stream - before[0], source.from_files - before[1]) == (12, 3)
    assert guard.total_failures == 0 and live.failures == 0 and live.maps_analysed == 1
    assert httpx.get(mode, timeout=10).json()["value"] == "enabled"
    masters = [data_dir / f"live_{k:04d}_master.h5" for k in (1, 2, 3)]
    expected = np.concatenate([frames_through_links(m) for m in masters])
    layout = layout_from_start(starts[0])
    stored = live.experiments["streamed"].products()
    offline = ExperimentAnalysis(layout, PARAMS)
    reduction = compile_reduction(PARAMS.reduction_plan(), geometry)
    time_s = float(stored.arrays["time_s"].values[0])
    reduced = reduction.reduce(expected)
    offline.add_map(analyze_map(reduced, layout, PARAMS, map_index=0, time_s=time_s))
    compared = [n for n, a in offline.products().arrays.items() if a.dims[:1] == ("map",)]
    assert "c_perp" in compared
    for name in compared:
        np.testing.assert_allclose(
            stored.arrays[name].values,
            offline.products().arrays[name].values,
            rtol=1e-6,
            equal_nan=True,
            err_msg=name,
        )
