"""Each fly-line frame's x is the stage's measured position, stored in the run.

The simulated stage's readback is recorded during every line and interpolated at each
frame's mid-exposure; the simulated Eiger writes where the beam truly was during each
exposure (``/entry/opmap/x_um``, from the axis's trajectory). With a following lag the
stage runs behind its commanded trajectory: the measured x follows the truth, not the grid.
"""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters
from opmap.callbacks.frames import FrameReader
from opmap.callbacks.live import (
    COMMANDED_LINES_NOTE,
    COMMANDED_X_SOURCE,
    MEASURED_X_SOURCE,
    MapRunDocuments,
)
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.plans import fly_map, frame_positions_um

from ._live_rig import GEOMETRY, RE, SMALL_MAP, build_rig  # noqa: F401

#: Agreement of the interpolated readback with the true position (µm). The readback is
#: sampled every 0.1 s and interpolated linearly: exact where the axis cruises, up to the
#: detector dead time the plan neglects (100 ns per frame: 6.6e-5 µm per frame at 660 µm/s).
CRUISE_TOLERANCE_UM = 1e-3
#: A lagging axis is still accelerating when the detector starts (its commanded trajectory
#: is at speed): between the two readbacks around the end of its ramp the linear
#: interpolation misses the kink (0.083 µm here for the first two frames of a line, of
#: 33 µm frames).
RAMP_TOLERANCE_UM = 0.1


def _fly(engine, tmp_path, lag_s):
    stage, eiger = build_rig(tmp_path, x_following_lag_s=lag_s)
    docs: list[tuple[str, dict]] = []
    engine(fly_map(eiger, stage.x, stage.z, SMALL_MAP), lambda name, doc: docs.append((name, doc)))
    lines = [d for n, d in docs if n == "event" and "line_x_measured_um" in d["data"]]
    (master,) = tmp_path.glob("*_master.h5")
    with h5py.File(master, "r") as f:
        true_x_um = f["/entry/opmap/x_um"][()]
    measured = np.concatenate([line["data"]["line_x_measured_um"] for line in lines])
    commanded = np.concatenate([line["data"]["line_x_um"] for line in lines])
    return measured, commanded, true_x_um, docs


@pytest.mark.parametrize("lag_s", [0.0, 0.01], ids=["no-lag", "10ms-lag"])
def test_stored_frame_x_is_the_stage_position_at_mid_exposure(RE, tmp_path, lag_s):  # noqa: F811
    measured, commanded, true_x_um, _ = _fly(RE, tmp_path, lag_s)
    n_z, n_x = SMALL_MAP.z_count, SMALL_MAP.x_count
    assert measured.shape == true_x_um.shape == (n_z * n_x,)
    np.testing.assert_allclose(measured, true_x_um, rtol=0, atol=RAMP_TOLERANCE_UM)
    cruise = np.tile(np.arange(n_x) >= 2, n_z)  # past the end of any ramp
    np.testing.assert_allclose(
        measured[cruise], true_x_um[cruise], rtol=0, atol=CRUISE_TOLERANCE_UM
    )
    # the lag puts the frames v * lag behind the grid, in the direction of flight
    direction = np.repeat([-1.0 if SMALL_MAP.snake and k % 2 else 1.0 for k in range(n_z)], n_x)
    offset_um = direction * SMALL_MAP.x_velocity_um_per_s * lag_s
    np.testing.assert_allclose(
        (commanded - measured)[cruise], offset_um[cruise], rtol=0, atol=CRUISE_TOLERANCE_UM
    )
    if lag_s:
        assert np.all(np.abs(commanded - measured) > 0.9 * np.abs(offset_um))


def _without_measured_x(docs):
    """The documents of a run recorded before opmap stored the measured x."""
    for name, doc in docs:
        if name == "descriptor" and doc["name"] == "lines":
            keys = {k: v for k, v in doc["data_keys"].items() if k != "line_x_measured_um"}
            doc = {**doc, "data_keys": keys}
        elif name == "event" and "line_x_measured_um" in doc["data"]:
            data = {k: v for k, v in doc["data"].items() if k != "line_x_measured_um"}
            doc = {**doc, "data": data}
        yield name, doc


