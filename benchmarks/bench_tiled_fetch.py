"""Latency of fetching one c map from the opmap Tiled server (Python client and plain HTTP).

Run: ``.venv/bin/python benchmarks/bench_tiled_fetch.py [n_fetches]``. Starts a real server
subprocess in a temporary directory and writes a (100, 49, 49) float32 c-map array grown map
by map, as the live analysis writes it (one chunk per map), plus the same array written in
one go (a single ~1 MB chunk). Fetches one (49, 49) map slice ``n_fetches`` times (default
50) through each path and prints p50 / p90 latency in ms (target p50 <= 50 ms). The metadata
request of the same node (no array data) is timed too: the server's per-request floor.
Figures depend on the machine and its load; on a shared machine they are pessimistic.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from opmap.analysis.products import LabelledArray
from opmap.callbacks.tiled_products import TiledProductWriter
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.remote import array_info, fetch_array
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

N_MAPS, N_Z, N_X = 100, 49, 49
PATH = "processed/bench/v1/c_perp"
TARGET_P50_MS = 50.0


def latencies_ms(fetch: Callable[[int], object], n: int) -> np.ndarray:
    """Wall time of ``fetch(map_index)`` for ``n`` different maps, in ms (one warm-up call)."""
    fetch(0)
    times = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        result = fetch((7 * i) % N_MAPS)
        times[i] = (time.perf_counter() - start) * 1e3
        assert not isinstance(result, np.ndarray) or result.shape == (N_Z, N_X)
    return times


def main(n_fetches: int = 50) -> dict[str, tuple[float, float]]:
    """Run the benchmark; return ``{path: (p50_ms, p90_ms)}``."""
    if n_fetches < 1:
        raise ValueError(f"n_fetches must be >= 1; got {n_fetches}")
    rng = np.random.default_rng(0)
    c_maps = (14.05 + 0.3 * rng.random((N_MAPS, N_Z, N_X))).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        settings = OpmapSettings(data_dir=Path(folder))
        with start_server_subprocess(settings) as server, httpx.Client() as http:
            writer = TiledProductWriter(ensure_layout(server.client())["processed"], "bench")
            for index in range(N_MAPS):
                c = LabelledArray(c_maps[index : index + 1], ("map", "z", "x"), "angstrom")
                writer.append_map({"c_perp": c})
            node = server.client()[PATH]
            # The same array written in one go is a single ~1 MB chunk: compare the cost.
            one_chunk = writer.container.write_array(c_maps, key="c_one_chunk")
            info = array_info(server.url, PATH, server.api_key, client=http)
            key, url = server.api_key, server.url
            metadata_url = f"{url}/api/v1/metadata/{PATH}"
            auth = {"Authorization": f"Apikey {key}"}
            paths = {
                "HTTP metadata (floor)": lambda i: http.get(metadata_url, headers=auth),
                "tiled client node[i]": lambda i: node[i],
                "client, one-chunk array": lambda i: one_chunk[i],
                "HTTP octet-stream": lambda i: fetch_array(
                    url, PATH, key, slice_=str(i), info=info, client=http
                ),
                "HTTP JSON": lambda i: fetch_array(
                    url, PATH, key, "json", slice_=str(i), client=http
                ),
            }
            results = {}
            for name, fetch in paths.items():
                times = latencies_ms(fetch, n_fetches)
                results[name] = (float(np.percentile(times, 50)), float(np.percentile(times, 90)))
            check = fetch_array(url, PATH, key, slice_="42", info=info, client=http)
            np.testing.assert_array_equal(check, c_maps[42])
    print(f"(49, 49) float32 map slice of a ({N_MAPS}, 49, 49) array, {n_fetches} fetches each")
    for name, (p50, p90) in results.items():
        verdict = "ok" if p50 <= TARGET_P50_MS else f"above the {TARGET_P50_MS:.0f} ms target"
        print(f"  {name:22s} p50 {p50:6.1f} ms   p90 {p90:6.1f} ms   {verdict}")
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
