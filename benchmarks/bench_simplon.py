"""Frame rate of the SIMPLON path (SimplonEiger -> HTTP -> opmap sim-dcu) vs the in-process sim.

Both render the same twin (4x4-binned Eiger 4M, event-driven clock, so exposures cost no
wall time) into the same Dectris files; the difference is the HTTP control path, the
series bookkeeping and the second process. Prints frames/s of both in one run:
``.venv/bin/python benchmarks/bench_simplon.py [n_frames] [n_series]``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from ophyd_async.core import StaticPathProvider, TriggerInfo, UUIDFilenameProvider

from opmap.beamline import BeamlineConfig, build_beamline
from opmap.devices.simplon import SimplonEiger


async def series(detector, n_frames: int, n_series: int) -> float:
    """Seconds for ``n_series`` prepare/kickoff/complete of ``n_frames`` frames each."""
    await detector.stage()
    start = time.perf_counter()
    for _ in range(n_series):
        await detector.prepare(TriggerInfo(number_of_events=n_frames, livetime=0.01))
        await detector.kickoff()
        await detector.complete()
    elapsed = time.perf_counter() - start
    await detector.unstage()
    return elapsed


async def in_process(directory: Path, n_frames: int, n_series: int) -> float:
    """The simulated Eiger of a sim beamline, in this process."""
    beamline = build_beamline(BeamlineConfig(data_dir=directory))
    await beamline.eiger.connect()
    await series(beamline.eiger, 5, 1)  # warm-up
    return await series(beamline.eiger, n_frames, n_series)


def start_dcu(directory: Path) -> tuple[subprocess.Popen, str]:
    """``opmap sim-dcu`` on a free port, initialized."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opmap = Path(sys.executable).with_name("opmap")
    command = [str(opmap), "sim-dcu", "--port", str(port), "--data-dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.put(f"{base}/detector/api/1.8.0/command/initialize", timeout=5)
            return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError("sim-dcu did not start in 120 s")


async def over_http(base: str, directory: Path, n_frames: int, n_series: int) -> float:
    """The SIMPLON Eiger against sim-dcu."""
    eiger = SimplonEiger(base, StaticPathProvider(UUIDFilenameProvider(), directory))
    eiger.set_name("eiger")
    await eiger.connect()
    await series(eiger, 5, 1)  # warm-up
    elapsed = await series(eiger, n_frames, n_series)
    await eiger.aclose()
    return elapsed


def main() -> None:
    """Print frames/s of both paths."""
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    n_series = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    total = n_frames * n_series
    with tempfile.TemporaryDirectory() as tmp:
        local_s = asyncio.run(in_process(Path(tmp), n_frames, n_series))
        process, base = start_dcu(Path(tmp))
        try:
            http_s = asyncio.run(over_http(base, Path(tmp), n_frames, n_series))
        finally:
            process.terminate()
            process.wait(timeout=20)
    print(f"{n_series} series x {n_frames} frames (541 x 517, event-driven clock)")
    print(f"in-process SimEiger : {total / local_s:7.1f} frames/s ({local_s:.2f} s)")
    print(f"SIMPLON -> sim-dcu  : {total / http_s:7.1f} frames/s ({http_s:.2f} s)")


if __name__ == "__main__":
    main()
