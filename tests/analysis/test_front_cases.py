"""The paper's x(z) front on known cases: near the Pt edge, during discharge, single phase."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from opmap.analysis.lattice import FrontFlag, front_flag_legend, x_profile_front

Z_UM = np.arange(21.0)  # cathode rows: Pt at 0, LiPON at 20 µm (both edges half-filled)
N_X = 25
C_RICH, C_POOR = 14.00, 14.13  # the two phases' c (Å)
SIGMA_UM = 6.0 / 2.563  # the paper's 6 µm (10–90 %) interface
NOISE_ANGSTROM = 0.003


def c_map(front_um: float, rng, *, rich_below: bool = True, poor: float = C_POOR) -> np.ndarray:
    """(n_z, n_x) per-pixel c with a front at ``front_um`` (NaN: a single Li-poor phase)."""
    if np.isnan(front_um):
        profile = np.full(Z_UM.size, poor)
    else:
        s = 0.5 * (1 + erf((Z_UM - front_um) / (np.sqrt(2) * SIGMA_UM)))
        share_poor = s if rich_below else 1 - s
        profile = C_RICH + (poor - C_RICH) * share_poor
    return profile[:, None] + rng.normal(0, NOISE_ANGSTROM, (Z_UM.size, N_X))


def series(fronts, rng, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    maps = np.stack([c_map(f, rng, **kwargs) for f in fronts])
    return maps, 300.0 * np.arange(len(fronts))


def test_front_near_the_pt_edge_is_found_against_the_li_rich_c_of_the_series():
    # Charge at -10 nm/s: the last front sits 1.6 µm above the Pt, its Li-rich plateau out of
    # view (the free two-plateau fit cannot place it); the Li-rich c comes from the maps
    # that show both phases.
    rng = np.random.default_rng(3)
    fronts = [16.6, 13.6, 10.6, 7.6, 4.6, 1.6]
    maps, t = series(fronts, rng)
    res = x_profile_front(maps, z_um=Z_UM, time_s=t)
    np.testing.assert_allclose(res.position_um, fronts, atol=0.25)
    assert res.flag.tolist() == [FrontFlag.OK] * 6
    assert res.rich_c_angstrom == pytest.approx(C_RICH, abs=2e-3)
    assert res.velocity_nm_per_s == pytest.approx(-10.0, rel=0.03)
    assert res.used.all()


def test_discharge_front_with_the_li_rich_phase_above_near_the_electrolyte():
    # Discharge: the Li-rich phase (14.00 Å) grows from the electrolyte side (z = 20 µm) into
    # a Li-poor phase whose c rises from 14.13 Å at the boundary to 14.19 Å at the Pt (out of
    # equilibrium). The true front, where the Li-rich share is one half (lever rule with the
    # local Li-poor c), is at 18.5 µm; no row shows the Li-rich plateau. The free fit's
    # "plateau" (14.19 Å, far from the boundary) would put it ~0.6 µm lower; the two phases'
    # c at the boundary come from the series' charge maps.
    rng = np.random.default_rng(4)
    charge, t = series([15.0, 10.0, 5.0], rng)
    share_rich = 0.5 * (1 + erf((Z_UM - 18.5) / (np.sqrt(2) * SIGMA_UM)))
    poor_local = 14.19 - 0.06 * np.clip(Z_UM / 18.5, 0, 1)
    profile = share_rich * C_RICH + (1 - share_rich) * poor_local
    discharge = profile[:, None] + rng.normal(0, NOISE_ANGSTROM, (Z_UM.size, N_X))
    res = x_profile_front(np.concatenate([charge, discharge[None]]), z_um=Z_UM,
                          time_s=np.append(t, 14700.0))  # fmt: skip
    assert res.position_um[3] == pytest.approx(18.5, abs=0.2)
    assert res.flag[3] == FrontFlag.OK
    assert res.c_above_angstrom[3] == pytest.approx(C_RICH, abs=3e-3)  # the Li-rich phase
    assert res.c_below_angstrom[3] == pytest.approx(C_POOR, abs=3e-3)  # Li-poor at the boundary
    assert res.used.tolist() == [True, True, True, False]  # not part of the charge's speed


def test_single_phase_gradient_is_no_front_but_nan_with_its_reason():
    # A c gradient of 0.055 Å inside the Li-poor phase (14.11 -> 14.165 Å: a solid solution
    # during discharge) passes the step criteria of a free fit but never comes halfway to
    # the Li-rich c: no two-phase boundary.
    rng = np.random.default_rng(5)
    charge, t = series([15.0, 10.0, 5.0], rng)
    gradient = 14.165 - 0.055 * 0.5 * (1 + erf((Z_UM - 16.0) / (np.sqrt(2) * 2.0)))
    single = gradient[:, None] + rng.normal(0, NOISE_ANGSTROM, (Z_UM.size, N_X))
    flat = c_map(np.nan, rng, poor=14.25)
    maps = np.concatenate([charge, single[None], flat[None]])
    res = x_profile_front(maps, z_um=Z_UM, time_s=np.append(t, [16500.0, 18300.0]))
    assert np.isnan(res.position_um[3:]).all()
    assert res.flag[3:].tolist() == [FrontFlag.SINGLE_PHASE, FrontFlag.SINGLE_PHASE]
    assert np.isfinite(res.position_um[:3]).all()
    assert front_flag_legend()[str(int(FrontFlag.SINGLE_PHASE))].startswith("SINGLE_PHASE")


def test_no_map_with_both_phases_gives_no_front_and_says_why():
    rng = np.random.default_rng(6)
    maps, t = series([np.nan, np.nan], rng)
    res = x_profile_front(maps, z_um=Z_UM, time_s=t)
    assert np.isnan(res.position_um).all() and np.isnan(res.rich_c_angstrom)
    assert res.flag.tolist() == [FrontFlag.NO_RICH_REFERENCE] * 2
    assert np.isnan(res.velocity_nm_per_s)


def test_front_criteria_are_checked():
    maps, t = series([10.0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_side_rows"):
        x_profile_front(maps, z_um=Z_UM, time_s=t, min_side_rows=0)
    with pytest.raises(ValueError, match="side_sigma"):
        x_profile_front(maps, z_um=Z_UM, time_s=t, side_sigma=-1.0)
