"""Fuzz the running ``opmap serve`` through its OpenAPI schema with schemathesis (``make fuzz``).

Starts the real server on a fresh data directory (writer key), runs ``st run`` against
``/openapi.json`` for a bounded time (``--max-time``, default 300 s) with the
writer key, records every exchange as HAR, and counts the 5xx answers per route, split
into opmap's own routes (endpoints in ``opmap`` or in the bluesky-tiled-plugins router its
config mounts) and Tiled's (everything else the Tiled app serves). Exit status 1 when
an opmap route answered 5xx.

Not part of ``make test``: it runs for minutes and its inputs are random.

    python tools/fuzz_server.py [--max-time 300] [--out build/fuzz] [--keep-data-dir]

``--keep-data-dir`` leaves the fuzzed server's data directory (its log holds the tracebacks
of the 5xx) and prints where it is.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

#: Packages whose routes the opmap server adds to Tiled's (opmap's own, and the validator
#: router of bluesky-tiled-plugins that opmap's config mounts).
_OPMAP_PACKAGES = ("opmap", "bluesky_tiled_plugins")


def route_owners(config_file: Path) -> list[tuple[re.Pattern[str], str, str]]:
    """(path regex, path template, "opmap" or "tiled") for every route of the server app."""
    from tiled.config import parse_configs
    from tiled.server.app import build_app_from_config

    app = build_app_from_config(parse_configs(config_file))
    owners = []
    for template, endpoint in _walk(app.routes, ""):
        module = getattr(endpoint, "__module__", "") or ""
        owner = "opmap" if module.split(".")[0] in _OPMAP_PACKAGES else "tiled"
        pattern = re.sub(r"\{[^}:]+:path\}", ".*", template)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
        owners.append((re.compile(f"^{pattern}$"), template, owner))
    return owners


def _walk(routes, prefix: str):
    """(path template, endpoint) of every route, through FastAPI's included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)
        elif getattr(route, "endpoint", None) is not None and hasattr(route, "path"):
            yield prefix + route.path, route.endpoint


def count_5xx(har_file: Path, owners) -> tuple[Counter, Counter, int]:
    """5xx answers per (owner, route template), all answers per owner, and the total."""
    entries = json.loads(har_file.read_text())["log"]["entries"]
    errors: Counter = Counter()
    answered: Counter = Counter()
    for entry in entries:
        path = urlsplit(entry["request"]["url"]).path
        owner, template = "tiled", "(unmatched)"
        for pattern, route, who in owners:
            if pattern.match(path):
                owner, template = who, route
                break
        answered[owner] += 1
        if entry["response"]["status"] >= 500:
            errors[(owner, f"{entry['request']['method']} {template}")] += 1
    return errors, answered, len(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=int, default=300, help="seconds of fuzzing")
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"), help="report folder")
    parser.add_argument(
        "--keep-data-dir", action="store_true", help="keep the server's data directory and log"
    )
    args = parser.parse_args(argv)
    from opmap.service import start_server_subprocess
    from opmap.settings import OpmapSettings

    args.out.mkdir(parents=True, exist_ok=True)
    har = args.out / "fuzz.har"
    data_dir = Path(tempfile.mkdtemp(prefix="opmap-fuzz-"))
    settings = OpmapSettings(data_dir=data_dir)
    try:
        with start_server_subprocess(settings, startup_timeout_s=300) as server:
            key = settings.api_key_file.read_text().strip()
            command = [
                str(Path(sys.executable).with_name("st")), "run",
                f"{server.url}/openapi.json",
                "--header", f"Authorization: Apikey {key}",
                "--max-time", str(args.max_time),
                "--request-timeout", "20",
                "--report", "har", "--report-har-path", str(har.resolve()),
                "--checks", "not_a_server_error",
            ]  # fmt: skip
            done = subprocess.run(  # cwd: schemathesis keeps its cache there
                command, capture_output=True, text=True, check=False, cwd=args.out
            )
            (args.out / "st-output.txt").write_text(done.stdout + done.stderr)
            owners = route_owners(settings.config_file)
    finally:
        if args.keep_data_dir:
            sys.stdout.write(f"server data directory (and its log) kept: {data_dir}\n")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    errors, answered, total = count_5xx(har, owners)
    if total == 0:
        sys.stderr.write(f"schemathesis sent no request; see {args.out / 'st-output.txt'}\n")
        return 2
    mine = sum(n for (owner, _), n in errors.items() if owner == "opmap")
    theirs = sum(n for (owner, _), n in errors.items() if owner == "tiled")
    lines = [
        f"{total} requests in {args.max_time} s: opmap routes {answered['opmap']}, "
        f"Tiled routes {answered['tiled']}",
        f"5xx from opmap's own routes: {mine}; from Tiled's routes: {theirs}",
        *(f"  {owner:6} {n:5}  {route}" for (owner, route), n in sorted(errors.items())),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if mine else 0


if __name__ == "__main__":
    raise SystemExit(main())
