"""Phase maps, layer edges, Ti centroid and Li thickness against known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from opmap.analysis.phases import (
    electrochemical_li_thickness_um,
    layer_boundaries,
    li_thickness_from_ti,
    phase_maps,
    stack_displacement,
    stack_profile,
    ti_position,
)

Z_UM = np.arange(0.5, 49.0, 1.0)  # 49 rows of 1 µm


def _ti_maps(rng, z_true):
    """Ti band along z for each (map, column): beam 1 µm on a 0.5 µm layer, plus noise."""
    prof = np.exp(-0.5 * ((Z_UM[None, :, None] - z_true[:, None, :]) / 0.6) ** 2)
    return 1000 * prof + 5 + rng.normal(0, 2, prof.shape)


@pytest.mark.parametrize("method", ["centroid", "centroid_line", "gaussian"])
def test_ti_position_is_sub_pixel(method):
    rng = np.random.default_rng(0)
    z_true = rng.uniform(24.0, 32.0, (5, 49))
    z = ti_position(_ti_maps(rng, z_true), z_um=Z_UM, method=method)
    assert z.shape == (5, 49)
    assert np.max(np.abs(z - z_true)) < 0.05  # 1/20 of a pixel


@pytest.mark.parametrize("method", ["centroid", "centroid_line", "gaussian"])
def test_ti_position_is_nan_when_the_map_stops_below_the_layer(method):
    """A map stopping 1.5 µm below the Ti layer: the band still rises at its top row, which
    is not the layer's position (the merged validation reported 21.7 µm under 24.9 µm)."""
    rng = np.random.default_rng(2)
    full = _ti_maps(rng, np.full((1, 3), 23.0))
    rows = Z_UM < 22.0
    z = ti_position(full[:, rows], z_um=Z_UM[rows], method=method)
    assert np.all(np.isnan(z))
    inside = ti_position(full[:, Z_UM < 28.0], z_um=Z_UM[Z_UM < 28.0], method=method)
    assert np.max(np.abs(inside - 23.0)) < 0.05


def test_a_background_step_at_the_ti_biases_the_minimum_baseline_not_the_line():
    """The layers below and above the Ti put different backgrounds into its band (here 30 %
    and 10 % of the Ti peak, stepping at the layer): the window minimum leaves the step under
    one side and the displacement between two positions is off by up to ~0.4 µm; the line
    through the window's ends keeps it within ~0.2 µm."""
    z_true = 24.0 + np.linspace(0.0, 0.95, 20)
    sigma = 1.0 / 2.3548  # a 1 µm beam

    def column(centre):
        layer = 0.5 * (erf((Z_UM - centre + 0.25) / (np.sqrt(2) * sigma))
                       - erf((Z_UM - centre - 0.25) / (np.sqrt(2) * sigma)))  # fmt: skip
        step = 0.1 + 0.2 * 0.5 * (1 - erf((Z_UM - centre) / (np.sqrt(2) * sigma)))
        return layer + step

    ti = np.stack([column(c) for c in z_true])[:, :, None]
    spread = {
        method: np.ptp(ti_position(ti, z_um=Z_UM, method=method)[:, 0] - z_true)
        for method in ("centroid", "centroid_line")
    }
    assert spread["centroid"] > 0.3
    assert spread["centroid_line"] < 0.2


def test_li_thickness_from_ti_displacement_matches_electrochemistry():
    rng = np.random.default_rng(1)
    plated = electrochemical_li_thickness_um(np.array([0.0, 0.4, 0.8, 1.4]))
    z_true = 24.5 + plated[:, None] + rng.uniform(-0.2, 0.2, (1, 49))  # tilted collector
    ti = ti_position(_ti_maps(rng, np.broadcast_to(z_true, (4, 49))), z_um=Z_UM)
    thickness = np.nanmean(li_thickness_from_ti(ti), axis=1)
    np.testing.assert_allclose(thickness, plated, atol=0.02)


