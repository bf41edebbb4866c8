"""Lattice parameters, Li calibration, maps and the biphasic front against known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erfc

from opmap.analysis.fitting import fit_gaussian, fit_two_gaussians
from opmap.analysis.lattice import (
    PAPER_CALIBRATION,
    PAPER_TRANSFER_X_ERR,
    LiCalibration,
    a_from_q110,
    biphasic_front,
    biphasic_maps,
    c_from_q003,
    frames_to_maps,
    front_velocity,
    lattice_maps,
    li_fraction_from_c,
)


def test_c_and_a_from_q_match_domain_table():
    c, c_err = c_from_q003(np.array([1.3464, 1.3163]), np.array([1e-4, 1e-4]))
    np.testing.assert_allclose(c, [14.00, 14.32], atol=2e-3)
    # σc = c·σq/q: 1e-4 Å⁻¹ on (003) is ~1 mÅ on c
    np.testing.assert_allclose(c_err, c * 1e-4 / np.array([1.3464, 1.3163]), rtol=1e-12)
    a, _ = a_from_q110(np.array([4.482]))
    assert a[0] == pytest.approx(2.8035, abs=3e-4)


def test_paper_calibration_matches_the_printed_lines_inside_its_range():
    # SI Fig. S4: x = 20.13 − c·0.3/0.22 (x < 0.75), x = 20.49 − c·0.25/0.18 (x ≥ 0.75)
    c = np.linspace(14.03, 14.43, 81)
    x, _ = li_fraction_from_c(c)
    printed = np.where(c <= 14.21, 20.49 - c * 0.25 / 0.18, 20.13 - c * 0.3 / 0.22)
    np.testing.assert_allclose(x, printed, atol=5e-3)
    lo, hi = li_fraction_from_c(np.array([14.21 - 1e-9, 14.21 + 1e-9]))[0]
    assert abs(lo - hi) < 1e-6  # the two lines meet at the switch


def test_x_outside_the_calibrated_range_is_nan_never_clamped():
    # The examples: 14.00 Å would read 1.046 (above x = 1); 14.5 Å is beyond 14.43.
    x, x_err = li_fraction_from_c(np.array([14.00, 14.029, 14.431, 14.5, np.nan]))
    assert np.isnan(x).all() and np.isnan(x_err).all()
    assert PAPER_CALIBRATION.covers(np.array([14.03, 14.43, 14.0])).tolist() == [
        True,
        True,
        False,
    ]


def test_x_err_propagates_c_err_and_the_calibration_uncertainty():
    cal = LiCalibration(c_angstrom=(14.0, 14.2), x_li=(1.0, 0.5), c_err_angstrom=0.01)
    # slope −2.5 per Å; at the midpoint u = 0.5: σ_cal² = (2.5·0.01)²·(0.25 + 0.25)
    x, x_err = li_fraction_from_c(np.array([14.1]), np.array([0.004]), calibration=cal)
    assert x[0] == pytest.approx(0.75)
    assert x_err[0] == pytest.approx(np.hypot(2.5 * 0.004, 2.5 * 0.01 * np.sqrt(0.5)))
    # The paper's anchors are printed to 0.01 (0.0035-0.0049 in x), and the calibration
    # reads its own end-of-charge c (14.32 A) as 0.60 where the charge gives 0.5: x_err
    # holds that transfer uncertainty, 0.10, in quadrature.
    _, paper_err = li_fraction_from_c(np.array([14.05, 14.3]), np.zeros(2))
    assert (paper_err > np.hypot(0.1, 0.0035)).all() and (paper_err < np.hypot(0.1, 0.005)).all()
    x_end_of_charge, _ = li_fraction_from_c(np.array([14.32]))
    assert x_end_of_charge[0] - 0.5 == pytest.approx(PAPER_TRANSFER_X_ERR, abs=0.005)


def test_calibration_rejects_bad_anchors_naming_them():
    with pytest.raises(ValueError, match="strictly increasing"):
        LiCalibration(c_angstrom=(14.2, 14.0), x_li=(0.5, 1.0))
    with pytest.raises(ValueError, match="x_li must lie in"):
        LiCalibration(c_angstrom=(14.0, 14.2), x_li=(1.2, 0.5))
    with pytest.raises(ValueError, match="x_err"):
        LiCalibration(c_angstrom=(14.0, 14.2), x_li=(1.0, 0.5), x_err=-1.0)
    with pytest.raises(TypeError, match="bogus"):
        LiCalibration(bogus=1.0)  # type: ignore[call-arg]


def test_frames_to_maps_snake_and_bad_count():
    maps = frames_to_maps(np.arange(12), n_z=2, n_x=3, snake=True)
    assert maps.shape == (2, 2, 3)
    assert maps[1].tolist() == [[6, 7, 8], [11, 10, 9]]
    with pytest.raises(ValueError, match="multiple of n_z"):
        frames_to_maps(np.arange(7), n_z=2, n_x=3)


def test_lattice_maps_recover_c_a_and_x_per_pixel():
    rng = np.random.default_rng(0)
    n_z, n_x = 4, 5
    c_true = rng.uniform(14.0, 14.4, n_z * n_x)
    q003 = np.linspace(1.28, 1.37, 46)
    y = 300 * np.exp(-0.5 * ((q003 - 6 * np.pi / c_true[:, None]) / 0.004) ** 2) + 10
    fits = {"perp": fit_gaussian(y + rng.normal(0, 1, y.shape), q003)}
    maps = lattice_maps(fits, n_z=n_z, n_x=n_x)
    c_map = maps.c_angstrom["perp"][0]
    np.testing.assert_allclose(c_map, c_true.reshape(n_z, n_x), atol=2e-3)
    pull = (c_map - c_true.reshape(n_z, n_x)) / maps.c_err_angstrom["perp"][0]
    assert np.all(np.abs(pull) < 5)
    x_expected, _ = li_fraction_from_c(c_true)
    np.testing.assert_allclose(maps.x_li["perp"][0], x_expected.reshape(n_z, n_x), atol=4e-3)


def test_biphasic_maps_give_rich_fraction_and_mean_c():
    q = np.linspace(1.30, 1.38, 41)
    rich = np.array([0.2, 0.5, 0.8, 1.0])

    def g(c):
        return np.exp(-0.5 * ((q - 6 * np.pi / c) / 0.003) ** 2)

    y = 100 * (rich[:, None] * g(14.0) + (1 - rich[:, None]) * g(14.13)) + 5
    fit = fit_two_gaussians(y, q, positions_q=(6 * np.pi / 14.13, 6 * np.pi / 14.0),
                            fix_positions=True)  # fmt: skip
    maps = biphasic_maps({"perp": fit}, n_z=2, n_x=2)
    np.testing.assert_allclose(maps.rich_fraction["perp"].ravel(), rich, atol=1e-6)
    c_mean = rich * 14.0 + (1 - rich) * 14.13
    np.testing.assert_allclose(maps.c_mean_angstrom["perp"].ravel(), c_mean, atol=1e-6)
    x, _ = li_fraction_from_c(c_mean)
    np.testing.assert_allclose(maps.x_li["perp"].ravel(), x)


def test_front_speed_and_width_from_moving_noisy_erf_front_within_5_percent():
    rng = np.random.default_rng(1)
    z = np.arange(0.5, 20.0, 1.0)  # cathode pixel centres (µm)
    t = np.arange(0.0, 1500.0, 150.0)  # 10 maps, 150 s apart
    v_true_nm_s, w_sigma_um = -10.0, 6.0 / 2.5631  # 10 nm/s downward, 6 µm 10-90 width
    z0 = 18.0 + v_true_nm_s * 1e-3 * t
    f = 0.5 * erfc((z[None, :] - z0[:, None]) / (np.sqrt(2) * w_sigma_um))
    frac = np.repeat(f[:, :, None], 49, axis=2) + rng.normal(0, 0.1, (t.size, z.size, 49))
    frac[:, :, :3] = np.nan  # columns outside the cathode
    res = biphasic_front(frac, z_um=z, time_s=t)
    assert np.all(np.isfinite(res.position_um))
    np.testing.assert_allclose(res.position_um, z0, atol=0.1)
    assert res.velocity_nm_per_s == pytest.approx(v_true_nm_s, rel=0.05)
    assert res.velocity_err_nm_per_s < 0.5
    np.testing.assert_allclose(res.width_um, 6.0, rtol=0.1)


def test_front_is_nan_when_the_profile_never_crosses_one_half():
    z = np.arange(20.0)
    frac = np.full((3, 20, 2), 0.9)
    res = biphasic_front(frac, z_um=z, time_s=np.array([0.0, 1.0, 2.0]))
    assert np.all(np.isnan(res.position_um)) and np.isnan(res.velocity_nm_per_s)
    with pytest.raises(ValueError, match="rich_fraction must be"):
        biphasic_front(frac, z_um=z[:5], time_s=np.array([0.0, 1.0, 2.0]))


def _erf_front(z, z0, width_sigma_um=2.0):
    return 0.5 * erfc((z - z0) / (np.sqrt(2) * width_sigma_um))


def test_front_rows_outside_the_cathode_are_ignored_and_fronts_there_rejected():
    z = np.arange(-2.0, 30.0)  # Pt below 0, LiPON and the anode above 20 µm
    t = np.arange(6) * 200.0
    z0 = 16.0 - 0.01 * t  # −10 nm/s
    f = _erf_front(z[None, :], z0[:, None])
    # A mixed signal at the Pt and LiPON rows that crosses 0.5 outside the cathode.
    f[:, z < 0] = 0.0
    f[:, (z > 20) & (z < 24)] = 0.9
    f[:, z >= 24] = np.nan
    res = biphasic_front(np.repeat(f[:, :, None], 3, axis=2), z_um=z, time_s=t)
    np.testing.assert_allclose(res.position_um, z0, atol=0.05)
    assert res.velocity_nm_per_s == pytest.approx(-10.0, rel=0.01)
    # The same profiles without the cathode limits find the spurious crossings instead.
    loose = biphasic_front(
        np.repeat(f[:, :, None], 3, axis=2), z_um=z, time_s=t, cathode_z_um=None
    )
    assert not np.allclose(loose.position_um, z0, atol=0.5, equal_nan=True)
    # A front entirely above the cathode (single phase inside) is no front.
    above = _erf_front(z, 23.0)[None, :, None].repeat(3, axis=0)
    res = biphasic_front(above, z_um=z, time_s=t[:3])
    assert np.isnan(res.position_um).all()


def test_front_speed_uses_the_biphasic_stage_and_survives_an_outlier_map():
    rng = np.random.default_rng(3)
    z = np.arange(0.0, 21.0)
    t = np.arange(12) * 150.0
    z0 = 18.0 - 0.0105 * t  # −10.5 nm/s, leaves the cathode after ~1700 s
    f = _erf_front(z[None, :], z0[:, None], 2.3)
    f[9:] = 0.0  # solid solution: Li-poor everywhere, no front
    f[10, 15:] = 0.8  # the insulating Li-rich surface layer of a later stage (a 1-map run)
    f[7] = _erf_front(z, 14.0, 2.3)  # one map whose profile is wrong (e.g. a fit failure)
    frac = f[:, :, None] + rng.normal(0.0, 0.05, (t.size, z.size, 20))
    res = biphasic_front(frac, z_um=z, time_s=t)
    assert res.used.tolist() == [True] * 9 + [False] * 3  # the biphasic stage
    assert res.time_window_s == (0.0, 1200.0)
    assert res.velocity_nm_per_s == pytest.approx(-10.5, rel=0.03)  # outlier rejected
    np.testing.assert_allclose(np.delete(res.position_um[:9], 7), np.delete(z0[:9], 7), atol=0.2)
    plain = biphasic_front(frac, z_um=z, time_s=t, time_window_s=(0.0, 1300.0))
    assert plain.velocity_nm_per_s == pytest.approx(-10.5, rel=0.03)
    plain_lsq, _ = front_velocity(t[:9], res.position_um[:9], robust=False)
    assert abs(plain_lsq / -10.5 - 1) > 0.1  # least squares alone would miss the target
    with pytest.raises(ValueError, match="contrast"):
        biphasic_front(frac, z_um=z, time_s=t, contrast=0.6)
    with pytest.raises(ValueError, match="cathode_z_um"):
        biphasic_front(frac, z_um=z, time_s=t, cathode_z_um=(20.0, 0.0))
