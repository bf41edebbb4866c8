"""Scale-out of a replay: one versus two ``dask.distributed`` worker processes.

Makes a rehearsal experiment with the twin (``opmap rehearse`` into a temporary data
directory, or reuses ``--data-dir``), serves it, and replays it (`replay_experiment`) on a
``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` for N = 1 and 2. Prints,
measured in the same run:

- the replay's wall time T1 and T2 (gathering the runs' documents, compiling the reduction,
  reducing every frame on the cluster, fitting every map in this process, writing the new
  version to Tiled) and the scaling efficiency T1 / (2 · T2) beside the 80 % target;
- the same for the reduction alone (reading, decompressing and reducing every frame of the
  maps on the cluster, `FrameReducer.packed_each`), the part that is meant to scale;
- a control: 96 independent CPU-bound tasks with no data (sorting), timed on the same
  clusters just before. Its efficiency is what the machine gives two processes at that
  moment; opmap's can only be read beside it;
- the workers' CPU time of each, and an estimate of the efficiency with two free cores
  from the 1-worker replay: its wall time not spent on the worker's CPU (gathering the
  documents, compiling, writing to Tiled, waiting) is taken as serial, the worker's CPU as
  halving on two workers. On a shared machine, where two workers do not get two cores,
  this is the figure to read beside the measured one;
- whether the two replays' products agree (every array and table equal, NaN where NaN);
- the machine's load average before and after (the machine may be shared).

The clusters are started, and opmap imported on their workers, before the clock starts
(their start-up is not the replay's); each replay connects to its cluster, ships the
compiled reduction to the workers and reduces and fits there. Two workers on a 2-core
machine leave no core for this process, which routes the documents, combines the maps and
writes the products, nor for the Tiled server: the efficiency measured here is a floor.

Usage::

    python benchmarks/bench_scale_out.py [--data-dir DIR] [--maps N [--map-shape NZ NX]]

Without ``--data-dir`` the default rehearsal (``opmap rehearse``, as ``make rehearse``: 17
maps of 49 × 49 = 40 817 frames of the 4 × 4-binned Eiger, 541 × 517; ~7 min) is made in a
temporary directory first, and replayed; the two replays then take ~4 min. ``--maps N``
makes a shorter experiment instead (N maps of ``--map-shape``, default 40 × 40, every
300 s): quicker, but its serial part (the version's ~64 nodes written to Tiled, the same for
any number of maps) weighs more. With ``--data-dir`` an existing rehearsal there is replayed
(or one is made there when the directory does not exist yet). Each replay writes one more
product version into the data directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from opmap.analysis.frames import open_frames
from opmap.analysis.geometry import analysis_geometry
from opmap.analysis.pipeline import AnalysisParameters, FrameReducer
from opmap.analysis.products import Products
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.frames import local_path
from opmap.replay import ReplayOptions, replay_experiment, stored_parameters
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

TARGET_EFFICIENCY = 0.80
_CLI = "from opmap.cli import main; raise SystemExit(main())"


def make_rehearsal(data_dir: Path, map_shape: tuple[int, int], n_maps: int | None) -> None:
    """Run ``opmap rehearse`` into ``data_dir``: the default rehearsal (``n_maps`` None), or
    ``n_maps`` maps of ``map_shape`` back to back."""
    command = [sys.executable, "-c", _CLI, "rehearse", "--data-dir", str(data_dir)]
    what = "the default rehearsal"
    if n_maps is not None:
        options = f"--binning 4 --no-pristine-map --map-interval-s 300 --max-maps {n_maps}"
        command += [*options.split(), "--map-shape", *(str(n) for n in map_shape)]
        what = f"{n_maps} maps of {map_shape[0]} × {map_shape[1]}"
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"rehearsal: {what} in {time.perf_counter() - started:.0f} s -> {data_dir}")


def timed_replay(client, experiment_id: str, scheduler: str) -> tuple[float, Products]:
    """Wall time (s) of one replay on ``scheduler`` and its products."""
    started = time.perf_counter()
    _, products = replay_experiment(
        client, experiment_id, ReplayOptions(scheduler=scheduler, progress=False)
    )
    return time.perf_counter() - started, products


def map_stacks(raw, experiment_id: str, chunk_frames: int) -> list:
    """Lazy frame stacks of the experiment's map runs, one per map (from the files)."""
    from tiled.queries import Key

    stacks = []
    for run in raw.search(Key("start.experiment_id") == experiment_id).values():
        if run.metadata["start"].get("map_index") is None:
            continue
        # the run's master file (its first resource); its frames are the Dectris dataset
        resource = next(d for n, d in run.documents() if n == "stream_resource")
        frames = open_frames(local_path(resource["uri"]))
        stacks.append(frames.to_dask(chunk_frames=chunk_frames))
    return stacks


def workers_cpu_s(watcher) -> float:
    """CPU time (s) the cluster's worker processes have used so far, summed."""
    return sum(watcher.run(_process_cpu_s).values())


def _burn_cpu(seed: int) -> float:
    """A CPU-bound task (~0.1–0.2 s on one core) with no data: the control."""
    values = np.random.default_rng(seed).random(2_000_000)
    for _ in range(6):
        values = np.sort(values)[::-1].copy()
    return float(values[0])


def timed_control(watcher, n_tasks: int = 96) -> float:
    """Wall time (s) of ``n_tasks`` independent CPU-bound tasks on the cluster."""
    started = time.perf_counter()
    watcher.gather(watcher.map(_burn_cpu, range(n_tasks), pure=False))
    return time.perf_counter() - started


def _import_opmap() -> None:
    import opmap.analysis.frames
    import opmap.analysis.pipeline  # noqa: F401


