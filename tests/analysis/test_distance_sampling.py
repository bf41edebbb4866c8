"""The distance correction's reference peak on binned pixels: measured off the pixel axes.

Frames are the twin's noise-free expected counts in its Ti layer (its forward model, which
the analysis does not share), with the sample where the twin puts it along the beam. The
sample offset the analysis reads from the Ti (100) peak is compared with the twin's state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from opmap.analysis.distance import REFERENCE_D_ANGSTROM, distance_scale, sample_offset_um
from opmap.analysis.fitting import fit_gaussian
from opmap.analysis.pipeline import AnalysisParameters
from opmap.analysis.reduction import compile_reduction, off_pixel_axes_sectors

from ._twin_detector import twin_on_binned_eiger

#: The Eiger 4M read 4 × 4 binned (300 µm pixels), the rehearsal's default.
BINNING = 4
#: A row in the middle of the twin's Ti layer, early in the charge.
TI_Z_UM, TIME_S = 24.5, 100.0
#: Stated accuracy of the sample offset from one noise-free pixel (µm; 10 µm is 0.0014 Å in c).
OFFSET_TOLERANCE_UM = 5.0


@pytest.fixture(scope="module")
def ti_frames():
    """Noise-free 4 × 4-binned frames of the Ti layer: on the calibrated position and at the
    twin's own offset along the beam, with that offset (µm)."""
    twin, renderer, geometry, params = twin_on_binned_eiger(BINNING)
    scene = twin.scene(z_um=TI_Z_UM, x_start_um=983.5, x_stop_um=1016.5, time_s=TIME_S)
    assert scene.layer_weights.get("ti", 0.0) > 0.3, "the row must lie in the twin's Ti"
    offsets = (0.0, scene.sample_offset_um)
    frames = np.stack([
        renderer.expected_counts(dataclasses.replace(scene, sample_offset_um=o), exposure_s=5.0)
        for o in offsets
    ]).astype(np.float32)  # fmt: skip
    return params, geometry, frames, np.array(offsets)


def _fitted_offsets_um(params: AnalysisParameters, geometry, frames) -> np.ndarray:
    reduced = compile_reduction(params.reduction_plan(), geometry).reduce(frames)
    key = params.distance_profile_key("ti_100")
    fit = fit_gaussian(reduced.profiles[key], reduced.profile_q[key], min_snr=3.0)
    q_true = 2 * np.pi / REFERENCE_D_ANGSTROM["ti_100"]
    scale = distance_scale(fit.position_q, q_true, wavelength_angstrom=params.wavelength_angstrom)
    return sample_offset_um(scale, distance_m=geometry.integrator.dist)


def test_the_default_reads_the_sample_offset_off_the_pixel_axes(ti_frames):
    params, geometry, frames, truth_um = ti_frames
    assert params.distance_azimuths == "off_pixel_axes"
    fitted = _fitted_offsets_um(params, geometry, frames)
    np.testing.assert_allclose(fitted, truth_um, atol=OFFSET_TOLERANCE_UM)


def test_the_full_ring_on_binned_pixels_is_pulled_by_the_spot_on_the_pixel_rows(ti_frames):
    """Why the default changed: the whole ring is dominated by the Ti (100) spot at 90°,
    whose pixels all see it at one radial phase (tens of µm off on 300 µm pixels)."""
    params, geometry, frames, truth_um = ti_frames
    full_ring = params.model_copy(update={"distance_azimuths": "full_ring"})
    fitted = _fitted_offsets_um(full_ring, geometry, frames)
    assert np.abs(fitted - truth_um).max() > 3 * OFFSET_TOLERANCE_UM


def test_the_sectors_leave_out_a_wedge_around_each_axis():
    sectors = off_pixel_axes_sectors(15.0)
    assert [(s.start_chi_deg, s.width_deg) for s in sectors] == [
        (15.0, 60.0), (105.0, 60.0), (195.0, 60.0), (285.0, 60.0)
    ]  # fmt: skip
    for axis in (0.0, 90.0, 180.0, 270.0, 359.0, 14.9):
        assert not any(s.contains(axis) for s in sectors)
    for oblique in (15.0, 45.0, 135.0, 200.0, 344.9):
        assert any(s.contains(oblique) for s in sectors)


@pytest.mark.parametrize("margin", [0.0, -5.0, 45.0, 60.0])
def test_a_margin_outside_zero_to_45_degrees_is_refused(margin, twin_free_families):
    with pytest.raises(ValueError, match="distance_axis_margin_deg"):
        AnalysisParameters(families=twin_free_families, distance_axis_margin_deg=margin)
    with pytest.raises(ValueError, match="margin_deg"):
        off_pixel_axes_sectors(margin)


def test_the_plan_holds_the_sector_profile_only_where_it_is_used(twin_free_families):
    default = AnalysisParameters(families=twin_free_families).reduction_plan()
    assert list(default.sector_profiles) == ["distance_ti_100"]
    assert "ti_100" in default.reference_profiles  # the Ti band's own full ring stays
    for update in ({"distance_azimuths": "full_ring"}, {"distance_correction": "off"}):
        params = AnalysisParameters(families=twin_free_families, **update)
        assert params.reduction_plan().sector_profiles == {}


@pytest.fixture
def twin_free_families():
    """Two orientation families, written out (not the twin's)."""
    return {"family": [
        {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
        {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]},
    ]}  # fmt: skip
