"""Latency of fetching one c map from the opmap Tiled server (Python client and plain HTTP).

Run: ``.venv/bin/python benchmarks/bench_tiled_fetch.py [n_fetches]``. Starts two real
server subprocesses in temporary directories: the served configuration ("after": opmap's
API-key cache, catalog lookup cache and dependency memo, `opmap.service`) and the same
without them ("before": Tiled's own per-request work), writes to each a (100, 49, 49)
float32 c-map array grown map by map, as the live analysis writes it (one chunk per map),
then fetches one (49, 49) map ``n_fetches`` times (default 60) through each path,
alternating between the two servers in blocks so that both see the same machine load.
Prints p50 / p90 latency in ms beside the 15 ms p50 target (issue 11 §5) with the metadata
request of the same array (the floor: everything but the read), the server's CPU time per
request, and where a slice's time goes, from Tiled's ``Server-Timing`` header:

* ``app``: the time inside the app; outside it (wall - app): HTTP, uvicorn, the outer
  middleware and the client;
* ``auth`` (opmap's key dependencies), ``acl`` (the access policy), ``read`` (data source,
  file open, slice), ``pack`` (serialisation); the rest of ``app`` is mostly the catalog
  walk, which the per-segment CPU slope of metadata requests at depth 1 to 3 shows;
* the Python client's own time: ``node[i]`` (a dask graph around one request) against
  :func:`opmap.remote.read_map` (the same request without dask) and plain HTTP.

Figures depend on the machine and its load (printed); on a shared machine they are
pessimistic, and the before/after ratios are the figures to compare between runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from opmap.analysis.products import LabelledArray
from opmap.callbacks.tiled_products import TiledProductWriter
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.remote import array_info, fetch_array, read_map
from opmap.service import ServerHandle, create_key, start_server_subprocess
from opmap.settings import OpmapSettings

N_MAPS, N_Z, N_X = 100, 49, 49
PATH = "processed/bench/v1/c_perp"
PROPOSAL = "p-bench"
TARGET_P50_MS = 15.0
BLOCK = 10  # fetches per server before switching to the other one


@dataclass
class Timings:
    """Wall times (ms), server CPU (s) and Server-Timing entries (ms) of one path."""

    wall_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    server_timing_ms: dict[str, list[float]] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return float(np.percentile(self.wall_ms, q))

    def cpu_ms(self) -> float:
        return 1e3 * self.server_cpu_s / max(1, len(self.wall_ms))

    def client_cpu_ms(self) -> float:
        return 1e3 * self.client_cpu_s / max(1, len(self.wall_ms))

    def timing_p50(self, key: str) -> float:
        values = self.server_timing_ms.get(key)
        return float(np.median(values)) if values else float("nan")


def process_cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all threads), from /proc; 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_timing(response: object) -> dict[str, float]:
    """``{name: dur_ms}`` from a response's ``Server-Timing`` header (empty if none)."""
    if not isinstance(response, httpx.Response):
        return {}
    entries = {}
    for part in response.headers.get("server-timing", "").split(","):
        name, *params = part.strip().split(";")
        for param in params:
            if param.startswith("dur="):
                entries[name] = float(param[4:])
    return entries


def measure_block(fetch: Callable[[int], object], start: int, n: int, pid: int, into: Timings):
    """``n`` timed calls ``fetch(map_index)``; wall times, server CPU, Server-Timing."""
    cpu_before, client_before = process_cpu_s(pid), time.process_time()
    for i in range(start, start + n):
        began = time.perf_counter()
        result = fetch((7 * i) % N_MAPS)
        into.wall_ms.append((time.perf_counter() - began) * 1e3)
        if isinstance(result, np.ndarray) and result.shape != (N_Z, N_X):
            raise AssertionError(f"fetched shape {result.shape}, expected {(N_Z, N_X)}")
        for name, ms in server_timing(result).items():
            into.server_timing_ms.setdefault(name, []).append(ms)
    into.server_cpu_s += process_cpu_s(pid) - cpu_before
    into.client_cpu_s += time.process_time() - client_before


