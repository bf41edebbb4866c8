"""Frame rate of the twin's forward model on the full and the 4x4-binned Eiger X 4M.

Run: ``python benchmarks/bench_render.py [--repeats N] [--frames N]``. Prints the median
frames/s over repeats for a typical scene (beam across LCO and LiPON, two families in
the biphasic regime, Ti, 20 Li spots) at 0.05 s exposure, and the per-geometry setup time.
Issue target on 2 idle cores: >= 200 binned frames/s and >= 5 full frames/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from opmap.analysis.geometry import eiger4m_integrator
from opmap.twin import BeamScene, FamilyTexture, LcoPhase, LiSpot
from opmap.twin.forward import DiffractionConfig, DiffractionRenderer

FAMILIES = (
    FamilyTexture("perp", (25.0, 160.0, 205.0, 345.0), (90.0,)),
    FamilyTexture("par", (90.0, 275.0), (210.0,)),
)
SCENE = BeamScene(
    time_s=1200.0,
    z_um=19.5,
    x_start_um=500.0,
    x_stop_um=533.0,
    layer_weights={"lco": 0.5, "lipon": 0.5, "ti": 0.1, "li": 0.2},
    lco_phases=(
        LcoPhase("perp", 0.15, 14.0, 2.8035),
        LcoPhase("perp", 0.10, 14.13, 2.802),
        LcoPhase("par", 0.15, 14.0, 2.803),
        LcoPhase("par", 0.10, 14.04, 2.802),
    ),
    li_spots=tuple(LiSpot(i, 17.0 * i % 360.0, 0.05) for i in range(20)),
)


def frames_per_s(
    renderer: DiffractionRenderer, frames: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Frames rendered per wall second over ``frames`` consecutive frames, and the CPU time
    per frame (ms; this process's, so other load on a shared machine does not count)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(frames):
        renderer.render(SCENE, exposure_s=0.05, rng=rng)
    cpu_ms = 1e3 * (time.process_time() - cpu_start) / frames
    return frames / (time.perf_counter() - start), cpu_ms


def bench(binning: int, repeats: int, frames: int) -> None:
    """Print setup time and median rate for one binning."""
    start = time.perf_counter()
    renderer = DiffractionRenderer(
        eiger4m_integrator(binning=binning), DiffractionConfig(), FAMILIES
    )
    setup_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    renderer.render(SCENE, exposure_s=0.05, rng=rng)
    runs = [frames_per_s(renderer, frames, rng) for _ in range(repeats)]
    rates, cpu_ms = [run[0] for run in runs], [run[1] for run in runs]
    print(
        f"binning {binning}: shape {renderer.shape}, setup {setup_s:.1f} s, "
        f"median {statistics.median(rates):.1f} frames/s "
        f"(min {min(rates):.1f}, max {max(rates):.1f}, {repeats} x {frames} frames), "
        f"CPU {statistics.median(cpu_ms):.1f} ms per frame"
    )


def main() -> None:
    """Benchmark the binned and the full detector."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    bench(4, args.repeats, args.frames * 10)
    bench(1, args.repeats, args.frames)


if __name__ == "__main__":
    main()