def _process_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def timed_reduction(reducer: FrameReducer, stacks: list) -> float:
    """Wall time (s) of reducing every stack on the reducer's cluster."""
    started = time.perf_counter()
    for _ in reducer.packed_each(stacks):
        pass
    return time.perf_counter() - started


def products_differ(first: Products, second: Products) -> list[str]:
    """Names of arrays, coordinates and table columns that are not equal (NaN = NaN)."""
    differ = []
    for group in ("arrays", "coords"):
        a, b = getattr(first, group), getattr(second, group)
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b or not _equal(a[name].values, b[name].values):
                differ.append(f"{group}.{name}")
    for name in sorted(set(first.tables) | set(second.tables)):
        a, b = first.tables.get(name, {}), second.tables.get(name, {})
        for column in sorted(set(a) | set(b)):
            if column not in a or column not in b or not _equal(a[column], b[column]):
                differ.append(f"tables.{name}.{column}")
    return differ


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _efficiency_line(label: str, t1: float, t2: float) -> str:
    efficiency = t1 / (2 * t2)
    verdict = "meets" if efficiency >= TARGET_EFFICIENCY else "SHORT of"
    return (
        f"{label:<24} T1 {t1:7.1f} s   T2 {t2:7.1f} s   efficiency T1/(2·T2) = "
        f"{efficiency:5.1%}  ({verdict} the ≥ {TARGET_EFFICIENCY:.0%} target)"
    )


def measure(data_dir: Path, chunk_frames: int) -> None:
    """Replay and reduce the rehearsal on 1 and 2 worker processes; print the figures."""
    from distributed import Client, LocalCluster

    with start_server_subprocess(
        OpmapSettings(data_dir=data_dir), startup_timeout_s=300
    ) as server:
        client = server.client()
        (experiment_id,) = list(client["processed"])
        _, stored = stored_parameters(client["processed"], experiment_id)
        params = AnalysisParameters.model_validate(stored["analysis_parameters"])
        poni = next((data_dir / "poni").glob("*.poni"))
        stacks = map_stacks(client["raw"], experiment_id, chunk_frames)
        n_frames = sum(int(s.shape[0]) for s in stacks)
        geometry = analysis_geometry(poni, expected_shape=tuple(stacks[0].shape[1:]))
        reduction = compile_reduction(params.reduction_plan(), geometry)
        print(
            f"experiment {experiment_id}: {len(stacks)} maps, {n_frames} frames "
            f"{stacks[0].shape[1]} × {stacks[0].shape[2]}; load {_load()}"
        )
        replay_s, reduce_s, products, cpu, control_s = {}, {}, {}, {}, {}
        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as watcher,
            ):
                address = cluster.scheduler_address
                watcher.run(_import_opmap)  # each process's imports: not the replay's work
                control_s[workers] = timed_control(watcher)
                cpu0 = workers_cpu_s(watcher)
                with FrameReducer(reduction, scheduler=address) as reducer:
                    reduce_s[workers] = timed_reduction(reducer, stacks)
                cpu1 = workers_cpu_s(watcher)
                replay_s[workers], products[workers] = timed_replay(client, experiment_id, address)
                cpu[workers] = (cpu1 - cpu0, workers_cpu_s(watcher) - cpu1)
            print(
                f"{workers} worker(s): reduction {reduce_s[workers]:.1f} s "
                f"({n_frames / reduce_s[workers]:.0f} frames/s, workers' CPU "
                f"{cpu[workers][0]:.1f} s), replay {replay_s[workers]:.1f} s (workers' CPU "
                f"{cpu[workers][1]:.1f} s); load {_load()}"
            )
    _summary(control_s, reduce_s, replay_s, cpu, products)


def _summary(control_s, reduce_s, replay_s, cpu, products) -> None:
    """Print the efficiencies, the load-free estimate and whether the products agree."""
    print(_efficiency_line("control (CPU tasks):", control_s[1], control_s[2]))
    print(_efficiency_line("reduction alone:", reduce_s[1], reduce_s[2]))
    print(_efficiency_line("replay end to end:", replay_s[1], replay_s[2]))
    # Load-free estimate: what the 1-worker replay spent outside its worker's CPU (the
    # client's gathering, compiling and writing, waits on the server) does not scale;
    # the worker's CPU (reading, decoding, reducing, fitting) halves on two workers.
    serial_s, parallel_s = replay_s[1] - cpu[1][1], cpu[1][1]
    estimate = replay_s[1] / (2 * (serial_s + parallel_s / 2))
    print(
        f"estimate with two free cores (from the 1-worker replay: serial {serial_s:.1f} s + "
        f"worker CPU {parallel_s:.1f} s / 2): efficiency ≈ {estimate:.1%}; the workers' CPU "
        f"for the same replay on 2 workers is {cpu[2][1] / cpu[1][1]:.2f} × that on 1"
    )
    differ = products_differ(products[1], products[2])
    named = len(products[1].arrays) + len(products[1].coords) + len(products[1].tables)
    print(
        f"products of the 1- and 2-worker replays: {named} arrays/coords/tables, "
        + ("all equal" if not differ else f"DIFFER in {differ}")
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--map-shape", type=int, nargs=2, default=(40, 40), metavar=("NZ", "NX"))
    parser.add_argument(
        "--maps", type=int, default=None,
        help="a shorter experiment of N maps (default: the default rehearsal, 17 maps)",
    )  # fmt: skip
    parser.add_argument("--chunk-frames", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opmap-scale-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "rehearsal"
        if not data_dir.exists():
            make_rehearsal(data_dir, tuple(args.map_shape), args.maps)
        measure(data_dir, args.chunk_frames)


if __name__ == "__main__":
    main()
