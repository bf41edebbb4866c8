"""What FastAPI's per-request dependency re-analysis costs the opmap server (a probe).

With any entry in ``app.dependency_overrides`` (Tiled sets one for its settings), FastAPI
0.165 rebuilds the dependency tree of every route on every request (``get_dependant``,
``inspect.signature`` for each dependency). This probe measures a keyed metadata request
(depth 1) against the served configuration in-process, once as served and once, in a
second interpreter, with ``get_dependant`` memoised (what FastAPI's open fix does: reuse
the dependants of unchanged callables). The memoised run is a measurement only; opmap
does not patch FastAPI.

Run: ``.venv/bin/python benchmarks/probe_dependency_overrides.py [n_requests]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def memoise_get_dependant() -> None:
    """Cache ``fastapi.dependencies.utils.get_dependant`` by its arguments (probe only)."""
    import fastapi.dependencies.utils as utils

    original = utils.get_dependant
    cache: dict[Any, Any] = {}

    def get_dependant(**kwargs: Any) -> Any:
        key = tuple(
            (name, tuple(value) if isinstance(value, list) else value)
            for name, value in sorted(kwargs.items())
        )
        if key not in cache:
            cache[key] = original(**kwargs)
        return cache[key]

    utils.get_dependant = get_dependant


def measure(n_requests: int) -> tuple[float, float]:
    """p50 wall and process CPU (ms) of a keyed metadata request to an in-process server."""
    import httpx
    import uvicorn
    from tiled.client import from_uri

    from opmap.service import (
        app_from_config_file,
        ensure_api_key,
        free_port,
        write_server_config,
    )
    from opmap.settings import OpmapSettings

    with tempfile.TemporaryDirectory() as folder:
        settings = OpmapSettings(data_dir=Path(folder), port=free_port())
        app = app_from_config_file(write_server_config(settings))
        key = ensure_api_key(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        from_uri(settings.url, api_key=key).create_container("processed")
        url = f"{settings.url}/api/v1/metadata/processed"
        headers = {"Authorization": f"Apikey {key}"}
        with httpx.Client() as http:
            for _ in range(20):
                http.get(url, headers=headers).raise_for_status()
            walls, cpu_started = [], time.process_time()
            for _ in range(n_requests):
                started = time.perf_counter()
                http.get(url, headers=headers).raise_for_status()
                walls.append(time.perf_counter() - started)
            cpu = (time.process_time() - cpu_started) / n_requests
        server.should_exit = True
        thread.join(10)
    return 1e3 * float(np.median(walls)), 1e3 * cpu


def main(n_requests: int = 200) -> None:
    """Run both variants, alternating twice, and print their figures and ratio."""
    figures: dict[str, list[tuple[float, float]]] = {"as served": [], "memoised": []}
    for _ in range(2):
        for variant in figures:
            command = [sys.executable, __file__, "--variant", variant, str(n_requests)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            wall, cpu = (float(x) for x in out.split()[-2:])
            figures[variant].append((wall, cpu))
    print(f"keyed metadata request (depth 1), in-process server + client, {n_requests} requests")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for variant, runs in figures.items():
        walls, cpus = zip(*runs, strict=True)
        print(f"  {variant:10s} p50 {np.mean(walls):6.2f} ms  process CPU {np.mean(cpus):6.2f} ms")
    served = np.mean([cpu for _, cpu in figures["as served"]])
    memoised = np.mean([cpu for _, cpu in figures["memoised"]])
    print(f"  re-analysis: {served - memoised:.2f} ms CPU per request ({memoised / served:.2f} x)")


if __name__ == "__main__":
    if "--variant" in sys.argv:
        variant, n = sys.argv[sys.argv.index("--variant") + 1], int(sys.argv[-1])
        if variant == "memoised":
            memoise_get_dependant()
        print(*measure(n))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
