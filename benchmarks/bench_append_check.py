"""Latency cost of the append-only check on the writer's own requests, over HTTP.

Run: ``.venv/bin/python benchmarks/bench_append_check.py [n_requests]``. Starts two real
server processes on one machine: the served configuration, and the same without the
append-only check (`start_server_subprocess(append_only=False)`). On each, the writer key
grows a c map ``processed/exp/v1/c_perp`` of (1, 49, 49) float32 maps the way the product
writer does (``PATCH ?extend=true`` at the extent), commits each map in the version's
metadata (a merge patch of the growing commit record), and restates a data source
(``PUT /data_source`` with a patch, the request bluesky's TiledWriter makes per frame),
alternating request by request between the servers (which goes first alternates too) so
that both see the same load (default 200 requests of each kind per server). Prints p50
and p90 of each request with and without the check, and the median of the paired
differences (with minus without), which is robust to the load drifting.

Figures depend on the machine and its load (printed).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

MAP = np.zeros((1, 49, 49), dtype=np.float32)
KINDS = ("PATCH array extend", "PATCH metadata commit", "PUT data_source patch")


class _Writer:
    """The writer key's three growing requests on one server."""

    def __init__(self, server: Any) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=f"{server.url}/api/v1/", headers={"Authorization": f"Apikey {server.api_key}"}
        )
        client = server.client()
        version = client.create_container("processed").create_container("exp")
        empty = {"maps": 0, "rows": {}, "names": [], "grown": []}  # as TiledProductWriter
        version = version.create_container(
            "v1", metadata={"committed": empty}, specs=["xarray_dataset"]
        )
        version.write_array(MAP, key="c_perp")
        version.write_array(np.zeros(1), key="time_s")
        self.maps = 1
        self.source = self._data_source("processed/exp/v1/time_s")

    def _data_source(self, path: str) -> dict:
        info = self.http.get(f"metadata/{path}", params={"include_data_sources": True}).json()
        return info["data"]["attributes"]["data_sources"][0]

    def send(self, kind: str) -> float:
        start = time.perf_counter()
        if kind == KINDS[0]:
            params = {"offset": f"{self.maps},0,0", "shape": "1,49,49", "extend": "true"}
            response = self.http.patch(
                "array/full/processed/exp/v1/c_perp",
                params=params,
                content=MAP.tobytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            self.maps += 1
        elif kind == KINDS[1]:
            record = {"maps": self.maps, "rows": {}, "names": ["c_perp"], "grown": ["c_perp"]}
            body = {
                "metadata": {"committed": record},
                "specs": None,
                "content-type": "application/merge-patch+json",
            }
            response = self.http.patch("metadata/processed/exp/v1", json=body)
        else:
            response = self.http.put(  # same structure again: the check reads and compares
                "data_source/processed/exp/v1/time_s",
                params={"patch_shape": "1", "patch_offset": "0"},
                json={"data_source": self.source},
            )
        elapsed_ms = 1e3 * (time.perf_counter() - start)
        assert response.status_code == 200, response.text
        return elapsed_ms


def main(n_requests: int) -> None:
    warnings.simplefilter("ignore")
    from opmap.service import start_server_subprocess
    from opmap.settings import OpmapSettings

    root = Path(tempfile.mkdtemp())
    servers = {
        "with check": start_server_subprocess(
            OpmapSettings(data_dir=root / "on"), startup_timeout_s=300
        ),
        "without": start_server_subprocess(
            OpmapSettings(data_dir=root / "off"), startup_timeout_s=300, append_only=False
        ),
    }
    try:
        writers = {mode: _Writer(server) for mode, server in servers.items()}
        latency = {(mode, kind): [] for mode in servers for kind in KINDS}
        modes = list(writers)
        for index in range(n_requests):
            for kind in KINDS:
                for mode in modes if index % 2 else modes[::-1]:
                    latency[mode, kind].append(writers[mode].send(kind))
    finally:
        for server in servers.values():
            server.stop()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {n_requests} each")
    for kind in KINDS:
        p50 = {mode: float(np.median(latency[mode, kind])) for mode in servers}
        p90 = {mode: float(np.percentile(latency[mode, kind], 90)) for mode in servers}
        paired = np.subtract(latency["with check", kind], latency["without", kind])
        print(
            f"{kind:>24}: p50 {p50['with check']:.2f} vs {p50['without']:.2f} ms, "
            f"p90 {p90['with check']:.2f} vs {p90['without']:.2f} ms, "
            f"paired difference median {np.median(paired):+.2f} ms"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
