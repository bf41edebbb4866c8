"""Wall time of one simulated fly map: bare, with the TiledWriter, and with the live analysis.

Prints the median over repeats of each configuration (wall time until the RunEngine returns,
i.e. until the next map may start) and the overheads relative to the bare map (targets:
TiledWriter <= 5 %, live analysis <= 5 %), the live analysis's lag (maps still to analyse
when the map ends) and the data written. Validation and map analysis run in worker threads
as in the rehearsal, except in the "validation inline" configuration.

Usage: ``python benchmarks/bench_map_overhead.py [--shape NZ NX] [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bluesky import RunEngine
from ophyd_async.core import init_devices

from opmap.analysis.geometry import DetectorGeometry
from opmap.beamline import BeamlineConfig, build_beamline
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.plans import MapGeometry, fly_map
from opmap.rehearse import analysis_parameters_for_twin
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.twin.forward import DetectorMask


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _timed_map(
    RE: RunEngine, beamline, layout, label: str, geometry: MapGeometry, data_dir: Path
) -> float:
    """Wall time (s) of one map with the subscribers ``label`` names, until the next may start."""
    tokens, writer, live = [], None, None
    if label != "bare":
        writer = ValidatedTiledWriter(
            layout["raw"],
            backup_directory=data_dir / "b",
            background=label != "writer, validation inline",
        )
        tokens.append(RE.subscribe(writer))
    if label == "writer + live analysis":  # as the rehearsal runs it
        ai = beamline.integrator
        live = LiveAnalysis(
            analysis_parameters_for_twin(beamline.twin.config),
            DetectorGeometry.from_integrator(ai, mask=DetectorMask().analysis_mask(ai)),
            background=True,
        )
        tokens.append(RE.subscribe(GuardedCallback(live)))
    start = time.perf_counter()
    RE(fly_map(beamline.eiger, beamline.stage.x, beamline.stage.z, geometry))
    wall_s = time.perf_counter() - start
    lag = live.maps_pending if live is not None else 0
    if writer is not None:
        writer.wait()
    if live is not None:
        live.finish()
        print(f"  (live analysis {lag} map behind when the map ended)")
    for token in tokens:
        RE.unsubscribe(token)
    return wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(49, 49))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_z, n_x = args.shape
    geometry = MapGeometry(
        z_start_um=-3.0, z_count=n_z, x_start_um=200.0, x_stop_um=200.0 + 33 * n_x, x_count=n_x
    )
    data_dir = Path(tempfile.mkdtemp(prefix="opmap-bench-"))
    settings = OpmapSettings(data_dir=data_dir)
    RE = RunEngine({})
    with init_devices():
        beamline = build_beamline(BeamlineConfig(data_dir=data_dir))
    ai = beamline.integrator
    walls: dict[str, list[float]] = {
        "bare": [],
        "writer, validation inline": [],
        "writer, validation in thread": [],
        "writer + live analysis": [],
    }
    with start_server_subprocess(settings) as server:
        layout = ensure_layout(server.client())
        for _ in range(args.repeats):
            for label in walls:
                walls[label].append(_timed_map(RE, beamline, layout, label, geometry, data_dir))
    bare = statistics.median(walls["bare"])
    print(f"map {n_z} x {n_x} on the {ai.detector.shape} detector, {args.repeats} repeats")
    for label, values in walls.items():
        median = statistics.median(values)
        overhead = 100 * (median / bare - 1)
        print(f"  {label:24s} median {median:6.2f} s  overhead {overhead:+5.1f} %")
    n_maps = len(walls) * args.repeats
    print(f"  detector data: {_folder_mb(data_dir / 'detector') / n_maps:.1f} MB/map")


if __name__ == "__main__":
    main()
