"""Targeted sparse reduction of full Eiger 4M frames versus pyFAI integrate2d_ng.

Run: ``.venv/bin/python benchmarks/bench_reduction.py [n_frames]``.  Prints medians.
Synthetic frames: Gaussian rings + Poisson noise computed from pyFAI's q array.
Figures depend on the machine and its load; on a shared machine they are pessimistic.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from opmap.analysis.families import FamilyConfig
from opmap.analysis.geometry import DetectorGeometry, eiger4m_detector
from opmap.analysis.reduction import ReductionPlan, compile_reduction

FAMILIES = {
    "family": [
        {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
        {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]},
    ]
}


def synthetic_frames(geometry: DetectorGeometry, n: int, seed: int = 0) -> np.ndarray:
    """uint32 (n, H, W) frames: rings of LCO, Li, Ti, Au + background, Poisson noise."""
    q = geometry.q_array()
    rate = 2.0 + 3.0 * np.exp(-(((q - 1.0) / 0.08) ** 2))
    for q0, height in ((1.33, 50.0), (2.459, 30.0), (2.54, 10.0), (2.669, 20.0), (4.48, 15.0)):
        rate += height * np.exp(-0.5 * ((q - q0) / 0.006) ** 2)
    rng = np.random.default_rng(seed)
    frames = rng.poisson(rate, size=(n, *rate.shape)).astype(np.uint32)
    frames[:, geometry.effective_mask] = 2**32 - 1  # Eiger gap marker
    return frames


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(n_frames: int = 64) -> None:
    logging.disable(logging.WARNING)
    geometry = DetectorGeometry(
        eiger4m_detector(), distance_m=0.1, poni1_m=0.081, poni2_m=0.0776, rot1_rad=0.01
    )
    plan = ReductionPlan(families=FamilyConfig.model_validate(FAMILIES))
    t0 = time.perf_counter()
    reduction = compile_reduction(plan, geometry)
    print(f"compile_reduction: {time.perf_counter() - t0:.1f} s, {reduction!r}")
    frames = synthetic_frames(geometry, n_frames)
    print(f"frames: {frames.shape} {frames.dtype}, cores: {os.cpu_count()}")
    reduction.reduce_packed(frames[:4])  # warm-up
    for threads in (1, 2):
        for batch in (16, 64):
            seconds = median_time(
                lambda t=threads, b=batch: reduction.reduce_packed(
                    frames, threads=t, batch_size=b
                ),
                3,
            )
            print(
                f"targeted reduction threads={threads} batch={batch}: "
                f"{n_frames / seconds:.0f} frames/s (median of 3)"
            )
    best = min(
        median_time(lambda t=t: reduction.reduce_packed(frames, threads=t, batch_size=64), 3)
        for t in (1, 2)
    )
    ai = geometry.integrator
    kwargs = {"unit": "q_A^-1", "method": ("full", "csr", "cython"), "polarization_factor": 0.99}
    t0 = time.perf_counter()
    ai.integrate2d_ng(frames[0], 1000, 360, **kwargs)
    print(f"pyFAI integrate2d_ng first call (matrix build): {time.perf_counter() - t0:.1f} s")
    n_ref = min(n_frames, 8)
    ref = median_time(
        lambda: [ai.integrate2d_ng(f, 1000, 360, **kwargs) for f in frames[:n_ref]], 3
    )
    ref_fps = n_ref / ref
    print(f"pyFAI integrate2d_ng 1000x360 ('full','csr','cython'): {ref_fps:.1f} frames/s")
    print(
        f"targeted reduction best: {n_frames / best:.0f} frames/s, "
        f"speed-up vs integrate2d_ng: {(n_frames / best) / ref_fps:.0f}x"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
