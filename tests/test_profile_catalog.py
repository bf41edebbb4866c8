"""A databroker profile rooted at the raw-run catalog: ``catalog[-1]`` is the latest run.

``opmap profile install --node raw`` writes a Tiled profile opened at ``raw``; a fresh
interpreter (Tiled reads ``TILED_PROFILES`` at import) opens it with databroker and finds the
rehearsal's runs, newest last, by index and by scan id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opmap.cli import build_parser, profile_directory


def test_raw_catalog_profile_gives_the_latest_run_last(
    rehearsal: Any, rehearsal_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILED_PROFILES", str(tmp_path / "profiles"))
    argv = ["profile", "install", "--name", "opmap-raw", "--node", "raw"]
    argv += ["--data-dir", str(rehearsal_server.settings.data_dir), "--url", rehearsal_server.url]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert (profile_directory() / "opmap-raw.yml").is_file()
    script = (
        "import json, databroker\n"
        "catalog = databroker.from_profile('opmap-raw')\n"
        "last = catalog[-1].metadata['start']\n"
        "by_scan = catalog[last['scan_id']].metadata['start']['uid']\n"
        "print(json.dumps({'n': len(catalog), 'uid': last['uid'], 'by_scan': by_scan,\n"
        "                  'kind': type(catalog).__name__}))\n"
    )
    env = os.environ | {"TILED_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    raw = rehearsal_server.client()["raw"]
    assert answer["n"] == len(raw)
    assert answer["uid"] == rehearsal.map_uids[-1]  # the experiment's last run is the newest
    assert answer["by_scan"] == answer["uid"]
    assert answer["kind"] == "CatalogOfBlueskyRuns"


def test_a_node_that_is_not_a_path_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TILED_PROFILES", str(tmp_path / "profiles"))
    argv = ["profile", "install", "--key-from-env", "--url", "http://host:8000"]
    args = build_parser().parse_args([*argv, "--node", "raw?api_key=x"])
    assert args.func(args) == 2
    assert "node must be a path" in caplog.text
    assert not (tmp_path / "profiles").exists()
