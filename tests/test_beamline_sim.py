"""The simulated beamline built from configuration: calibration and a small map on the twin."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle-LZ4 reading)
import numpy as np
import pytest
from event_model import DocumentNames, schema_validators
from ophyd_async.core import init_devices

from opmap.analysis.geometry import save_poni
from opmap.beamline import BeamlineConfig, SimConfig, build_beamline
from opmap.callbacks.calibration import CalibrationCallback
from opmap.devices.sim import ClockMode
from opmap.plans import MapGeometry, calibrate, fly_map


@pytest.fixture
def beamline(RE, tmp_path):
    config = BeamlineConfig(data_dir=tmp_path / "data")
    with init_devices():
        built = build_beamline(config)
    return built


def _collect_valid(RE):
    docs = []

    def check(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        docs.append((name, doc))

    RE.subscribe(check)
    return docs


def test_calibration_from_a_1_mm_wrong_start_recovers_the_twin_geometry(RE, beamline, tmp_path):
    truth = beamline.integrator
    start = truth.__class__(
        dist=truth.dist + 0.001,
        poni1=truth.poni1 + 0.0003,
        poni2=truth.poni2 - 0.0003,
        detector=truth.detector,
        wavelength=truth.wavelength,
    )
    start_poni = save_poni(start, tmp_path / "start.poni")
    callback = CalibrationCallback(tmp_path / "poni")
    RE.subscribe(callback)
    docs = _collect_valid(RE)
    RE(calibrate(beamline.eiger, beamline.sample_changer, start_poni, calibrant="CeO2"))
    record = callback.latest
    assert record is not None, callback.records[-1].summary()
    assert record.result.geometry.distance_m == pytest.approx(truth.dist, abs=2e-4)
    assert record.result.geometry.poni1_m == pytest.approx(truth.poni1, abs=1e-4)
    assert record.poni_path.is_file()
    assert beamline.sample_changer.current.value == "cell"
    (start_doc,) = [d for n, d in docs if n == "start"]
    assert start_doc["calibrant"] == "CeO2"


def test_calibrate_rejects_an_unknown_calibrant_before_anything_moves(RE, beamline, tmp_path):
    poni = save_poni(beamline.integrator, tmp_path / "start.poni")
    docs = _collect_valid(RE)
    with pytest.raises(ValueError, match="calibrant='LaB7'"):
        RE(calibrate(beamline.eiger, beamline.sample_changer, poni, calibrant="LaB7"))
    assert docs == []
    assert beamline.sample_changer.current.value == "cell"


def test_small_fly_map_on_the_twin_writes_every_line_once(RE, beamline, tmp_path):
    geometry = MapGeometry(
        z_start_um=8.0, z_count=3, x_start_um=500.0, x_stop_um=830.0, x_count=10
    )
    docs = _collect_valid(RE)
    RE(fly_map(beamline.eiger, beamline.stage.x, beamline.stage.z, geometry))
    stop = [d for n, d in docs if n == "stop"][-1]
    assert stop["exit_status"] == "success"
    (resource,) = [d for n, d in docs if n == "stream_resource" and d["data_key"] == "eiger"]
    master = resource["uri"].removeprefix("file://localhost")
    with h5py.File(master, "r") as f:
        frames = f["/entry/data/data"][()]
    assert frames.shape == (30, *beamline.integrator.detector.shape)
    # inside the cathode (z = 8-10 µm) every frame carries LCO (003) counts
    assert np.all(frames.reshape(30, -1).astype(np.float64).sum(axis=1) > 0)
    lines = [d for n, d in docs if n == "event" and "line_index" in d["data"]]
    assert sorted(d["data"]["line_index"] for d in lines) == [0, 1, 2]


def test_a_weak_noisy_calibrant_frame_is_rejected_not_trusted(beamline):
    from opmap.analysis.calibration import calibrate_geometry as refine
    from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
    from opmap.twin.forward import render_calibrant

    ai = beamline.integrator
    weak = render_calibrant(ai, "CeO2", peak_counts=1000, rng=np.random.default_rng(1))
    start = DetectorGeometry(
        eiger4m_detector(binning=4),
        distance_m=ai.dist + 0.001,
        poni1_m=ai.poni1 + 3e-4,
        poni2_m=ai.poni2 - 3e-4,
    )
    result = refine(weak, start, strict=False)
    assert not result.accepted
    assert "count longer" in result.reason


def test_wall_clock_mode_times_the_devices_in_wall_time_and_the_cell_speedup_faster(RE, tmp_path):
    config = BeamlineConfig(
        data_dir=tmp_path / "data", sim=SimConfig(clock_mode="wall", speedup=20.0)
    )
    with init_devices():
        beamline = build_beamline(config)
    stage_clock = beamline.stage.x.clock
    assert stage_clock.mode == ClockMode.REAL_TIME
    assert beamline.clock is beamline.potentiostat.driver.clock  # the cell's clock, 20 x wall
    assert (beamline.clock.mode, beamline.clock.speedup) == (ClockMode.ACCELERATED, 20.0)
    geometry = MapGeometry(z_start_um=8.0, z_count=2, x_start_um=500.0, x_stop_um=632.0,
                           x_count=4)  # fmt: skip
    docs = _collect_valid(RE)
    RE(fly_map(beamline.eiger, beamline.stage.x, beamline.stage.z, geometry))
    (resource,) = [d for n, d in docs if n == "stream_resource" and d["data_key"] == "eiger"]
    master = resource["uri"].removeprefix("file://localhost")
    with h5py.File(master, "r") as f:
        frame_time_s = float(f["/entry/instrument/detector/frame_time"][()])
        times_s = f["/entry/opmap/time_s"][()]
    # the frames of one line are one frame time apart in wall time: 20 frame times of cell
    lines_s = times_s.reshape(2, 4)
    np.testing.assert_allclose(np.diff(lines_s, axis=1), 20.0 * frame_time_s, rtol=1e-6)
    # and the second line starts after the first line's frames and the z move between them
    assert lines_s[1, 0] - lines_s[0, -1] > 20.0 * frame_time_s
