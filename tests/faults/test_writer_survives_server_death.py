"""Fault injection: the Tiled server is SIGKILLed by PID in the middle of a run.

A real server subprocess, a real RunEngine and detector writing HDF5 files, and the
``ValidatedTiledWriter`` with its spool. A callback subscribed before the writer kills
the server at the second event of the second run; a third run starts while the server is
down; the server is started again on the same port and data directory. Afterwards every
document emitted is stored in Tiled exactly once, the partly stored run was replaced
whole, and the spool is empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import bluesky.plans as bp
import httpx
import pytest
import tiled.client.utils
from bluesky import RunEngine
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
from ophyd_async.sim import SimBlobDetector
from tiled.client import from_uri

from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.spool import RunDigest, RunSpool, tally_run
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

N_FRAMES = 4
pytestmark = pytest.mark.timeout(900)


class _KillServerAt:
    """Kill the server by PID at the ``n_event``-th event of run number ``run_index``."""

    def __init__(self, pid: int, run_index: int, n_event: int) -> None:
        self.pid, self.run_index, self.n_event = pid, run_index, n_event
        self.runs = self.events = 0
        self.killed = threading.Event()

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.runs, self.events = self.runs + 1, 0
        elif name == "event" and self.runs == self.run_index:
            self.events += 1
            if self.events == self.n_event and not self.killed.is_set():
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.killed.set()


@pytest.fixture
def short_client_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiled's client retries a lost connection for 45 s by default; 3 s keeps this short."""
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 3.0)


def test_runs_written_while_the_server_died_are_stored_exactly_once(
    tmp_path, short_client_retries
) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "data")
    server = start_server_subprocess(settings, startup_timeout_s=300)
    port = server.settings.port
    runs = ensure_layout(server.client())["raw"]
    engine = RunEngine({})
    with init_devices():
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), settings.detector_dir))
    emitted: Counter = Counter()
    engine.subscribe(lambda name, doc: emitted.update([name]))
    killer = _KillServerAt(server.process.pid, run_index=2, n_event=2)
    engine.subscribe(killer)
    writer = ValidatedTiledWriter(
        runs, spool_directory=settings.backup_dir, batch_size=1, retry_s=0.5
    )
    engine.subscribe(writer)
    uids = [*engine(bp.count([det], num=N_FRAMES))]
    uids += engine(bp.count([det], num=N_FRAMES))  # the server dies in this run
    assert killer.killed.is_set()
    uids += engine(bp.count([det], num=N_FRAMES))  # starts while the server is down
    assert sorted(RunSpool(settings.backup_dir).pending()) == sorted(uids[1:])
    restarted = start_server_subprocess(settings, port=port, startup_timeout_s=300)
    try:
        assert writer.wait(timeout_s=120), "the spool did not drain after the restart"
        assert writer.failed == {}
        tallies = writer.tallies()
        assert [t.run_uid for t in tallies] == uids
        for tally in tallies:
            assert tally.complete, tally.line()
            assert tally.emitted["event"] == N_FRAMES and tally.doubled == 0
        assert sum(t.n_emitted for t in tallies) == sum(emitted.values())
        assert sum(t.n_stored for t in tallies) == sum(emitted.values())
        assert RunSpool(settings.backup_dir).pending() == []
        fresh = from_uri(restarted.url, api_key=restarted.api_key)["raw"]
        assert sorted(fresh) == sorted(uids), "no run doubled, none missing"
        for uid in uids:  # stored whole, re-sent or not: sealed against the writer key
            assert is_sealed(fresh[uid].metadata), uid
            frames = fresh[uid]["primary"][det.name].read()
            assert frames.shape[0] == N_FRAMES and frames.std() > 0
            assert len(fresh[uid]["primary"].base["internal"].read()) == N_FRAMES
    finally:
        restarted.stop()
        server.stop()


def test_a_partly_stored_run_waits_in_the_spool_for_opmap_recover(
    tmp_path, short_client_retries, caplog
) -> None:
    """The writer's process cannot re-send (its server stays down): `opmap recover` does."""
    settings = OpmapSettings(data_dir=tmp_path / "data")
    server = start_server_subprocess(settings, startup_timeout_s=300)
    runs = ensure_layout(server.client())["raw"]
    engine = RunEngine({})
    with init_devices():
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), settings.detector_dir))
    killer = _KillServerAt(server.process.pid, run_index=1, n_event=2)
    engine.subscribe(killer)
    # one re-send attempt, then an hour's wait: as if the acquisition process had ended
    writer = ValidatedTiledWriter(
        runs, spool_directory=settings.backup_dir, batch_size=1, retry_s=3600
    )
    engine.subscribe(writer)
    with caplog.at_level("WARNING", logger="opmap.callbacks.tiled_writer"):
        (uid,) = engine(bp.count([det], num=N_FRAMES))
        deadline = time.monotonic() + 120
        while "Tiled still unavailable" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.2)
    server.stop()
    spool = RunSpool(settings.backup_dir)
    assert spool.pending() == [uid]
    documents = spool.read(uid)
    # no server runs: opmap recover starts one, completes the partial run, empties the spool
    result = _opmap("recover", str(settings.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    emitted = len(documents)
    assert spool.pending() == []
    assert f"{uid}: {emitted} documents in the spool, {emitted} stored" in result.stdout
    assert "; sealed" in result.stdout and "(1 sealed now, 0 already" in result.stdout
    with start_server_subprocess(settings, startup_timeout_s=300) as again:
        stored = again.client()["raw"]
        assert sorted(stored) == [uid]
        assert tally_run(stored, RunDigest.of(documents)).complete
        assert len(stored[uid]["primary"].base["internal"].read()) == N_FRAMES
        # recover sealed the run it completed: the writer key can no longer change it
        assert is_sealed(stored[uid].metadata)
        put = httpx.put(
            f"{again.url}/api/v1/metadata/raw/{uid}",
            json={"metadata": {"touched": True}},
            headers={"Authorization": f"Apikey {again.api_key}"},
        )
        assert put.status_code == 403, put.text
    # the same run spooled again (stored and sealed meanwhile): skipped, not a 403
    for name, doc in documents:
        spool.append(name, doc)
    again = _opmap("recover", str(settings.data_dir))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already stored and sealed: skipped" in again.stdout
    assert "(0 sealed now, 1 already stored and sealed)" in again.stdout
    assert spool.pending() == []
    # a run the server refuses (a frame file outside the data dir) stays: exit status 1
    _spool_run_with_file_outside(spool, documents, Path("/etc/hostname"))
    refused = _opmap("recover", str(settings.data_dir))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "NOT STORED" in refused.stdout and "1 left in" in refused.stdout
    assert len(spool.pending()) == 1


def _opmap(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "opmap.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _spool_run_with_file_outside(spool: RunSpool, documents: list, outside: Path) -> None:
    """A copy of a spooled run under new uids whose frames claim a file outside the data dir."""
    text = json.dumps(documents)
    for name, doc in documents:
        if name in ("start", "descriptor", "stream_resource", "stop"):
            text = text.replace(doc["uid"], str(uuid.uuid4()))
    copied = json.loads(text)
    for name, doc in copied:
        if name == "stream_resource":
            doc["uri"] = f"file://localhost{outside}"
        spool.append(name, doc)
