"""Poisson counting noise for detector frames, fast enough for real-time rehearsals.

Exact sampling, two regimes (numpy's own ``Generator.poisson`` costs ~40 ns per pixel,
too slow for a 4.5 Mpixel frame):

* expected counts λ < `INVERSION_MAX_COUNTS` (background: nearly every pixel): inversion of the
  cumulative distribution with one uniform deviate per pixel, in a compiled loop
  (numba, already installed with Tiled);
* brighter pixels (rings, Li spots): numpy's ``Generator.poisson`` (constant-time
  transformed rejection for λ >= 10) on those only.

The uniforms are drawn from the caller's ``numpy.random.Generator`` before the loop, so a
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


#: The first terms of the cumulative sum are added without branching (fast: most pixels
#: hold fewer counts); the rare larger counts continue in a loop.
_UNROLLED_TERMS = 4


@numba.njit(nogil=True, cache=True)
def _invert_poisson(lam, uniform, inv_k, out):  # pragma: no cover - compiled
    for i in range(lam.size):
        expected = np.float64(lam[i])
        if not (expected > 0.0 and expected < 10.0):
            out[i] = 0
            continue
        u = uniform[i]
        p = math.exp(-expected)  # P(N = 0)
        cdf = p
        k = 0
        for j in range(_UNROLLED_TERMS):  # k = #{j : u > P(N <= j)}
            k += u > cdf
            p *= expected * inv_k[j]  # P(N = j + 1) = P(N = j) * λ / (j + 1)
            cdf += p
        if k == _UNROLLED_TERMS:
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
    _invert_poisson(lam, uniform, _INV_K, out)
    bright = np.flatnonzero(lam >= INVERSION_MAX_COUNTS)
    if bright.size:
        counts = rng.poisson(lam[bright].astype(np.float64))
        out[bright] = np.minimum(counts, 2**32 - 2).astype(np.uint32)
    return out.reshape(np.shape(expected))
