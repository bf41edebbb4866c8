"""Batched Gaussian fits: recovery, uncertainty calibration, flags, two-phase fractions."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.analysis.fitting import FitFlag, fit_gaussian, fit_two_gaussians

Q = np.linspace(1.30, 1.37, 36)  # ~0.002 Å⁻¹ bins around LCO (003)


def _gauss(q, area, mu, sigma):
    return area / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((q - mu) / sigma) ** 2)


def _noisy_peaks(rng, n, *, height=200.0, sigma=0.004, noise=1.0, bg=20.0):
    mu = rng.uniform(1.325, 1.345, n)
    area = height * sigma * np.sqrt(2 * np.pi)
    y = _gauss(Q[None, :], area, mu[:, None], sigma) + bg + 30 * (Q - 1.33)
    return mu, y + rng.normal(0, noise, y.shape)


def test_fit_recovers_positions_within_two_thousandths_of_a_bin_without_noise():
    rng = np.random.default_rng(0)
    mu, y = _noisy_peaks(rng, 200, noise=0.0)
    fit = fit_gaussian(y, Q)
    assert np.all(fit.ok)
    np.testing.assert_allclose(fit.position_q, mu, atol=1e-6)
    np.testing.assert_allclose(fit.sigma_q, 0.004, rtol=1e-4)
    np.testing.assert_allclose(fit.height, 200.0, rtol=1e-4)
    np.testing.assert_allclose(fit.fwhm_q, 0.004 * 2.3548, rtol=1e-3)


def test_position_uncertainty_is_calibrated_pull_width_near_one():
    rng = np.random.default_rng(1)
    mu, y = _noisy_peaks(rng, 4000, noise=2.0)
    fit = fit_gaussian(y, Q)
    assert fit.ok.mean() > 0.99
    pull = (fit.position_q - mu) / fit.position_q_err
    pull_area = (fit.area - 200.0 * 0.004 * np.sqrt(2 * np.pi)) / fit.area_err
    assert abs(np.nanstd(pull) - 1.0) < 0.08
    assert abs(np.nanmean(pull)) < 0.08
    assert abs(np.nanstd(pull_area) - 1.0) < 0.1
    # and the typical error is far below a bin (the lattice changes are sub-bin)
    assert np.nanmedian(fit.position_q_err) < 0.1 * (Q[1] - Q[0])


def test_empty_profile_gives_nan_and_nan_input_flag():
    y = np.full((3, Q.size), np.nan)
    y[1, :4] = 1.0  # too few points for 5 parameters
    fit = fit_gaussian(y, Q)
    assert np.all(fit.flag == FitFlag.NAN_INPUT)
    assert np.all(np.isnan(fit.position_q)) and np.all(np.isnan(fit.area))


def test_flat_noise_gives_no_peak_or_weak_never_a_confident_position():
    rng = np.random.default_rng(2)
    y = 20 + rng.normal(0, 1.0, (500, Q.size))
    fit = fit_gaussian(y, Q)
    assert fit.ok.mean() < 0.01  # false detections at the 5-sigma level only
    assert np.all(np.isnan(fit.position_q[~fit.ok]))
    assert np.isin(fit.flag, [FitFlag.NO_PEAK, FitFlag.WEAK, FitFlag.OUT_OF_RANGE]).mean() > 0.99


def test_weak_peak_is_flagged_weak():
    rng = np.random.default_rng(3)
    _, y = _noisy_peaks(rng, 400, height=1.6, noise=1.0)  # area / its error ≈ 3
    fit = fit_gaussian(y, Q)
    assert np.mean(fit.flag == FitFlag.WEAK) > 0.3
    assert np.all(np.isnan(fit.position_q[fit.flag == FitFlag.WEAK]))


def test_peak_outside_the_measured_range_is_out_of_range():
    y = _gauss(Q, 100, 1.40, 0.004)[None, :] + 20 + 0 * Q  # centre beyond the grid
    y = y + _gauss(Q, 100, 1.372, 0.004)  # only its flank inside
    fit = fit_gaussian(y, Q)
    assert fit.flag[0] in (FitFlag.OUT_OF_RANGE, FitFlag.NO_PEAK)
    assert np.isnan(fit.position_q[0])


def test_nan_bins_inside_the_profile_are_ignored():
    y = _gauss(Q, 100, 1.3377, 0.004) + 10
    y[[3, 17, 18]] = np.nan
    fit = fit_gaussian(y, Q)
    assert fit.ok[0]
    assert fit.position_q[0] == pytest.approx(1.3377, abs=1e-7)


def test_two_gaussians_recover_phase_fractions():
    rng = np.random.default_rng(4)
    q_poor, q_rich = 6 * np.pi / 14.13, 6 * np.pi / 14.0  # Li-poor / Li-rich LCO (003)
    rich = rng.uniform(0.05, 0.95, 300)
    y = _gauss(Q[None, :], 100 * (1 - rich[:, None]), q_poor, 0.003)
    y = y + _gauss(Q[None, :], 100 * rich[:, None], q_rich, 0.003) + 20
    y = y + rng.normal(0, 0.5, y.shape)
    fit = fit_two_gaussians(y, Q, positions_q=(q_poor + 0.001, q_rich - 0.001))
    assert fit.ok.mean() > 0.97
    np.testing.assert_allclose(fit.fraction[fit.ok, 1], rich[fit.ok], atol=0.05)
    pull = (fit.fraction[fit.ok, 1] - rich[fit.ok]) / fit.fraction_err[fit.ok, 1]
    assert 0.7 < np.std(pull) < 1.3
    np.testing.assert_allclose(fit.position_q[fit.ok, 1], q_rich, atol=5e-4)


def test_two_gaussians_with_fixed_positions_give_zero_fraction_for_absent_phase():
    q_poor, q_rich = 6 * np.pi / 14.13, 6 * np.pi / 14.0
    y = _gauss(Q, 100, q_rich, 0.003) + 20
    fit = fit_two_gaussians(y, Q, positions_q=(q_poor, q_rich), fix_positions=True)
    assert fit.ok[0]
    assert fit.fraction[0, 1] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(fit.position_q[0], [q_poor, q_rich])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": Q[::-1]}, "strictly increasing"),
        ({"profiles": np.zeros((2, 5))}, "profiles must have shape"),
        ({"min_snr": 1.0}, "min_snr"),
        ({"sigma_bounds_q": (0.01, 0.001)}, "sigma_bounds_q"),
    ],
)
def test_bad_input_raises_value_error_naming_parameter(kwargs, message):
    args = {"profiles": np.zeros((2, Q.size)), "q": Q, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_gaussian(args.pop("profiles"), args.pop("q"), **args)
