"""Compiled per-frame loops of the forward model (numba; installed with Tiled).

Each adds expected counts in place into a flat float32 frame ``lam``. Written as plain
loops so a frame allocates no temporaries the size of the detector.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@numba.njit(nogil=True)
def combine_static(weights, stack, lam):  # pragma: no cover - compiled
    """``lam[i] = Σ_j weights[j] · stack[j, i]`` (stack float32, shape (n_rows, n))."""
    n_rows = stack.shape[0]
    for i in range(stack.shape[1]):
        total = 0.0
        for j in range(n_rows):
            total += weights[j] * stack[j, i]
        lam[i] = total


@numba.njit(nogil=True, inline="always")
def _box_gaussian(q_lo, q_hi, q0, fwhm):  # pragma: no cover - compiled
    """Mean of a unit-height Gaussian (centre q0, FWHM fwhm) over [q_lo, q_hi]."""
    sigma = fwhm * _FWHM_TO_SIGMA
    if q_lo - q0 > 7.0 * sigma or q0 - q_hi > 7.0 * sigma:
        return 0.0  # beyond 7σ: below 1e-11 of the peak
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    width = max(q_hi - q_lo, 1e-12)
    span = math.erf((q_hi - q0) * scale) - math.erf((q_lo - q0) * scale)
    return span * sigma * _SQRT_HALF_PI / width


@numba.njit(nogil=True)
def add_ring(lam, index, q_lo, q_hi, fwhm, weight, q0, amplitude):  # pragma: no cover
    """Add ``amplitude · weight · box-Gaussian(q0)`` on ring pixels ``index``."""
    for k in range(index.size):
        lam[index[k]] += amplitude * weight[k] * _box_gaussian(q_lo[k], q_hi[k], q0, fwhm[k])


@numba.njit(nogil=True)
def add_spot(
    lam, index, q_lo, q_hi, fwhm, scale, chi_deg, start, stop, q0, amplitude, azimuth, chi_fwhm
):  # pragma: no cover - compiled
    """Add a single-crystal spot (Gaussian in q and in χ) on ring pixels [start, stop)."""
    inv_sigma_chi = 1.0 / (chi_fwhm * _FWHM_TO_SIGMA)
    for k in range(start, stop):
        delta = (chi_deg[k] - azimuth + 180.0) % 360.0 - 180.0
        shape_chi = math.exp(-0.5 * (delta * inv_sigma_chi) ** 2)
        profile = _box_gaussian(q_lo[k], q_hi[k], q0, fwhm[k])
        lam[index[k]] += amplitude * scale[k] * shape_chi * profile


def warm_up() -> None:
    """Compile the kernels on tiny arrays (a second or two, once per process)."""
    lam = np.zeros(2, dtype=np.float32)
    one = np.ones(2)
    index = np.arange(2, dtype=np.int64)
    combine_static(np.ones(1, dtype=np.float32), np.ones((1, 2), dtype=np.float32), lam)
    add_ring(lam, index, one, one + 1, one, one.astype(np.float32), 1.0, 1.0)
    add_spot(lam, index, one, one + 1, one, one.astype(np.float32), one, 0, 2, 1.0, 1.0, 0.0, 1.0)
