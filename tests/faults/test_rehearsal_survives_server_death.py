"""Fault injection: ``opmap rehearse`` while its Tiled server is SIGKILLed mid-map.

The rehearsal runs as its own process. When the spool shows a map under way (its start and
some events, no stop), the test kills the embedded server by the PID in the data dir's
lock file, waits, and starts a server again on the same data dir and port. The rehearsal
must end with every raw document stored exactly once (its summary: emitted = stored, exit
0), every map run whole in Tiled (stop, one event row per frame, no seq_num twice), and
an empty spool. The soak variant (``make soak``) kills the server twice in five larger maps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from opmap.callbacks.spool import RunSpool
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

N_Z, N_X = 12, 6
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _map_run_under_way(spool_dir: Path, map_index: int) -> Path | None:
    """The spool file of map ``map_index`` once it holds events and no stop, else None."""
    for path in spool_dir.glob("*.jsonl"):
        lines = path.read_text().splitlines()
        try:
            names = [json.loads(line)["name"] for line in lines]
            start = json.loads(lines[0])["doc"]
        except (json.JSONDecodeError, IndexError):
            continue  # a line being written
        if start.get("map_index") == map_index and names.count("event") >= 1:
            return None if "stop" in names else path
    return None


def _kill_server(data_dir: Path) -> tuple[int, int]:
    """SIGKILL the server holding ``data_dir``; return its PID and port."""
    pid = int((data_dir / "opmap-server.lock").read_text().strip())
    port = int(yaml.safe_load((data_dir / "tiled-config.yml").read_text())["uvicorn"]["port"])
    os.kill(pid, signal.SIGKILL)
    return pid, port


def _restart_server(settings: OpmapSettings, port: int):
    """Start a server on the same data dir and port (the dead one's lock is free)."""
    for _ in range(20):
        try:
            return start_server_subprocess(settings, port=port, startup_timeout_s=300)
        except ValueError:  # exit 2: the lock is still held for a moment
            time.sleep(0.5)
    raise AssertionError("the server could not be started again")


def test_rehearsal_stores_every_document_once_after_its_server_was_killed(
    tmp_path, record_property
) -> None:
    _rehearse_killing_the_server(tmp_path, record_property, (N_Z, N_X), 2, kill_at_maps=(0,))


@pytest.mark.soak
def test_soak_rehearsal_with_the_server_killed_twice(tmp_path, record_property) -> None:
    _rehearse_killing_the_server(tmp_path, record_property, (16, 10), 5, kill_at_maps=(0, 3))


def _rehearse_killing_the_server(
    tmp_path: Path,
    record_property,
    map_shape: tuple[int, int],
    n_maps: int,
    kill_at_maps: tuple[int, ...],
) -> None:
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "opmap.cli", "rehearse", "--data-dir", str(data_dir)]
    command += ["--map-shape", *map(str, map_shape), "--time-scale", "0.02"]
    command += ["--map-interval-s", "0", "--max-maps", str(n_maps), "--no-live-analysis"]
    env = {**os.environ, "TILED_RETRY_TIMEOUT": "10"}  # the client gives up a request in 10 s
    out_file = tmp_path / "rehearse.out"
    log = out_file.open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    settings = OpmapSettings(data_dir=data_dir)
    servers, killed = [], []
    try:
        for map_index in kill_at_maps:
            deadline = time.monotonic() + 900
            while (under_way := _map_run_under_way(settings.backup_dir, map_index)) is None:
                assert process.poll() is None, out_file.read_text()
                assert time.monotonic() < deadline, f"map {map_index} was never under way"
                time.sleep(0.05)
            _, port = _kill_server(data_dir)
            killed.append(under_way.stem)
            time.sleep(2.0)  # documents keep coming while the server is down
            servers.append(_restart_server(settings, port))
        assert process.wait(timeout=1200) == 0, out_file.read_text()
        _check_runs(servers[-1].client()["raw"], killed, n_maps, map_shape)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        for server in servers:
            server.stop()
    out = out_file.read_text()
    emitted, stored = _summary_counts(out)
    record_property("documents_emitted", emitted)
    record_property("documents_stored", stored)
    assert emitted == stored > 0, out
    assert "NOT FULLY STORED" not in out
    assert RunSpool(settings.backup_dir).pending() == []


def _check_runs(runs, killed: list[str], n_maps: int, map_shape: tuple[int, int]) -> None:
    maps = [uid for uid in runs if runs[uid].metadata["start"].get("map_index") is not None]
    assert set(killed) <= set(maps)
    assert len(maps) == n_maps, f"{n_maps} map runs, none doubled: {maps}"
    for uid in maps:
        run = runs[uid]
        assert run.metadata.get("stop", {}).get("exit_status") == "success"
        # one `lines` event per completed map line (frames and positions are in HDF5)
        seq_num = run["lines"].base["internal"].read(["seq_num"])["seq_num"].tolist()
        assert sorted(seq_num) == list(range(1, len(seq_num) + 1)), "each event once"
        assert len(seq_num) >= map_shape[0]


def _summary_counts(out: str) -> tuple[int, int]:
    line = next(line for line in out.splitlines() if "raw documents:" in line)
    words = line.split()
    return int(words[2]), int(words[4])
