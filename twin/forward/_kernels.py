"""Compiled per-frame loops of the forward model (numba; installed with Tiled).

Each adds expected counts in place into a flat float32 frame ``lam``. Written as plain
loops so a frame allocates no temporaries the size of the detector.

Peaks are pseudo-Voigt in q: ``η L(u) + (1 - η) G(u)``, L and G of unit height and the same
FWHM, averaged over each pixel's equal-area q quantiles (see `_pixels`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_FOUR_LN2 = 4.0 * math.log(2.0)


@numba.njit(nogil=True, cache=True)
def combine_static(weights, stack, lam):  # pragma: no cover - compiled
    """``lam[i] = Σ_j weights[j] · stack[j, i]`` (stack float32, shape (n_rows, n))."""
    n_rows = stack.shape[0]
    for i in range(stack.shape[1]):
        total = 0.0
        for j in range(n_rows):
            total += weights[j] * stack[j, i]
        lam[i] = total


@numba.njit(nogil=True, inline="always", fastmath=True, cache=True)
def _pixel_pseudo_voigt(quantiles, k, shift, q0, fwhm, eta, cutoff):  # pragma: no cover
    """Mean of a unit-height pseudo-Voigt over the q quantiles of pixel ``k``."""
    m = quantiles.shape[1]
    if quantiles[k, 0] + shift - q0 > cutoff or q0 - quantiles[k, m - 1] - shift > cutoff:
        return 0.0
    inv = 1.0 / fwhm
    total = 0.0
    for j in range(m):
        u = (quantiles[k, j] + shift - q0) * inv
        u2 = u * u
        total += eta / (1.0 + 4.0 * u2)
        if u2 < 9.0:  # the Gaussian is below 1e-10 of its height beyond 3 FWHM
            total += (1.0 - eta) * math.exp(-_FOUR_LN2 * u2)
    return total / m


@numba.njit(nogil=True, cache=True)
def add_ring(lam, index, quantiles, dq, offset_um, fwhm, eta, cutoff, weight, q0, amplitude):
    """Add ``amplitude · weight · pseudo-Voigt(q0)`` on ring pixels ``index``.

    ``dq`` (n,) is dq per µm of sample offset; ``offset_um`` the sample's offset along the
    beam; pixels farther than ``cutoff`` (Å⁻¹) from the peak get nothing.
    """  # pragma: no cover - compiled
    for k in range(index.size):
        shift = offset_um * dq[k]
        value = _pixel_pseudo_voigt(quantiles, k, shift, q0, fwhm, eta, cutoff)
        if value != 0.0:
            lam[index[k]] += amplitude * weight[k] * value


@numba.njit(nogil=True, cache=True)
def add_spot(
    lam, index, quantiles, dq, offset_um, fwhm, eta, cutoff, scale, chi_deg, start, stop,
    q0, amplitude, azimuth, chi_fwhm,
):  # fmt: skip  # pragma: no cover - compiled
    """Add a single-crystal spot (pseudo-Voigt in q, Gaussian in χ) on pixels [start, stop)."""
    inv_sigma_chi = 1.0 / (chi_fwhm * _FWHM_TO_SIGMA)
    for k in range(start, stop):
        delta = (chi_deg[k] - azimuth + 180.0) % 360.0 - 180.0
        shape_chi = math.exp(-0.5 * (delta * inv_sigma_chi) ** 2)
        shift = offset_um * dq[k]
        profile = _pixel_pseudo_voigt(quantiles, k, shift, q0, fwhm, eta, cutoff)
        lam[index[k]] += amplitude * scale[k] * shape_chi * profile


def warm_up() -> None:
    """Compile the kernels on tiny arrays (a second or two, once per process)."""
    lam = np.zeros(2, dtype=np.float32)
    one = np.ones(2)
    index = np.arange(2, dtype=np.int64)
    quantiles = np.ones((2, 3))
    combine_static(np.ones(1, dtype=np.float32), np.ones((1, 2), dtype=np.float32), lam)
    add_ring(lam, index, quantiles, one, 0.0, 0.01, 0.3, 0.1, one.astype(np.float32), 1.0, 1.0)
    add_spot(lam, index, quantiles, one, 0.0, 0.01, 0.3, 0.1, one.astype(np.float32), one,
             0, 2, 1.0, 1.0, 0.0, 1.0)  # fmt: skip
