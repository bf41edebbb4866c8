"""Poisson counting noise for detector frames, fast enough for real-time rehearsals.

Exact sampling, two regimes (numpy's own ``Generator.poisson`` costs ~40 ns per pixel,
too slow for a 4.5 Mpixel frame):

* expected counts λ < `INVERSION_MAX_COUNTS` (background: nearly every pixel): inversion of the
  cumulative distribution with one uniform deviate per pixel, in compiled loops (numba,
  already installed with Tiled). A first pass without branches compares the deviate with
  the first `_UNROLLED_TERMS` terms of the cumulative sum, so it runs in SIMD lanes
  (P(N=0) is computed beforehand by numpy's vectorised ``exp``); only the pixels that
  reach the last term (a few per cent of a frame) continue in a loop;
* brighter pixels (rings, Li spots): numpy's ``Generator.poisson`` (constant-time
  transformed rejection for λ >= 10) on those only.

The uniforms are drawn from the caller's ``numpy.random.Generator`` before the loops, so a
seed fixes the frame whatever the number of threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Pixels with more expected counts than this are sampled by ``Generator.poisson``.
INVERSION_MAX_COUNTS: float = 10.0
#: Inversion stops here; P(N > 80 | λ < 10) < 1e-40.
_MAX_K = 80
_INV_K = 1.0 / np.arange(1, _MAX_K + 1, dtype=np.float64)
#: Terms of the cumulative sum compared without branches in the first pass: P(N >= 8) is
#: below 1e-5 for λ <= 0.8 (a binned background pixel), so the loop sees few pixels.
_UNROLLED_TERMS = 8


@numba.njit(nogil=True, fastmath=True, cache=True)
def _invert_first_terms(lam, p_zero, uniform, inv_k, out):  # pragma: no cover - compiled
    """``out[i] = #{j < _UNROLLED_TERMS : u_i > P(N <= j)}`` (0 outside 0 < λ < 10)."""
    for i in range(lam.size):
        expected = np.float64(lam[i])
        u = uniform[i]
        p = np.float64(p_zero[i])  # P(N = 0)
        cdf = p
        k = np.uint32(u > cdf)
        for j in range(_UNROLLED_TERMS - 1):
            p = p * expected * inv_k[j]  # P(N = j + 1) = P(N = j) * λ / (j + 1)
            cdf += p
            k += u > cdf
        out[i] = k if (expected > 0.0 and expected < 10.0) else 0


@numba.njit(nogil=True, cache=True)
def _invert_tail(lam, uniform, inv_k, pixels, out):  # pragma: no cover - compiled
    """Finish the inversion of ``pixels`` (those at ``_UNROLLED_TERMS``) term by term."""
    for n in range(pixels.size):
        i = pixels[n]
        expected = np.float64(lam[i])
        u = uniform[i]
        p = math.exp(-expected)
        cdf = p
        k = 0
        while u > cdf and k < inv_k.size:
            p *= expected * inv_k[k]
            k += 1
            cdf += p
        out[i] = k


def poisson_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw independent Poisson counts with the given expectations.

    Parameters
    ----------
    expected
        Expected counts λ >= 0, any shape, float32 or float64.
    rng
        Source of randomness; the result depends only on its state and ``expected``.

    Returns
    -------
    numpy.ndarray
        uint32 counts, same shape as ``expected``, saturating at ``2**32 - 2``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    lam = np.ascontiguousarray(expected).reshape(-1)
    out = np.empty(lam.size, dtype=np.uint32)
    uniform = rng.random(lam.size)
    p_zero = np.exp(-lam.astype(np.float32, copy=False))
    _invert_first_terms(lam, p_zero, uniform, _INV_K, out)
    _invert_tail(lam, uniform, _INV_K, np.flatnonzero(out == _UNROLLED_TERMS), out)
    bright = np.flatnonzero(lam >= INVERSION_MAX_COUNTS)
    if bright.size:
        counts = rng.poisson(lam[bright].astype(np.float64))
        out[bright] = np.minimum(counts, 2**32 - 2).astype(np.uint32)
    return out.reshape(np.shape(expected))
