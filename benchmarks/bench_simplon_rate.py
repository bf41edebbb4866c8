"""Frame rate the SIMPLON path sustains in wall time, the twin rendering every frame
(issue 9 target: >= 20 frames/s, the paper's line rate), and what limits it.

One line (one series of ``n_frames`` frames: prepare = arm, kickoff = trigger, complete =
the series written) at decreasing exposures, on two paths interleaved (A, B, A, B):

- ``simplon``: `SimplonEiger` -> HTTP -> ``opmap sim-beamline`` (a child process; the
  DCU's detector in wall time, the twin rendered for every frame and written to Dectris
  files: what ``opmap rehearse --control network`` drives);
- ``in-process``: the simulated Eiger in this process on the ``"wall"`` clock
  (`opmap.beamline.SimConfig`): the same rendering and files, no HTTP, no second process.

Per exposure: the series' wall time from kickoff to complete, frames/s sustained
(``n_frames`` / that), and the time beyond the exposures (``n_frames × frame time``) that
makes frames late. Beside them, measured in this run: the forward model's frame rate and
CPU per frame on one thread (`bench_render`), the file writing per frame (in process), and
the HTTP round trip of a SIMPLON status read.

``.venv/bin/python benchmarks/bench_simplon_rate.py [n_frames [rounds]]`` (default 200 frames).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_render import frames_per_s
from ophyd_async.core import StaticPathProvider, TriggerInfo, UUIDFilenameProvider

from opmap.beamline import BeamlineConfig, SimConfig, build_beamline
from opmap.devices.sim import DectrisWriter
from opmap.devices.simplon import SimplonEiger
from opmap.rehearse import sim_beamline_process

TARGET_FPS = 20.0
EXPOSURES_S = (0.1, 0.05, 0.04, 0.03, 0.02, 0.01)
#: A line is "late" when its frames arrive this much slower than they are exposed.
LATE_FRACTION = 0.05


class WriteTimer:
    """Wall seconds in `DectrisWriter.write_many` (the in-process files), per frame."""

    def __init__(self) -> None:
        self.seconds, self.frames = 0.0, 0
        original = DectrisWriter.write_many

        def timed(writer: Any, frames: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            original(writer, frames, **kwargs)
            self.seconds += time.perf_counter() - start
            self.frames += len(frames)

        DectrisWriter.write_many = timed  # this benchmark's process only


async def one_line(detector: Any, n_frames: int, exposure_s: float) -> dict[str, float]:
    """Arm, trigger and wait for one series; wall seconds of each step."""
    start = time.perf_counter()
    await detector.prepare(TriggerInfo(number_of_events=n_frames, livetime=exposure_s))
    armed = time.perf_counter()
    await detector.kickoff()
    await detector.complete()
    done = time.perf_counter()
    return {"arm_s": armed - start, "series_s": done - armed}


async def http_round_trip_ms(base: str, n: int = 50) -> float:
    """Median wall time (ms) of a SIMPLON status read."""
    url = f"{base}/detector/api/1.8.0/status/state"
    samples = []
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            start = time.perf_counter()
            (await client.get(url)).raise_for_status()
            samples.append(1e3 * (time.perf_counter() - start))
    return statistics.median(samples)


async def measure(base: str, folder: Path, detector_dir: Path, n_frames: int, rounds: int):
    """Interleaved lines of both paths at every exposure; results by (path, exposure)."""
    simplon = SimplonEiger(base, StaticPathProvider(UUIDFilenameProvider(), detector_dir))
    simplon.set_name("eiger")
    config = BeamlineConfig(data_dir=folder, sim=SimConfig(clock_mode="wall", speedup=20.0))
    local = build_beamline(config).eiger
    paths = {"simplon": simplon, "in-process": local}
    for detector in paths.values():
        await detector.connect()
        await detector.stage()
        await one_line(detector, 5, 0.05)  # warm-up: files, threads, connections
    results: dict[tuple[str, float], list[dict[str, float]]] = defaultdict(list)
    for _ in range(rounds):
        for exposure_s in EXPOSURES_S:
            for name, detector in paths.items():
                results[(name, exposure_s)].append(await one_line(detector, n_frames, exposure_s))
    http_ms = await http_round_trip_ms(base)
    for detector in paths.values():
        await detector.unstage()
    await simplon.aclose()
    return results, http_ms, local


def render_rate(local: Any) -> tuple[float, float]:
    """The in-process Eiger's forward model: frames/s and CPU ms per frame, one thread."""
    renderer = local.acquisition.renderer
    rng = np.random.default_rng(0)
    runs = [frames_per_s(renderer, 50, rng) for _ in range(3)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def print_lines(results: dict, n_frames: int) -> None:
    """Per path and exposure: median series time, frames/s, time beyond the exposures."""
    print(f"\none line of {n_frames} frames (4x4-binned Eiger 4M, twin rendered), medians:")
    print(f"{'path':11s} {'exposure':>8s} {'nominal':>8s} {'arm':>7s} {'series':>8s} "
          f"{'fps':>7s} {'late':>7s} {'late/frame':>10s}")  # fmt: skip
    for (name, exposure_s), runs in sorted(results.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        series_s = statistics.median(r["series_s"] for r in runs)
        arm_s = statistics.median(r["arm_s"] for r in runs)
        late_s = series_s - n_frames * exposure_s
        flag = " LATE" if late_s > LATE_FRACTION * n_frames * exposure_s else ""
        late_ms = 1e3 * late_s / n_frames
        print(f"{name:11s} {exposure_s:8.3f} {1 / exposure_s:8.1f} {arm_s:7.3f} {series_s:8.2f} "
              f"{n_frames / series_s:7.1f} {late_s:7.2f} {late_ms:8.1f}ms{flag}")  # fmt: skip


def print_sustained(results: dict, n_frames: int) -> None:
    """The best sustained rate of each path beside the target, and the HTTP share."""
    for name in ("simplon", "in-process"):
        rates = {
            e: n_frames / statistics.median(r["series_s"] for r in results[(name, e)])
            for e in EXPOSURES_S
        }
        best_e = max(rates, key=rates.get)
        print(f"{name:11s}: sustains at most {rates[best_e]:.1f} frames/s (at {best_e} s "
              f"exposure); target >= {TARGET_FPS:g}")  # fmt: skip
    ratios = [
        statistics.median(r["series_s"] for r in results[("simplon", e)])
        / statistics.median(r["series_s"] for r in results[("in-process", e)])
        for e in EXPOSURES_S
    ]
    listed = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"simplon / in-process series time per exposure {EXPOSURES_S}: {listed}")


def main() -> None:
    """Print the sustained frame rates, and the render, write and HTTP costs."""
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    load_before = os.getloadavg()
    writes = WriteTimer()
    with tempfile.TemporaryDirectory() as tmp:
        folder, detector_dir = Path(tmp), Path(tmp) / "dcu"
        detector_dir.mkdir()
        with sim_beamline_process(detector_dir, folder / "logs", speedup=20.0, binning=4,
                                  seed=0) as endpoint:  # fmt: skip
            results, http_ms, local = asyncio.run(
                measure(endpoint.http_url, folder, detector_dir, n_frames, rounds)
            )
        render_fps, render_cpu_ms = render_rate(local)
    load_after = os.getloadavg()
    print_lines(results, n_frames)
    print()
    print_sustained(results, n_frames)
    print(f"forward model, one thread: {render_fps:.1f} frames/s, CPU {render_cpu_ms:.1f} ms "
          f"per frame; {os.cpu_count()} cores")  # fmt: skip
    print(f"file writing (in process): {1e3 * writes.seconds / max(writes.frames, 1):.2f} ms per "
          f"frame over {writes.frames} frames")  # fmt: skip
    print(f"SIMPLON status read over HTTP: {http_ms:.2f} ms median round trip")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
