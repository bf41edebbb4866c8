"""Poisson counting noise: exact moments and zero-count probability, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.twin.forward import INVERSION_MAX_COUNTS, poisson_counts


@pytest.mark.parametrize("lam", [0.05, 0.7, 3.0, 9.9, 10.0, 250.0])
def test_mean_and_variance_are_lambda(lam):
    n = 200_000
    counts = poisson_counts(np.full(n, lam, dtype=np.float32), np.random.default_rng(5))
    # standard errors of the sample mean and variance of a Poisson sample
    assert counts.mean() == pytest.approx(lam, abs=5 * np.sqrt(lam / n))
    var_se = np.sqrt((lam + 2 * lam**2) / n)
    assert counts.var() == pytest.approx(lam, abs=5 * var_se)


def test_probability_of_zero_and_one_counts():
    lam = 0.7
    counts = poisson_counts(np.full(400_000, lam), np.random.default_rng(9))
    for k, p in ((0, np.exp(-lam)), (1, lam * np.exp(-lam))):
        assert np.mean(counts == k) == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / 4e5))


def test_both_regimes_in_one_frame_keep_shape_and_zero_stays_zero():
    lam = np.array([[0.0, 2.0], [INVERSION_MAX_COUNTS * 3, 0.0]], dtype=np.float32)
    counts = poisson_counts(lam, np.random.default_rng(1))
    assert counts.shape == (2, 2) and counts.dtype == np.uint32
    assert counts[0, 0] == 0 and counts[1, 1] == 0
    assert 0 < counts[1, 0] < 100


def test_seed_fixes_the_counts():
    lam = np.linspace(0, 50, 1000)
    a = poisson_counts(lam, np.random.default_rng(3))
    b = poisson_counts(lam, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_rng_must_be_a_generator():
    with pytest.raises(ValueError, match="rng"):
        poisson_counts(np.ones(3), 42)