def paths_of(
    server: ServerHandle, http: httpx.Client, reader_key: str
) -> dict[str, Callable[[int], object]]:
    """The fetch paths (name -> fetch(map_index)) against one server."""
    url, key = server.url, server.api_key
    auth = {"Authorization": f"Apikey {key}"}
    reader = {"Authorization": f"Apikey {reader_key}", "Accept": "application/octet-stream"}
    node = server.client()[PATH]
    info = array_info(url, PATH, key, client=http)
    octet = auth | {"Accept": "application/octet-stream"}
    parts = PATH.split("/")
    paths: dict[str, Callable[[int], object]] = {
        "HTTP root (no key)": lambda i: http.get(f"{url}/api/v1/"),
    }
    for depth in range(1, len(parts) + 1):
        meta = f"{url}/api/v1/metadata/{'/'.join(parts[:depth])}"
        name = "HTTP metadata (floor)" if depth == len(parts) else f"HTTP metadata depth {depth}"
        paths[name] = lambda i, meta=meta: http.get(meta, headers=auth)
    paths |= {
        "HTTP octet-stream slice": lambda i: http.get(
            f"{url}/api/v1/array/full/{PATH}", params={"slice": str(i)}, headers=octet
        ),
        "HTTP slice, reader key": lambda i: http.get(
            f"{url}/api/v1/array/full/{PATH}", params={"slice": str(i)}, headers=reader
        ),
        "fetch_array (octet)": lambda i: fetch_array(
            url, PATH, key, slice_=str(i), info=info, client=http
        ),
        "fetch_array (JSON)": lambda i: fetch_array(
            url, PATH, key, "json", slice_=str(i), client=http
        ),
        "tiled client node[i]": lambda i: node[i],
        "opmap read_map(node, i)": lambda i: read_map(node, i),
    }
    return paths


def start_with_c_maps(
    stack: ExitStack, folder: Path, c_maps: np.ndarray, *, request_caches: bool
) -> tuple[ServerHandle, str]:
    """A server (with or without opmap's request caches) holding ``c_maps`` grown map by map, and
    the key of a reader of the maps' proposal."""
    settings = OpmapSettings(data_dir=folder)
    server = stack.enter_context(
        start_server_subprocess(settings, request_caches=request_caches, startup_timeout_s=300)
    )
    processed = ensure_layout(server.client())["processed"]
    writer = TiledProductWriter(processed, "bench", proposal=PROPOSAL)
    for index in range(len(c_maps)):
        c = LabelledArray(c_maps[index : index + 1], ("map", "z", "x"), "angstrom")
        writer.append_map({"c_perp": c})
    return server, create_key(settings, "collaborator", "reader", proposals=[PROPOSAL])