def test_the_map_x_is_the_measured_x_with_the_commanded_grid_as_labelled_fallback(
    RE,  # noqa: F811
    tmp_path,
):
    lag_s = 0.01
    _, _, true_x_um, docs = _fly(RE, tmp_path, lag_s)
    start = docs[0][1]
    column_truth_um = true_x_um.reshape(SMALL_MAP.z_count, SMALL_MAP.x_count).mean(axis=0)
    measured = MapRunDocuments(start, FrameReader()).follow(docs)
    assert measured.x_source == MEASURED_X_SOURCE
    np.testing.assert_allclose(measured.layout.x_um, column_truth_um, atol=RAMP_TOLERANCE_UM)
    commanded = np.asarray(SMALL_MAP.x_centres_um())
    lag_um = SMALL_MAP.x_velocity_um_per_s * lag_s
    assert np.all(commanded - measured.layout.x_um > 0.9 * lag_um)
    older = MapRunDocuments(start, FrameReader()).follow(_without_measured_x(docs))
    assert older.x_source == COMMANDED_X_SOURCE
    np.testing.assert_array_equal(older.layout.x_um, commanded)

    # the live analysis puts the products on the measured x and says so
    families = FamilyConfig.model_validate(
        {"family": [{"name": "perp", "azimuths_003_deg": [25, 160], "azimuths_110_deg": [90]}]}
    )
    products = []
    live = LiveAnalysis(
        AnalysisParameters(families=families),
        GEOMETRY,
        on_map=[lambda p, _: products.append(p)],
    )
    for name, doc in docs:
        live(name, doc)
    live.finish()
    assert live.failures == 0 and len(products) == 1
    np.testing.assert_array_equal(products[0].coords["x"].values, measured.layout.x_um)
    assert products[0].metadata["x_source"] == MEASURED_X_SOURCE


def _with_line_measured_x(docs, line_index, x_um):
    """The documents with line ``line_index``'s stored measured x replaced by ``x_um``."""
    for name, doc in docs:
        data = doc.get("data", {}) if name == "event" else {}
        if data.get("line_index") == line_index and "line_x_measured_um" in data:
            doc = {**doc, "data": {**data, "line_x_measured_um": np.asarray(x_um, float)}}
        yield name, doc


def test_a_line_without_a_trusted_measured_x_counts_with_its_commanded_grid_and_is_named(
    RE,  # noqa: F811
    tmp_path,
):
    _, _, true_x_um, docs = _fly(RE, tmp_path, 0.01)
    start = docs[0][1]
    n_z, n_x = SMALL_MAP.z_count, SMALL_MAP.x_count
    commanded = np.asarray(SMALL_MAP.x_centres_um())
    nan_line = list(_with_line_measured_x(docs, 1, np.full(n_x, np.nan)))
    # a readback that went backwards along the flight is not a position of these frames
    backwards = list(_with_line_measured_x(docs, 1, np.full(n_x, 100.0)))
    truth = np.sort(true_x_um.reshape(n_z, n_x), axis=1)  # increasing x (snake or not)
    for edited in (nan_line, backwards):
        run = MapRunDocuments(start, FrameReader()).follow(edited)
        assert run.x_source == MEASURED_X_SOURCE + COMMANDED_LINES_NOTE.format(lines=[1])
        expected = np.mean([truth[0], commanded, *truth[2:]], axis=0)
        np.testing.assert_allclose(run.layout.x_um, expected, atol=RAMP_TOLERANCE_UM)
    no_line = docs
    for line in range(n_z):
        no_line = list(_with_line_measured_x(no_line, line, np.full(n_x, np.nan)))
    run = MapRunDocuments(start, FrameReader()).follow(no_line)
    assert run.x_source == COMMANDED_X_SOURCE
    np.testing.assert_array_equal(run.layout.x_um, commanded)


def test_frames_outside_the_sampled_interval_have_no_measured_x():
    samples = np.array([[0.0, 0.0], [1.0, 100.0], [2.0, 200.0]])
    inside = frame_positions_um(samples, 0.0, 4, 0.5, 0.5)  # exposures [0, 2] s
    np.testing.assert_allclose(inside, [25.0, 75.0, 125.0, 175.0])
    # the last exposure ends 10 ms after the last sample: its mid-exposure is inside, but
    # the readback does not cover the whole line: no frame of it is measured
    assert np.isnan(frame_positions_um(samples, 0.01, 4, 0.5, 0.5)).all()
    assert np.isnan(frame_positions_um(samples, -0.01, 4, 0.5, 0.5)).all()  # starts before
    assert np.isnan(frame_positions_um(np.empty((0, 2)), 0.0, 4, 0.5, 0.5)).all()
    assert np.isnan(frame_positions_um(samples, float("nan"), 4, 0.5, 0.5)).all()
