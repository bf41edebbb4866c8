"""The paper's front from x(z) of per-pixel c, flags for absent reflections, and coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from opmap.analysis.families import FamilyConfig
from opmap.analysis.fitting import fit_gaussian, peak_significance
from opmap.analysis.lattice import (
    PAPER_CALIBRATION,
    FrontFlag,
    PixelFlag,
    li_fraction_from_c,
    x_profile_front,
)
from opmap.analysis.pipeline import AnalysisParameters, ExperimentAnalysis, MapLayout, analyze_map
from opmap.analysis.reduction import ReducedFrames

FAMILIES = FamilyConfig.model_validate(
    {"family": [{"name": "perp", "azimuths_003_deg": [25, 160], "azimuths_110_deg": [90]}]}
)
Q003 = np.linspace(1.28, 1.38, 41)
Q110 = np.linspace(4.43, 4.52, 37)
Z_UM = np.arange(20.0)  # cathode rows, Pt at 0, LiPON at 20 µm
SPEED_NM_PER_S = -10.0
WIDTH_SIGMA_UM = 6.0 / 2.563  # the paper's 6 µm (10–90 %) interface


def c_from_x(x):
    """Invert the paper's biphasic line (14.03 Å at x = 1, 14.21 Å at x = 0.75)."""
    return 14.03 + (1.0 - x) * 0.18 / 0.25


def x_profile(z_um, front_um, x_rich=1.0, x_poor=0.8):
    """Li-rich below the front, Li-poor above (charge), an erf interface."""
    step = 0.5 * (1 + erf((z_um - front_um) / (np.sqrt(2) * WIDTH_SIGMA_UM)))
    return x_rich + (x_poor - x_rich) * step


def test_front_moving_at_a_known_speed_is_recovered_from_noisy_c_maps():
    rng = np.random.default_rng(7)
    time_s = np.arange(6) * 300.0
    front_um = 17.0 + SPEED_NM_PER_S * 1e-3 * time_s  # 17 → 2 µm
    x = x_profile(Z_UM[None, :, None], front_um[:, None, None])
    c = c_from_x(np.repeat(x, 40, axis=2)) + rng.normal(0, 0.003, (6, 20, 40))
    c[rng.random(c.shape) < 0.1] = np.nan  # pixels without a trusted fit
    res = x_profile_front(c, z_um=Z_UM, time_s=time_s)
    np.testing.assert_allclose(res.position_um, front_um, atol=0.3)
    np.testing.assert_allclose(res.width_um, 6.0, rtol=0.1)
    assert res.velocity_nm_per_s == pytest.approx(SPEED_NM_PER_S, rel=0.03)
    assert abs(res.velocity_nm_per_s - SPEED_NM_PER_S) < 3 * res.velocity_err_nm_per_s + 0.1
    assert res.used.all()
    # The plateaus are the two phases' c (fitted, not assumed), where both are in view
    np.testing.assert_allclose(res.c_below_angstrom[1:5], c_from_x(1.0), atol=2e-3)
    np.testing.assert_allclose(res.c_above_angstrom[1:5], c_from_x(0.8), atol=2e-3)


def test_no_front_in_a_flat_map_nor_for_a_step_below_the_minimum():
    time_s = np.array([0.0, 300.0, 600.0])
    rng = np.random.default_rng(1)
    flat = 14.1 + rng.normal(0, 0.003, (1, 20, 30))
    tiny = c_from_x(x_profile(Z_UM, 10.0, 1.0, 0.99))[None, :, None].repeat(30, 2)  # 0.007 Å
    clear = c_from_x(x_profile(Z_UM, 10.0))[None, :, None].repeat(30, 2)
    res = x_profile_front(np.concatenate([flat, tiny, clear]), z_um=Z_UM, time_s=time_s)
    assert np.isnan(res.position_um[:2]).all()
    assert res.position_um[2] == pytest.approx(10.0, abs=0.05)
    with pytest.raises(ValueError, match="min_step_angstrom"):
        x_profile_front(clear, z_um=Z_UM, time_s=time_s[:1], min_step_angstrom=0.0)
    with pytest.raises(ValueError, match="c_angstrom must be"):
        x_profile_front(clear[0], z_um=Z_UM, time_s=time_s[:1])


def profiles_003(c_per_frame, rng, noise=1.0):
    c = np.asarray(c_per_frame, float)
    peak = 400 * np.exp(-0.5 * ((Q003[None] - 6 * np.pi / c[:, None]) / 0.004) ** 2)
    return np.nan_to_num(peak) + 5.0 + rng.normal(0, noise, (c.size, Q003.size))


