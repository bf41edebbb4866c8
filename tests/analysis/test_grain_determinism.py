"""Grain detection gives the same grains whatever the BLAS thread count.

A threaded BLAS sums float32 in an order that depends on how many threads served the call,
and that number changes when other threads call BLAS at the same time. Spot thresholds
summed that way moved by an ulp between two runs of one seed, and a voxel sitting on its
threshold then made one more grain in one run than in the other.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from opmap.analysis.grains import find_grains, find_grains_for_thresholds

_K = 10.0
_SPIKE_CHI = np.arange(2, 360, 8)  # off the χ samples of the median background (every 4th)


def _window_with_spikes_on_their_threshold(seed: int = 3) -> np.ndarray:
    """(6, 41, 360, 10) counts: flat background, 45 spikes per frame within ±1e-6 of k × mean.

    6 × 41 frames is a shape for which OpenBLAS's float32 frame sums differ between one and
    two threads on this machine's BLAS.
    """
    rng = np.random.default_rng(seed)
    window = 100.0 + 0.25 * rng.integers(0, 3, (6, 41, 360, 10)).astype(np.float32)
    relative = rng.uniform(-1e-6, 1e-6, (6, 41, _SPIKE_CHI.size))
    for _ in range(12):  # the spikes raise the frame mean they sit on (×1/8 per pass)
        background = np.median(window[:, :, ::4, 5], axis=2)
        threshold = _K * window.astype(np.float64).mean(axis=(2, 3))
        spikes = background[..., None] + threshold[..., None] * (1 + relative)
        window[:, :, _SPIKE_CHI, 5] = spikes.astype(np.float32)
    return window


def _tables(window: np.ndarray, blas_threads: int) -> list[dict[str, np.ndarray]]:
    with threadpool_limits(blas_threads, user_api="blas"):
        by_k = find_grains_for_thresholds(window, (_K, 8.0))
        return [find_grains(window, k=_K).to_dict(), *(t.to_dict() for t in by_k.values())]


@pytest.mark.parametrize("blas_threads", [2, 3])
def test_grains_do_not_depend_on_the_blas_thread_count(blas_threads: int) -> None:
    window = _window_with_spikes_on_their_threshold()
    one_thread = _tables(window, 1)
    several = _tables(window, blas_threads)
    assert one_thread[0]["azimuth_deg"].size > 500  # many spikes passed the threshold ...
    assert one_thread[0]["azimuth_deg"].size < 6 * 41 * _SPIKE_CHI.size  # ... not all
    for single, threaded in zip(one_thread, several, strict=True):
        for name, values in single.items():
            np.testing.assert_array_equal(values, threaded[name], err_msg=name)
