"""Cost of the sealed check for writer-key requests, with and without its cache.

Run: ``.venv/bin/python benchmarks/bench_sealed_check.py [n_requests]``. Builds the served
configuration in process (`build_in_process_app(access_control=True)`, no socket), stores a
run ``raw/run/primary/x``, and has the writer key grow ``x`` ``n_requests`` times
(default 200), alternating blocks of 20 between the policy with its sealed cache and the
same policy with the cache turned off (every request asks the database), so that both see
the same machine load. Prints the sealed queries per request and the p50 latency of each,
and their ratio beside the target (cached p50 no slower than uncached; queries per
request at most 1 / n_requests + the first).

Figures depend on the machine and its load (printed); the in-process client has no
network, so the query is a larger share of a request than over HTTP.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BLOCK = 20


class _NoCache:
    """The policy's cache interface, never answering (the check before the cache)."""

    generation = 0

    def get(self, key: object) -> None:
        return None

    def store(self, key: object, sealed: bool, generation: int) -> None:
        return None

    def begin_change(self) -> int:
        return 0

    def end_change(self, token: int) -> None:
        return None


def main(n_requests: int) -> None:
    warnings.simplefilter("ignore")
    from tiled.client import Context, from_context

    from opmap.service import ProposalTags, build_in_process_app
    from opmap.settings import OpmapSettings

    asked = {"n": 0}
    query = ProposalTags.ancestry  # the sealed query (it also gives the commit record)

    async def counted(self: object, node_id: int) -> list:
        asked["n"] += 1
        return await query(self, node_id)

    ProposalTags.ancestry = counted
    settings = OpmapSettings(data_dir=Path(tempfile.mkdtemp()) / "data")
    app = build_in_process_app(settings, access_control=True)
    key = settings.api_key_file.read_text().strip()
    policy = app.state.access_policy
    modes = {"cached": policy.sealed_cache, "uncached": _NoCache()}
    latency_ms: dict[str, list[float]] = {mode: [] for mode in modes}
    queries = dict.fromkeys(modes, 0)
    body = np.arange(3).tobytes()
    headers = {"Content-Type": "application/octet-stream"}
    with Context.from_app(app, api_key=key) as context:
        raw = from_context(context).create_container("raw")
        raw.create_container("run").create_container("primary").write_array(np.arange(3), key="x")
        http = context.http_client
        extent = 3
        for block in range(0, n_requests, BLOCK):
            for mode, cache in modes.items():
                policy.sealed_cache = cache
                for _ in range(min(BLOCK, n_requests - block)):
                    before = asked["n"]
                    start = time.perf_counter()
                    response = http.patch(  # the writer key may only append
                        "/api/v1/array/full/raw/run/primary/x",
                        params={"offset": extent, "shape": 3, "extend": "true"},
                        content=body,
                        headers=headers,
                    )
                    extent += 3
                    latency_ms[mode].append(1e3 * (time.perf_counter() - start))
                    assert response.status_code == 200, response.text
                    queries[mode] += asked["n"] - before
    p50 = {mode: float(np.median(values)) for mode, values in latency_ms.items()}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {n_requests} writes")
    for mode in modes:
        print(
            f"{mode:>8}: {queries[mode] / n_requests:.3f} sealed queries per request, "
            f"p50 {p50[mode]:.2f} ms"
        )
    ratio = p50["cached"] / p50["uncached"]
    print(f"p50 cached / uncached = {ratio:.3f} (target <= 1.0)")
    target_queries = 1 / n_requests + 1e-9
    print(
        f"cached queries per request = {queries['cached'] / n_requests:.3f} "
        f"(target <= {target_queries:.3f})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
