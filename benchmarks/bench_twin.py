"""Digital-twin speed: the paper protocol through many small increments, and scene() per frame.

Prints medians of repeats. A rehearsal advances the electrochemistry ~60 000 times and asks
for one `BeamScene` per detector frame, so both must be cheap.

Usage: ``python benchmarks/bench_twin.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from opmap.devices import SafetyWindow, paper_protocol
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.electrochem import CellElectrochemistry


def protocol_wall_s(dt_s: float = 0.25) -> tuple[float, int]:
    """Wall time (s) and call count of the paper protocol advanced in ``dt_s`` increments."""
    model = CellElectrochemistry(TwinConfig().electrochem)
    model.start_protocol(paper_protocol(), SafetyWindow())
    start, calls = time.perf_counter(), 0
    while not model.state.protocol_done:
        calls += 1
        model.advance_to(calls * dt_s)
    return time.perf_counter() - start, calls


def scene_ms(n_frames: int = 5000) -> float:
    """Mean wall time (ms) of one scene() along a 49-pixel fly line, frames 0.05 s apart."""
    twin = CellTwin(TwinConfig())
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    twin.advance_to(3000.0)
    start = time.perf_counter()
    for i in range(n_frames):
        x_um = 200.0 + 33.0 * (i % 49)
        twin.scene(
            z_um=float(i // 49 % 49) - 3.0,
            x_start_um=x_um,
            x_stop_um=x_um + 33.0,
            time_s=3000.0 + 0.05 * i,
        )
    return (time.perf_counter() - start) / n_frames * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [protocol_wall_s() for _ in range(args.repeats)]
    walls = [wall for wall, _ in runs]
    print(
        f"paper protocol: median {statistics.median(walls):.2f} s wall "
        f"for {runs[0][1]} advance_to calls"
    )
    scenes = [scene_ms() for _ in range(args.repeats)]
    print(f"scene(): median {statistics.median(scenes):.3f} ms per frame")


if __name__ == "__main__":
    main()
