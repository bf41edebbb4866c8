"""Per-map wall time of the network rehearsal against the in-process one, like for like
(issue 9 target: network overhead <= 10 %).

One run, the same seed, map shape, protocol and maps (``max_maps``) for three variants:

- ``event``: ``control="sim"``, event-driven clock (exposures and moves cost no wall time,
  rendering does): what the in-process rehearsal costs the machine;
- ``wall``: ``control="sim"``, ``clock="wall"``: the simulated devices in this process on the
  time base of ``opmap sim-beamline`` (motors and exposures in wall time, the cell at
  ``speedup`` x wall): the like-for-like reference;
- ``network``: ``control="network"``: ``opmap sim-beamline`` in a child, the real devices
  over Channel Access and SIMPLON HTTP.

The variants run interleaved (event, wall, network, event, ...) ``rounds`` times, each in a
process of its own (libca reads the child's Channel Access ports once per process), and the
machine is shared, so medians and per-round ratios are printed, not one wall clock. Per map:
stop minus start document time, of the map runs only (not the electrochemistry tail run,
which lasts the rest of the protocol: in wall time over the network). Where the time goes:
the RunEngine's message hook timestamps every plan step of the map runs; each interval up to
the next message is charged to the step that started it (a ``wait`` to the step it waits
for), per map and per line, for each variant, beside the network minus wall difference.

``.venv/bin/python benchmarks/bench_network_rehearsal.py [n_z n_x [rounds]]``
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opmap.rehearse import RehearsalOptions, rehearse

TARGET_OVERHEAD = 0.10
VARIANTS = ("event", "wall", "network")
SPEEDUP = 20.0


def is_map(md: dict[str, Any]) -> bool:
    """A map run's start metadata (the electrochemistry tail run has a null map index)."""
    return "map_geometry" in md and md.get("map_index") is not None


class MapTimes:
    """Wall time (s) of each map run, from its start and stop documents."""

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self.durations_s: list[float] = []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start" and is_map(doc):
            self._starts[doc["uid"]] = doc["time"]
        elif name == "stop" and doc["run_start"] in self._starts:
            self.durations_s.append(doc["time"] - self._starts[doc["run_start"]])


def step_label(msg: Any) -> str | None:
    """What a plan message starts, by device and verb (None: a wait, charged to its step)."""
    if msg.command == "wait":
        return None
    name = getattr(msg.obj, "name", "") or ""
    verb = {
        ("set", "z"): "z move (CA motor record / sim axis)",
        ("prepare", "x"): "x to run-up start + arm detector",
        ("prepare", "eiger"): "x to run-up start + arm detector",
        ("kickoff", "x"): "x run-up (accelerate)",
        ("kickoff", "eiger"): "detector trigger",
        ("complete", "x"): "exposures + series end (+ disarm)",
        ("complete", "eiger"): "exposures + series end (+ disarm)",
        ("collect", "eiger"): "collect frames (stream docs)",
    }
    axis = "z" if name.endswith("-z") else "x" if name.endswith("-x") else name
    if (msg.command, axis) in verb:
        return verb[(msg.command, axis)]
    if msg.command in ("kickoff", "complete") and "readback" in name:
        return f"x readback monitor {msg.command} (CA drain)"
    return f"{msg.command} {name}".strip()


class StepProfile:
    """Wall seconds per plan step inside the map runs (a RunEngine ``msg_hook``)."""

    def __init__(self) -> None:
        self.seconds = collections.Counter()
        self._in_map = False
        self._label: str | None = None
        self._t_s = 0.0

    def __call__(self, msg: Any) -> None:
        now_s = time.monotonic()
        if self._in_map and self._label is not None:
            self.seconds[self._label] += now_s - self._t_s
        if msg.command == "open_run":
            self._in_map = is_map(msg.kwargs)
        elif msg.command == "close_run":
            self._in_map = False
        label = step_label(msg)
        if label is not None:
            self._label = label
        self._t_s = now_s


def one_rehearsal(variant: str, map_shape: tuple[int, int], folder: Path) -> dict[str, Any]:
    """Per-map wall times and step profile of one rehearsal of ``variant``."""
    times, profile = MapTimes(), StepProfile()
    options = RehearsalOptions(
        data_dir=folder,
        map_shape=map_shape,
        time_scale=0.05,
        max_maps=3,
        live_analysis=False,
        seed=0,
        control="network" if variant == "network" else "sim",
        clock=None if variant == "network" else variant,
        speedup=SPEEDUP,
    )
    load = os.getloadavg()[0]
    rehearse(options, callbacks=[times], msg_hook=profile)
    n_maps = len(times.durations_s)
    steps = {k: v / n_maps for k, v in profile.seconds.items()}
    return {"per_map_s": statistics.fmean(times.durations_s), "steps": steps, "load": load}