def test_electrochemical_thickness_matches_domain_numbers():
    np.testing.assert_allclose(electrochemical_li_thickness_um([1.4, 0.8]), [6.8, 3.9], atol=0.05)
    with pytest.raises(ValueError, match="molar_volume"):
        electrochemical_li_thickness_um(1.0, molar_volume_cm3_per_mol=0)


def test_phase_maps_are_normalised_per_map_and_keep_nan():
    bands = {"au_111": np.concatenate([np.arange(6.0), 10 * np.arange(6.0)])}
    bands["au_111"][3] = np.nan
    maps = phase_maps(bands, n_z=2, n_x=3, percentiles=(0, 100))
    assert maps["au_111"].shape == (2, 2, 3)
    np.testing.assert_allclose(maps["au_111"][1].ravel(), np.arange(6) / 5)
    assert np.isnan(maps["au_111"][0, 1, 0]) and maps["au_111"][0, 1, 2] == 1.0
    with pytest.raises(ValueError, match="percentiles"):
        phase_maps(bands, n_z=2, n_x=3, percentiles=(50, 10))


def test_layer_boundaries_of_the_cathode_at_half_maximum():
    # LCO fills 0-20 µm; a 1 µm beam blurs the edges symmetrically: half maximum at 0 and 20.
    z = np.arange(-4.5, 30.0, 1.0)
    from scipy.special import erf

    col = 0.5 * (erf(z / 0.7) - erf((z - 20.0) / 0.7))
    lo, hi = layer_boundaries(np.repeat(col[:, None], 3, axis=1), z_um=z)
    np.testing.assert_allclose(lo, 0.0, atol=0.05)
    np.testing.assert_allclose(hi, 20.0, atol=0.05)


def _tophat_rows(z_rows, bottom_um, thickness_um):
    """Row response of a layer to a 1 µm top-hat beam centred on each row."""
    lo = np.clip(z_rows - 0.5, bottom_um, bottom_um + thickness_um)
    hi = np.clip(z_rows + 0.5, bottom_um, bottom_um + thickness_um)
    return hi - lo


def test_stack_displacement_keeps_sub_row_thickness_that_the_thin_ti_band_loses():
    rng = np.random.default_rng(5)
    z = np.arange(18.0, 45.0)  # 1 µm rows, top-hat beam of 1 µm
    h = np.concatenate([[0.0], rng.uniform(0.0, 8.0, 30)])  # plated Li (µm), map 0 none
    ti_bottom = 24.0 + h
    ti = np.stack([_tophat_rows(z, b, 0.5) for b in ti_bottom])[:, :, None]
    au = np.stack([_tophat_rows(z, b + 0.5 + 3.0, 1.0) for b in ti_bottom])[:, :, None]
    bands = {"ti_100": 500 * ti + 3 + rng.normal(0, 1, ti.shape),
             "au_111": 300 * au + 2 + rng.normal(0, 1, au.shape)}  # fmt: skip
    profile = stack_profile({"au_111": bands["au_111"]})
    shift = stack_displacement(profile, profile[0], z_um=z)[:, 0]
    assert np.max(np.abs(shift - h)) < 0.1
    # Adding the Ti band brings its quantisation back in (the row response of 0.5 µm of Ti
    # is a step of the position, not a shape that moves): the default stack is Au alone.
    both = stack_profile(bands)
    assert np.max(np.abs(stack_displacement(both, both[0], z_um=z)[:, 0] - h)) > 0.15
    # The 0.5 µm Ti band alone is quantised: its centroid is off by up to ~0.25 µm.
    ti_only = li_thickness_from_ti(ti_position(bands["ti_100"], z_um=z))[:, 0]
    assert np.max(np.abs(ti_only - h)) > 0.2
    with pytest.raises(ValueError, match="n_z"):
        stack_displacement(profile, profile[0, :-1], z_um=z)
    with pytest.raises(ValueError, match="half_window"):
        stack_displacement(profile, profile[0], z_um=z, half_window=0)