def reduced_map(layout, c_map, rng, profile_110=None):
    n = layout.n_frames
    c = np.empty(n)
    c[layout.frame_index()] = c_map
    if profile_110 is None:
        profile_110 = 300 * np.exp(-0.5 * ((Q110 - 4 * np.pi / 2.80) / 0.004) ** 2) + 3.0
        profile_110 = profile_110 + rng.normal(0, 1.0, (n, Q110.size))
    return ReducedFrames(
        profiles={"perp:003": profiles_003(c, rng), "perp:110": profile_110},
        profile_q={"perp:003": Q003, "perp:110": Q110},
        li_window=np.ones((n, 360, 10), np.float32),
        li_window_chi_deg=np.arange(360) + 0.5,
        li_window_q=np.linspace(2.531, 2.549, 10),
        bands={"ti_100": np.linspace(1, 2, n), "au_111": np.linspace(2, 1, n)},
    )


def test_pipeline_front_uses_the_paper_method_and_survives_li_rich_c_outside_calibration():
    # The Li-rich phase at c = 14.00 Å (the paper's), outside the calibration (x NaN there):
    # the front is still found, because it is located on the profile itself.
    rng = np.random.default_rng(11)
    layout = MapLayout(n_z=20, n_x=8, z_um=Z_UM, x_um=33.0 * np.arange(8))
    # synthetic profiles without Ti reference peaks: no distance correction
    params = AnalysisParameters(families=FAMILIES, distance_correction="off", ti_background="band")
    experiment = ExperimentAnalysis(layout, params)
    fronts = [np.nan, 17.0, 14.0, 11.0, 8.0, 5.0]  # pristine map first
    for index, front in enumerate(fronts):
        step = (
            0 * Z_UM if np.isnan(front) else 0.5 * (1 + erf((Z_UM - front) / (np.sqrt(2) * 2.34)))
        )
        c_map = np.repeat((14.00 + 0.13 * step)[:, None], 8, axis=1)
        result = analyze_map(reduced_map(layout, c_map, rng), layout, params, map_index=index,
                             time_s=300.0 * index)  # fmt: skip
        experiment.add_map(result)
    products = experiment.products()
    position = products.arrays["front_position"].values
    assert np.isnan(position[0])
    np.testing.assert_allclose(position[1:], fronts[1:], atol=0.3)
    assert products.metadata["front"]["speed_nm_per_s"] == pytest.approx(-10.0, rel=0.05)
    assert products.metadata["front"]["method"] == "x_profile"
    front_meta = products.metadata["front"]
    assert front_meta["speed_nm_per_s_by_family"]["perp"] == front_meta["speed_nm_per_s"]
    assert "paper" in products.metadata["front"]["method_description"]
    assert products.arrays["front_used"].values.tolist() == [0, 1, 1, 1, 1, 1]
    # the pristine map is a single Li-rich phase: no front, and the products say why
    assert products.arrays["front_flag"].values.tolist() == [FrontFlag.SINGLE_PHASE] + [0] * 5
    assert front_meta["flags"]["4"].startswith("SINGLE_PHASE")
    assert front_meta["rich_c_angstrom"] == pytest.approx(14.00, abs=3e-3)
    assert "rich_fraction" not in products.arrays  # the two-phase fit is opt-in
    flags = products.arrays["fit_flag_x_li_perp"].values
    rich = products.arrays["c_perp"].values < 14.03
    assert (flags[rich] == PixelFlag.OUT_OF_RANGE).all()
    assert np.isnan(products.arrays["x_li_perp"].values[rich]).all()
    x_profile_li = products.arrays["profile_x_li_perp"].values
    assert np.isnan(x_profile_li[0]).all()  # pristine: 14.00 Å is outside the calibration


def test_absent_reflection_is_nan_with_its_flag_and_coverage_counts_it():
    rng = np.random.default_rng(5)
    layout = MapLayout(n_z=4, n_x=5, z_um=np.arange(4.0) + 1.0, x_um=33.0 * np.arange(5))
    n = layout.n_frames
    a_peak = 300 * np.exp(-0.5 * ((Q110 - 4 * np.pi / 2.80) / 0.004) ** 2)
    # The neighbouring reflection's tail: a strong peak centred below the window (4.41 Å⁻¹).
    tail = 3000 * np.exp(-0.5 * ((Q110 - 4.41) / 0.008) ** 2)
    kinds = rng.permutation(np.repeat([0, 1, 2], [8, 6, 6]))  # real, noise only, tail only
    profile_110 = 3.0 + rng.normal(0, 1.0, (n, Q110.size))
    profile_110[kinds == 0] += a_peak
    profile_110[kinds == 2] += tail
    c_map = np.full((4, 5), 14.1)
    params = AnalysisParameters(
        families=FAMILIES,
        front_cathode_z_um=(0.5, 4.5),
        distance_correction="off",
        ti_background="band",
    )
    reduced = reduced_map(layout, c_map, rng, profile_110=profile_110)
    result = analyze_map(reduced, layout, params, map_index=0, time_s=0.0)
    kind_map = layout.to_map(kinds)
    a, flag = result.a_angstrom["perp"], result.flags["a_perp"]
    np.testing.assert_allclose(a[kind_map == 0], 2.80, atol=2e-4)
    assert (flag[kind_map == 0] == PixelFlag.OK).all()
    assert np.isnan(a[kind_map > 0]).all()
    assert (flag[kind_map > 0] == PixelFlag.ABSENT).all()
    experiment = ExperimentAnalysis(layout, params)
    experiment.add_map(result)
    products = experiment.products()
    assert products.arrays["coverage_a_perp"].values[0] == pytest.approx(8 / 20)
    assert products.arrays["coverage_c_perp"].values[0] == pytest.approx(1.0)
    assert products.arrays["fit_flag_a_perp"].values.dtype == np.uint8
    legend = products.metadata["pixel_flags"]
    assert legend[str(int(PixelFlag.ABSENT))].startswith("ABSENT")


