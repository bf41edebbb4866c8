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
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters
from opmap.callbacks.frames import FrameReader
from opmap.callbacks.live import COMMANDED_X_SOURCE, MEASURED_X_SOURCE, MapRunDocuments
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.devices.sim import SimClock, SimEiger, SimMapStage, metadata_from_integrator
from opmap.plans import fly_map

from ._live_rig import GEOMETRY, RE, SMALL_MAP, RingRenderer, _Scene  # noqa: F401

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
    clock = SimClock()
    with init_devices():
        stage = SimMapStage(clock, x_following_lag_s=lag_s)
        eiger = SimEiger(
            StaticPathProvider(UUIDFilenameProvider(), tmp_path),
            clock,
            _Scene(),
            RingRenderer(),
            stage.x,
            stage.z,
            GEOMETRY.shape,
            metadata_from_integrator(GEOMETRY.integrator),
        )
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
