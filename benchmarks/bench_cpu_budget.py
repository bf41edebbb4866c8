"""CPU budget of the writer and the live analysis per frame, and the document path's wall cost.

Runs simulated fly maps with a detector that does not render (see below), three ways:
``bare`` (nothing subscribed), ``writer`` (the `ValidatedTiledWriter` document path as the
rehearsal subscribes it: spooled, validated in its background thread) and ``writer + live
analysis`` (plus `LiveAnalysis` writing its products to Tiled, in its background thread,
as the rehearsal runs it). For each map it measures the wall time of the map (until the
RunEngine returns: the next map may start) and the CPU time this process spends from the
map's start until the writer and the live analysis have finished its work
(``time.process_time``: every thread, including threads that ended), and the Tiled
server's CPU (its own process) over the same span. Printed, each beside its target, from
medians over ``--repeats``:

1. **CPU per full-4M frame** of the writer plus the live analysis, against 12.5 ms
   (≤ 25 % of one core at the paper's 20 frames/s). The writer's share is the CPU of
   ``writer`` minus ``bare``, the live analysis's share that of ``writer + live
   analysis`` minus ``writer``, each divided by the frames of the map.
2. **Wall time added by the document path**: ``writer`` over ``bare``, against ≤ 5 %.

Per full-4M frame, when the frames are binned. With ``--binning 1`` the detector is the
full Eiger 4M (2167 × 2070) and nothing is scaled. With binning b a frame holds
(2167 × 2070) / (⌈2167/b⌉ × ⌈2070/b⌉) times fewer pixels (16.04 for b = 4, the pixel
ratio). The live analysis's share is split in two: its frame work (reading, decompressing
and reducing a frame, which grows with the frame's pixels) is measured alone on one
thread on the last map's file with the live analysis's own compiled reduction, and
multiplied by the pixel ratio; the rest (the per-map fits, one per map pixel, and the
product writes) is the same for any detector size and is not scaled. The writer's share
is not scaled either: its documents (``stream_resource``, ``stream_datum``, events) are
the same for any frame size — the frames stay in the detector's files. The upper bound
with the whole live share scaled is printed too. The scaling is a lower estimate of the
frame work: measured on the same machine, a full-4M frame cost 7.25 ms to read, decode
and reduce, against 16.04 × 0.23–0.26 ms = 3.7–4.2 ms scaled from binned frames (the
cost does not grow with the pixel count alone; decoding and the reduction's share were
not separated). Run ``--binning 1`` (a small map: the 16 cached frames are rendered
at full size first) for the figure without scaling. The server's CPU is printed
separately; it is another process, but on the same machine it competes for the same
cores.

The detector does not render: the simulated Eiger's renderer (`SimEiger` takes it as a
collaborator) is wrapped, in this script only, by `CachedRenderer`, which renders the
first few frames with the twin and then hands them out again in turn. The frames are
still real twin frames (rings, spots, noise), written and compressed by the simulated
Eiger's file writer like any other; only the forward model's cost is gone, so the
detector does not compete for the cores the document path and the live analysis use.
The writer's compression of every frame remains, in all three configurations (it is the
detector's work: a real Eiger compresses on its own hardware).

The clock runs in real time by default (``--clock real-time``): a map takes the
detector's frame time (50 ms per frame at 20 frames/s) plus the stage's turn-arounds, as
at the beamline, and the document path adds wall time only when it holds the RunEngine
up. ``--clock event-driven`` shows the other extreme, the map as fast as the software
runs.

Usage: ``python benchmarks/bench_cpu_budget.py [--shape NZ NX] [--binning B] [--repeats N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from bluesky import RunEngine
from ophyd_async.core import init_devices

from opmap.analysis.frames import open_frames
from opmap.analysis.geometry import DetectorGeometry
from opmap.beamline import BeamlineConfig, SimConfig, build_beamline
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.plans import MapGeometry, fly_map
from opmap.rehearse import analysis_parameters_for_twin
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.twin.forward import DetectorMask

FULL_4M_PIXELS = 2167 * 2070
BUDGET_MS_PER_FRAME = 12.5  # 25 % of one core at 20 frames/s
WALL_TARGET = 0.05
CONFIGS = ("bare", "writer", "writer + live analysis")


@dataclass
class CachedRenderer:
    """Renders the first ``distinct`` frames with ``renderer``, then hands them out in turn."""

    renderer: Any
    distinct: int = 16
    frames: list[np.ndarray] = field(default_factory=list)
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def render(self, scene: Any, *, exposure_s: float, rng: np.random.Generator) -> np.ndarray:
        """A twin frame: rendered while the cache fills, else the next cached one."""
        with self.lock:
            filling = len(self.frames) < self.distinct
        if filling:
            frame = np.asarray(self.renderer.render(scene, exposure_s=exposure_s, rng=rng))
            with self.lock:
                self.frames.append(frame)
            return frame
        with self.lock:
            self.served += 1
            return self.frames[self.served % len(self.frames)]


@dataclass
class Sample:
    """One map: wall time, this process's CPU, the server's CPU (s), CPU by thread name."""

    wall_s: float
    cpu_s: float
    server_cpu_s: float
    threads_s: dict[str, float]


def _thread_cpu_s() -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def _thread_names() -> dict[int, str]:
    return {t.native_id: t.name.rstrip("_0123456789-") for t in threading.enumerate()}


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def live_analysis(beamline, layout) -> LiveAnalysis:
    """The live analysis as the rehearsal runs it (products to Tiled, a background thread).

    One for the whole session, as in the rehearsal: its reduction is compiled once, on the
    warm-up map.
    """
    ai = beamline.integrator
    return LiveAnalysis(
        analysis_parameters_for_twin(beamline.twin.config),
        DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai)),
        processed=layout["processed"],
        background=True,
    )


def run_map(RE, beamline, layout, label, geometry, data_dir, server, live) -> Sample:
    """One map with the subscribers ``label`` names; CPU until their work is done."""
    tokens, writer = [], None
    if label != "bare":
        writer = ValidatedTiledWriter(  # as the rehearsal subscribes it
            layout["raw"],
            spool_directory=data_dir / "spool",
            background=True,
            try_reading=label == "writer",  # with the live analysis, it reads every frame
        )
        tokens.append(RE.subscribe(writer))
    if label == "writer + live analysis":
        tokens.append(RE.subscribe(GuardedCallback(live)))
    server_process = psutil.Process(server.process.pid)
    cpu0, server0, threads0 = time.process_time(), _cpu_s(server_process), _thread_cpu_s()
    start = time.perf_counter()
    RE(fly_map(beamline.eiger, beamline.stage.x, beamline.stage.z, geometry))
    wall_s = time.perf_counter() - start
    if writer is not None:
        writer.wait()
    live.wait()
    cpu_s, server_s = time.process_time() - cpu0, _cpu_s(server_process) - server0
    threads1, names = _thread_cpu_s(), _thread_names()
    for token in tokens:
        RE.unsubscribe(token)
    by_name: dict[str, float] = {}
    for tid, seconds in threads1.items():
        name = names.get(tid, "other")
        by_name[name] = by_name.get(name, 0.0) + seconds - threads0.get(tid, 0.0)
    return Sample(wall_s, cpu_s, server_s, by_name)


def frame_work_ms(data_dir: Path, live: LiveAnalysis, start_doc: dict) -> float:
    """CPU (ms, one thread) to read, decompress and reduce one frame of the last map.

    The live analysis's work that grows with the frame's pixels; measured on the last
    map's file with the live analysis's own compiled reduction.
    """
    master = max((data_dir / "detector").glob("*_master.h5"), key=lambda p: p.stat().st_mtime)
    source = open_frames(master)
    reduction = live.reduction_for(start_doc)
    started = time.thread_time()
    for lo in range(0, source.n_frames, 16):
        reduction.reduce_packed(source.read(lo, min(lo + 16, source.n_frames)), threads=1)
    return 1e3 * (time.thread_time() - started) / source.n_frames


def _median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(s, attribute) for s in samples)


def report(
    samples: dict[str, list[Sample]], n_frames: int, pixel_ratio: float, frame_ms: float
) -> None:
    """Print the CPU budget and the document path's wall overhead beside their targets."""
    cpu = {label: _median(s, "cpu_s") for label, s in samples.items()}
    server = {label: _median(s, "server_cpu_s") for label, s in samples.items()}
    wall = {label: _median(s, "wall_s") for label, s in samples.items()}
    for label in CONFIGS:
        print(
            f"  {label:24s} wall {wall[label]:7.2f} s   CPU here {cpu[label]:7.2f} s   "
            f"server CPU {server[label]:6.2f} s"
        )
    per_frame_ms = {k: 1e3 * v / n_frames for k, v in cpu.items()}
    writer_ms = per_frame_ms["writer"] - per_frame_ms["bare"]
    live_ms = per_frame_ms["writer + live analysis"] - per_frame_ms["writer"]
    per_map_ms = max(live_ms - frame_ms, 0.0)  # fits, products: not per detector pixel
    full_ms = writer_ms + per_map_ms + frame_ms * pixel_ratio
    upper_ms = writer_ms + live_ms * pixel_ratio
    server_ms = 1e3 * (server["writer + live analysis"] - server["bare"]) / n_frames
    print(
        f"CPU per frame, this process: writer {writer_ms:.2f} ms, live analysis {live_ms:.2f} "
        f"ms (of which read + decompress + reduce {frame_ms:.2f} ms, measured alone)"
    )
    verdict = "meets" if full_ms <= BUDGET_MS_PER_FRAME else "OVER"
    print(
        f"writer + live analysis CPU per full-4M frame: {full_ms:.2f} ms = writer "
        f"{writer_ms:.2f} + per-map work {per_map_ms:.2f} + frame work {frame_ms:.2f} × "
        f"{pixel_ratio:.2f} (pixel ratio)   budget {BUDGET_MS_PER_FRAME} ms "
        f"({full_ms / BUDGET_MS_PER_FRAME:.0%} of it: {verdict} the budget); upper bound "
        f"(all live work scaled) {upper_ms:.2f} ms"
    )
    with_server = full_ms + server_ms
    print(
        f"  + Tiled server CPU {server_ms:.2f} ms/frame (another process) = {with_server:.2f} ms "
        f"({with_server / BUDGET_MS_PER_FRAME:.0%} of the budget)"
    )
    added = wall["writer"] / wall["bare"] - 1
    verdict = "meets" if added <= WALL_TARGET else "OVER"
    print(
        f"document path (TiledWriter) adds {added:+.1%} to the map's wall time "
        f"({wall['writer']:.2f} s vs bare {wall['bare']:.2f} s)   target ≤ {WALL_TARGET:.0%} "
        f"({verdict} the target)"
    )
    threads = samples["writer + live analysis"][-1].threads_s
    busiest = sorted(threads.items(), key=lambda item: -item[1])[:6]
    print(
        "CPU by thread, last writer + live map: "
        + ", ".join(f"{name} {1e3 * s / n_frames:.2f} ms/frame" for name, s in busiest)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(20, 20))
    parser.add_argument("--binning", type=int, choices=(1, 2, 4), default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clock", choices=("real-time", "event-driven"), default="real-time")
    args = parser.parse_args()
    n_z, n_x = args.shape
    geometry = MapGeometry(
        z_start_um=-3.0, z_count=n_z, x_start_um=200.0, x_stop_um=200.0 + 33 * n_x, x_count=n_x
    )
    data_dir = Path(tempfile.mkdtemp(prefix="opmap-cpu-"))
    sim = SimConfig(binning=args.binning, clock_mode=args.clock)
    RE = RunEngine({})
    with init_devices():
        beamline = build_beamline(BeamlineConfig(data_dir=data_dir, sim=sim))
    acquisition = beamline.eiger.acquisition
    acquisition.renderer = CachedRenderer(acquisition.renderer)
    shape = beamline.integrator.detector.shape
    pixel_ratio = FULL_4M_PIXELS / (shape[0] * shape[1])
    print(f"load before: {_load()}")
    samples: dict[str, list[Sample]] = {label: [] for label in CONFIGS}
    with start_server_subprocess(OpmapSettings(data_dir=data_dir)) as server:
        layout = ensure_layout(server.client())
        live = live_analysis(beamline, layout)
        measure = (RE, beamline, layout)
        run_map(*measure, CONFIGS[-1], geometry, data_dir, server, live)  # warm-up
        for _ in range(args.repeats):
            for label in CONFIGS:
                samples[label].append(run_map(*measure, label, geometry, data_dir, server, live))
        frame_ms = frame_work_ms(data_dir, live, {})
        live.finish()
    print(
        f"map {n_z} × {n_x} ({n_z * n_x} frames) on the {shape} detector, clock {args.clock}, "
        f"{args.repeats} repeat(s), medians; load after: {_load()}"
    )
    report(samples, n_z * n_x, pixel_ratio, frame_ms)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


if __name__ == "__main__":
    main()