def main(n_fetches: int = 60) -> dict[str, dict[str, Timings]]:
    """Run the benchmark; return ``{server: {path: Timings}}`` (servers "before", "after")."""
    if n_fetches < BLOCK:
        raise ValueError(f"n_fetches must be >= {BLOCK}; got {n_fetches}")
    rng = np.random.default_rng(0)
    c_maps = (14.05 + 0.3 * rng.random((N_MAPS, N_Z, N_X))).astype(np.float32)
    load_before = os.getloadavg()
    results: dict[str, dict[str, Timings]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        http = stack.enter_context(httpx.Client())
        started = {
            "before": start_with_c_maps(stack, Path(folder, "a"), c_maps, request_caches=False),
            "after": start_with_c_maps(stack, Path(folder, "b"), c_maps, request_caches=True),
        }
        servers = {name: server for name, (server, _) in started.items()}
        paths = {name: paths_of(*started[name][:1], http, started[name][1]) for name in started}
        for path in paths["after"]:
            for name in servers:
                paths[name][path](0)  # warm-up (and the key lookup of the cached server)
                results[name][path] = Timings()
            for start in range(0, n_fetches, BLOCK):
                for name, server in servers.items():
                    into = results[name][path]
                    measure_block(paths[name][path], start, BLOCK, server.process.pid, into)
        check = fetch_array(servers["after"].url, PATH, servers["after"].api_key, slice_="42")
        np.testing.assert_array_equal(check, c_maps[42])
        np.testing.assert_array_equal(read_map(servers["after"].client()[PATH], 42), c_maps[42])
    report(results, n_fetches, load_before, os.getloadavg())
    return results


def report(results: dict[str, dict[str, Timings]], n: int, load0: tuple, load1: tuple) -> None:
    """Print the latency table (after, before, ratio) and the breakdown."""
    before, after = results["before"], results["after"]
    print(f"(49, 49) float32 map of a ({N_MAPS}, 49, 49) array, {n} fetches per path and server")
    print(
        f"load average (1, 5, 15 min): at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} cores"
    )
    print(
        f"ms; cpu = server / client CPU per request; target p50 <= {TARGET_P50_MS:.0f} ms\n"
        f"{'path':25s}|{'after: p50':>11s} {'p90':>6s} {'cpu':>10s} {'p50/target':>11s} |"
        f"{'before: p50':>12s} {'p90':>6s} {'cpu':>5s} | after/before"
    )
    for path, new in after.items():
        old = before[path]
        ratio = new.p(50) / TARGET_P50_MS
        verdict = "ok" if ratio <= 1 else "ABOVE"
        print(
            f"{path:25s}|{new.p(50):11.1f} {new.p(90):6.1f} "
            f"{new.cpu_ms():5.1f}/{new.client_cpu_ms():4.1f} {ratio:5.2f} {verdict:5s} |"
            f"{old.p(50):12.1f} {old.p(90):6.1f} {old.cpu_ms():5.1f} |"
            f" {new.p(50) / old.p(50):5.2f}"
        )
    print("where a slice's time goes (p50 ms; Server-Timing of the octet-stream slice):")
    print(f"  {'part':62s} {'before':>7s} {'after':>7s}")
    for label, old_ms, new_ms in breakdown(before, after):
        print(f"  {label:62s} {old_ms:7.1f} {new_ms:7.1f}")


def slice_parts(timings: Timings, root: Timings) -> list[tuple[str, float]]:
    """``(part, ms)`` of one server's octet-stream slice, from its ``Server-Timing``."""
    app = timings.timing_p50("app")
    named = {
        "API key, opmap's cache ('auth'; Tiled's lookups: untimed)": "auth",
        "access policy ('acl')": "acl",
        "read: data source, file open, slice ('read')": "read",
        "serialisation ('pack')": "pack",
    }
    parts = [(label, timings.timing_p50(key)) for label, key in named.items()]
    known = sum(ms for _, ms in parts if ms == ms)  # NaN (absent) counts as 0
    return [
        ("server CPU per request", timings.cpu_ms()),
        ("wall, client to client", timings.p(50)),
        ("  in the app ('app')", app),
        *[("    " + label, ms) for label, ms in parts],
        ("    rest: catalog walk, other dependencies, routing", app - known),
        ("  outside the app: HTTP, uvicorn, middleware, client", timings.p(50) - app),
        ("HTTP root GET /api/v1/ (no key, no catalog), wall", root.p(50)),
    ]


def walk_slope_ms(server: dict[str, Timings]) -> float:
    """Server CPU per path segment: the slope of metadata requests at depth 1 to 3."""
    cpu = [server[f"HTTP metadata depth {d}"].cpu_ms() for d in (1, 2, 3)]
    return float(np.polyfit([1, 2, 3], cpu, 1)[0])


def breakdown(
    before: dict[str, Timings], after: dict[str, Timings]
) -> list[tuple[str, float, float]]:
    """``(label, before_ms, after_ms)`` of each part of a request."""
    octet, root = "HTTP octet-stream slice", "HTTP root (no key)"
    rows = [
        (label, old, new)
        for (label, old), (_, new) in zip(
            slice_parts(before[octet], before[root]),
            slice_parts(after[octet], after[root]),
            strict=True,
        )
    ]
    rows.append(
        (
            "catalog walk: server CPU per path segment (depth 1-3)",
            walk_slope_ms(before),
            walk_slope_ms(after),
        )
    )
    differences = {
        "proposal check: reader key - writer key, wall": "HTTP slice, reader key",
        "Python client: node[i] - plain HTTP slice, wall": "tiled client node[i]",
        "Python client: read_map(node, i) - plain HTTP slice, wall": "opmap read_map(node, i)",
    }
    for label, path in differences.items():
        old = before[path].p(50) - before[octet].p(50)
        rows.append((label, old, after[path].p(50) - after[octet].p(50)))
    for label, path in (
        ("client CPU per call: node[i]", "tiled client node[i]"),
        ("client CPU per call: read_map(node, i)", "opmap read_map(node, i)"),
        ("client CPU per call: httpx", octet),
    ):
        rows.append((label, before[path].client_cpu_ms(), after[path].client_cpu_ms()))
    return rows


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
