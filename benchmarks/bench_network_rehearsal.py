"""Per-map wall time of the network rehearsal against the in-process one (issue 9 target ≤ 10 %).

Runs the same small rehearsal twice in this process: ``control="sim"`` (simulated devices,
event-driven clock: exposures and moves cost no wall time, rendering does) and
``control="network"`` (``opmap sim-beamline`` in a child; CA and HTTP; motors and exposures
in wall time). Per map: stop minus start document time of each map run. Prints both means
and the overhead beside its target, measured in this run:
``.venv/bin/python benchmarks/bench_network_rehearsal.py [n_z n_x]``.

The two are not the same kind of time: in process a map costs its rendering and
bookkeeping; over the network it also lasts its exposures (n_z × n_x × 0.05 s), moves and
the HTTP/CA round trips, which a real beamline cannot skip either.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from opmap.rehearse import RehearsalOptions, rehearse

TARGET_OVERHEAD = 0.10


class MapTimes:
    """Wall time (s) of each map run, from its start and stop documents."""

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self.durations_s: list[float] = []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start" and "map_geometry" in doc:
            self._starts[doc["uid"]] = doc["time"]
        elif name == "stop" and doc["run_start"] in self._starts:
            self.durations_s.append(doc["time"] - self._starts[doc["run_start"]])


def per_map_s(control: str, map_shape: tuple[int, int], folder: Path) -> float:
    """Mean wall time (s) of the maps of one rehearsal."""
    times = MapTimes()
    options = RehearsalOptions(
        data_dir=folder / control,
        map_shape=map_shape,
        time_scale=0.05,
        max_maps=3,
        live_analysis=False,
        control=control,
    )
    rehearse(options, callbacks=[times])
    return statistics.fmean(times.durations_s)


def main() -> None:
    map_shape = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) == 3 else (9, 9)
    with tempfile.TemporaryDirectory() as tmp:
        local_s = per_map_s("sim", map_shape, Path(tmp))
        network_s = per_map_s("network", map_shape, Path(tmp))  # CA only after the local run
    overhead = network_s / local_s - 1.0
    print(f"map {map_shape[0]} x {map_shape[1]}: in process {local_s:.2f} s/map, "
          f"network {network_s:.2f} s/map")  # fmt: skip
    print(f"network overhead {overhead:+.0%} (target <= {TARGET_OVERHEAD:.0%})")


if __name__ == "__main__":
    main()