def test_noise_only_profiles_rarely_pass_the_significance_test():
    rng = np.random.default_rng(2)
    noise = 50.0 + rng.normal(0, 3.0, (2000, Q003.size))
    sig, centred = peak_significance(noise, Q003, fit_gaussian(noise, Q003, min_snr=2.5))
    passed = np.nan_to_num(sig) >= 5.0
    assert (passed & centred).mean() < 0.01
    # A peak 8 noise σ high, σ_q = 4 mÅ⁻¹ (1.6 bins): core net ≈ 24·0.0100/0.0025·0.95 ≈ 91
    # counts against 3·√7 ≈ 7.9 of noise, ~11 σ.
    peak = noise[:200] + 24.0 * np.exp(-0.5 * ((Q003 - 1.33) / 0.004) ** 2)
    sig, centred = peak_significance(peak, Q003, fit_gaussian(peak, Q003, min_snr=2.5))
    assert ((sig >= 5.0) & centred).mean() > 0.99


def test_x_li_of_a_family_without_calibration_is_absent_unless_a_table_is_given():
    perp = {"name": "perp", "azimuths_003_deg": [160]}
    families = FamilyConfig.model_validate(
        {"family": [perp, {"name": "par", "azimuths_003_deg": [90]}]}
    )
    params = AnalysisParameters(families=families)
    assert params.li_calibration("perp") is PAPER_CALIBRATION
    assert params.li_calibration("par") is None
    table = {"par": {"c_angstrom": [14.0, 14.12], "x_li": [1.0, 0.5], "x_err": 0.02}}
    params = AnalysisParameters.model_validate({"families": families, "calibration": table})
    x, x_err = li_fraction_from_c(
        np.array([14.06, 14.2]), calibration=params.li_calibration("par")
    )
    assert x[0] == pytest.approx(0.75) and np.isnan(x[1])
    assert x_err[0] == pytest.approx(0.02 * np.sqrt(0.5))
    with pytest.raises(ValueError, match="paper_calibration_family"):
        AnalysisParameters(families=families, paper_calibration_family="tilted")


def test_a_front_scanned_row_by_row_is_dated_when_the_beam_crossed_it():
    """Rows are scanned bottom-up over 4 min while the front moves down at 10 nm/s: each row
    sees the front where it was at that row's scan time. Dated at mid-map, the positions
    follow t_mid + (z − z_mid)·(row period) instead, and the fitted speed comes out ~5 %
    slow; with the rows' times (``front_time``) the speed is recovered within 1 %."""
    rng = np.random.default_rng(5)
    layout = MapLayout(n_z=20, n_x=8, z_um=Z_UM, x_um=33.0 * np.arange(8))
    params = AnalysisParameters(families=FAMILIES, distance_correction="off", ti_background="band")
    row_period_s = 12.0  # 20 rows in 240 s
    dated, undated = ExperimentAnalysis(layout, params), ExperimentAnalysis(layout, params)
    for index in range(6):
        start_s = 300.0 * index
        row_time_s = start_s + row_period_s * (np.arange(20) + 0.5)
        front_at_row = 17.0 + SPEED_NM_PER_S * 1e-3 * (row_time_s - 120.0)
        step = 0.5 * (1 + erf((Z_UM - front_at_row) / (np.sqrt(2) * 2.34)))
        c_map = np.repeat((14.00 + 0.13 * step)[:, None], 8, axis=1)
        result = analyze_map(reduced_map(layout, c_map, rng), layout, params, map_index=index,
                             time_s=start_s + 120.0)  # fmt: skip
        dated.add_map(result, row_time_s=row_time_s)
        undated.add_map(result)
    products = dated.products()
    assert products.metadata["front"]["speed_nm_per_s"] == pytest.approx(SPEED_NM_PER_S, rel=0.01)
    slow = undated.products().metadata["front"]["speed_nm_per_s"]
    assert slow == pytest.approx(SPEED_NM_PER_S / (1 + 0.01 * row_period_s), rel=0.01)
    front_time = products.arrays["front_time"].values
    true_front = 17.0 + SPEED_NM_PER_S * 1e-3 * (front_time - 120.0)
    np.testing.assert_allclose(products.arrays["front_position"].values, true_front, atol=0.15)
    assert "front_time" not in undated.products().arrays
    with pytest.raises(ValueError, match="row_time_s must have shape"):
        dated.add_map(result, row_time_s=np.zeros(3))