def in_child(variant: str, map_shape: tuple[int, int], folder: Path) -> dict[str, Any]:
    """`one_rehearsal` in a process of its own; its result is its last output line."""
    command = [sys.executable, __file__, "--one", variant, *map(str, map_shape), str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{variant} rehearsal failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all(map_shape: tuple[int, int], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` interleaved rounds of every variant."""
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            for variant in VARIANTS:
                result = in_child(variant, map_shape, Path(tmp) / f"{variant}{k}")
                results[variant].append(result)
                print(f"## round {k} {variant}: {result['per_map_s']:.2f} s/map "
                      f"(load {result['load']:.2f} at start)", flush=True)  # fmt: skip
    return results


def print_steps(results: dict[str, list[dict[str, Any]]], n_lines: int) -> None:
    """Median seconds per map of each step, per variant, and network minus wall."""
    labels = sorted({k for runs in results.values() for r in runs for k in r["steps"]})

    def median(variant: str, label: str) -> float:
        return statistics.median(r["steps"].get(label, 0.0) for r in results[variant])

    rows = [(label, *(median(v, label) for v in VARIANTS)) for label in labels]
    rows.sort(key=lambda row: row[3] - row[2], reverse=True)
    print(f"\nwhere the time goes (median s/map over rounds; ms/line = / {n_lines} lines)")
    print(f"{'step':52s} {'event':>7s} {'wall':>7s} {'network':>8s} {'net-wall':>9s} "
          f"{'ms/line':>8s}")  # fmt: skip
    for label, event_s, wall_s, network_s in rows:
        extra_s = network_s - wall_s
        print(f"{label[:52]:52s} {event_s:7.3f} {wall_s:7.3f} {network_s:8.3f} "
              f"{extra_s:+9.3f} {1e3 * extra_s / n_lines:+8.1f}")  # fmt: skip
    totals = [sum(row[i] for row in rows) for i in (1, 2, 3)]
    print(f"{'sum of steps':52s} {totals[0]:7.3f} {totals[1]:7.3f} {totals[2]:8.3f} "
          f"{totals[2] - totals[1]:+9.3f}")  # fmt: skip


def main() -> None:
    """Print per-map wall times, the like-for-like overhead and where the time goes."""
    if sys.argv[1:2] == ["--one"]:  # a child: one rehearsal, its result as JSON
        variant, n_z, n_x, folder = sys.argv[2:6]
        print(json.dumps(one_rehearsal(variant, (int(n_z), int(n_x)), Path(folder))))
        return
    args = [int(a) for a in sys.argv[1:]]
    map_shape = (args[0], args[1]) if len(args) >= 2 else (9, 9)
    rounds = args[2] if len(args) >= 3 else 2
    load_before = os.getloadavg()
    results = run_all(map_shape, rounds)
    load_after = os.getloadavg()
    per_map = {v: [r["per_map_s"] for r in results[v]] for v in VARIANTS}
    medians = {v: statistics.median(per_map[v]) for v in VARIANTS}
    paired = [n / w - 1.0 for n, w in zip(per_map["network"], per_map["wall"], strict=True)]
    print(f"\nmap {map_shape[0]} x {map_shape[1]}, 3 maps/rehearsal, seed 0, cell at "
          f"{SPEEDUP:g}x wall, {rounds} interleaved rounds")  # fmt: skip
    for v in VARIANTS:
        runs = ", ".join(f"{s:.2f}" for s in per_map[v])
        print(f"  {v:8s}: median {medians[v]:6.2f} s/map (rounds: {runs})")
    print(f"network vs in-process wall clock (like for like): median of per-round overheads "
          f"{statistics.median(paired):+.1%} (rounds: {', '.join(f'{p:+.1%}' for p in paired)});"
          f" ratio of medians {medians['network'] / medians['wall'] - 1:+.1%}; "
          f"target <= {TARGET_OVERHEAD:.0%}")  # fmt: skip
    print(
        f"network vs in-process event clock: {medians['network'] / medians['event'] - 1:+.0%}"
        " (not like for like: exposures and moves cost no wall time in process)"
    )
    print_steps(results, map_shape[0])
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
