"""The opt-in (003) background between the spots: the other family's powder ring removed.

Each family's (003) sectors also hold the untextured (powder) part of the ring of every
family. At 4 × 4 binning the other family's powder ring, ~0.02 Å⁻¹ away, is smeared into
the sector profile and pulls the fitted peak. ``sector_background = "between_spots"``
subtracts the mean profile of the azimuths between all spots first.

Frames are the twin's noise-free expected counts in its cathode (its forward model, which
the analysis does not share) late in the charge, where the two families' c differ by
0.2 Å; the fitted c is compared with the twin's state of the LCO in the beam.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from pydantic import ValidationError

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters, MapLayout, analyze_map
from opmap.analysis.reduction import between_spots_sectors, compile_reduction

from ._twin_detector import twin_on_binned_eiger

#: The Eiger 4M read 4 × 4 binned (300 µm pixels), the rehearsal's default.
BINNING = 4
#: Late in the charge (c⊥ ≈ 14.32 Å, c∥ ≈ 14.12 Å), rows inside the twin's cathode.
TIME_S = 7732.0
CATHODE_Z_UM = (6.5, 12.5)
#: Stated accuracy of c⊥ from a noise-free frame with the background between the spots: the
#: perp ring's own sampling by 300 µm pixels (−0.0004 to −0.0015 Å with one family alone).
C_PERP_TOLERANCE_ANGSTROM = 0.0015
#: How low the paper's default reads c⊥ here at least (the other family's powder ring).
DEFAULT_PULL_ANGSTROM = 0.002

FAMILIES = FamilyConfig.model_validate({"family": [
    {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
    {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]},
]})  # fmt: skip


@pytest.fixture(scope="module")
def cathode_frames():
    """Noise-free 4 × 4-binned frames of two cathode rows, at the calibrated sample
    position, and the twin's c of each family in each (weight-averaged over its phases)."""
    twin, renderer, geometry, params = twin_on_binned_eiger(BINNING)
    frames, truth = [], {"perp": [], "par": []}
    for z_um in CATHODE_Z_UM:
        scene = twin.scene(z_um=z_um, x_start_um=983.5, x_stop_um=1016.5, time_s=TIME_S)
        assert scene.layer_weights.get("lco", 0.0) > 0.9, "the rows must lie in the cathode"
        scene = _at_calibrated_position(scene)
        frames.append(renderer.expected_counts(scene, exposure_s=5.0))
        for family in truth:
            phases = [p for p in scene.lco_phases if p.family == family]
            weights = np.array([p.weight for p in phases])
            truth[family].append(np.average([p.c_angstrom for p in phases], weights=weights))
    frames_array = np.stack(frames).astype(np.float32)
    return params, geometry, frames_array, {k: np.array(v) for k, v in truth.items()}


def _at_calibrated_position(scene):
    return dataclasses.replace(scene, sample_offset_um=0.0)


def _fitted_c(params: AnalysisParameters, geometry, frames) -> dict[str, np.ndarray]:
    reduced = compile_reduction(params.reduction_plan(), geometry).reduce(frames)
    layout = MapLayout(
        n_z=len(frames), n_x=1, z_um=np.array(CATHODE_Z_UM), x_um=np.array([1000.0])
    )
    result = analyze_map(reduced, layout, params, map_index=0, time_s=TIME_S)
    return {name: np.asarray(c)[:, 0] for name, c in result.c_angstrom.items()}


def test_between_spots_reads_perp_c_free_of_the_other_familys_powder_ring(cathode_frames):
    params, geometry, frames, truth = cathode_frames
    assert abs(truth["perp"].mean() - truth["par"].mean()) > 0.1, "families must differ in c"
    opt_in = params.model_copy(update={"sector_background": "between_spots"})
    fitted = _fitted_c(opt_in, geometry, frames)
    np.testing.assert_allclose(fitted["perp"], truth["perp"], atol=C_PERP_TOLERANCE_ANGSTROM)


def test_the_paper_default_is_pulled_by_the_other_familys_powder_ring(cathode_frames):
    """Why the option exists: with the Gaussian's linear background alone c⊥ reads low by
    about the rehearsal's c⊥ miss (0.003 Å)."""
    params, geometry, frames, truth = cathode_frames
    assert params.sector_background == "linear"
    fitted = _fitted_c(params, geometry, frames)
    error = fitted["perp"] - truth["perp"]
    assert np.all(error < -DEFAULT_PULL_ANGSTROM), error


def test_the_sectors_between_the_spots_leave_every_widened_spot_sector_out():
    guard = 5.0
    between = between_spots_sectors(FAMILIES, "003", guard)
    assert [(s.start_chi_deg, s.width_deg) for s in between] == [
        (0.0, 10.0), (40.0, 35.0), (105.0, 40.0), (175.0, 15.0), (220.0, 40.0), (290.0, 40.0)
    ]  # fmt: skip
    spot_azimuths = [25, 160, 205, 345, 90, 275]
    for sector in between:
        for chi in np.arange(sector.start_chi_deg, sector.start_chi_deg + sector.width_deg, 0.5):
            nearest = min(abs((chi - spot + 180) % 360 - 180) for spot in spot_azimuths)
            assert nearest >= 10.0 + guard
    covered = 6 * 2 * (10.0 + guard)
    assert sum(s.width_deg for s in between) == pytest.approx(360.0 - covered)


def test_a_wide_gap_is_split_into_sectors_of_at_most_180_degrees():
    one = FamilyConfig.model_validate({"family": [{"name": "only", "azimuths_003_deg": [90]}]})
    between = between_spots_sectors(one, "003", 0.0)
    assert [(s.start_chi_deg, s.width_deg) for s in between] == [
        (0.0, 80.0), (100.0, 130.0), (230.0, 130.0)
    ]  # fmt: skip


def test_a_guard_that_leaves_no_azimuth_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="between_spots_guard_deg"):
        AnalysisParameters(
            families=FAMILIES, sector_background="between_spots", between_spots_guard_deg=30.0
        )
    with pytest.raises(ValidationError, match="between_spots_guard_deg"):
        AnalysisParameters(families=FAMILIES, between_spots_guard_deg=-1.0)


def test_the_plan_holds_the_profile_between_the_spots_only_when_it_is_used():
    params = AnalysisParameters(families=FAMILIES)
    assert params.sector_background_key() is None
    assert not any("between" in name for name in params.reduction_plan().sector_profiles)
    opt_in = AnalysisParameters(families=FAMILIES, sector_background="between_spots")
    plan = opt_in.reduction_plan()
    key = opt_in.sector_background_key()
    assert key is not None and key.removeprefix("sectors:") in plan.sector_profiles
    profile = plan.sector_profiles[key.removeprefix("sectors:")]
    assert (profile.q_min_inv_angstrom, profile.n_q) == (
        plan.profile_003.q_min_inv_angstrom, plan.profile_003.n_q
    )  # fmt: skip


def test_a_piece_of_a_sector_without_pixels_raises_no_alarm(cathode_frames, caplog):
    """One piece of the twin detector's between-spots azimuths (175-180°) has no unmasked
    pixel; the sector it belongs to has, so nothing is wrong and nothing is said (pyFAI
    would say "Expect errors or non-sense results!")."""
    params, geometry, _, _ = cathode_frames
    opt_in = params.model_copy(update={"sector_background": "between_spots"})
    with caplog.at_level(logging.WARNING):
        compile_reduction(opt_in.reduction_plan(), geometry)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
