"""Fault injection: the Tiled server is SIGKILLed by PID in the middle of a run.

A real server subprocess, a real RunEngine and detector writing HDF5 files, and the
``ValidatedTiledWriter`` with its spool. A callback subscribed before the writer kills
the server at the second event of the second run; a third run starts while the server is
down; the server is started again on the same port and data directory. Afterwards every
document emitted is stored in Tiled exactly once, the partly stored run was replaced
whole, and the spool is empty.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import bluesky.plans as bp
import pytest
import tiled.client.utils
from bluesky import RunEngine
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
from ophyd_async.sim import SimBlobDetector
from tiled.client import from_uri

from opmap.callbacks.spool import RunDigest, RunSpool, tally_run
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

N_FRAMES = 4
pytestmark = pytest.mark.timeout(240)


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
    server = start_server_subprocess(settings)
    port = server.settings.port
    runs = ensure_layout(server.client())["raw"]
    admin = from_uri(server.url, api_key=server.admin_key)["raw"]
    engine = RunEngine({})
    with init_devices():
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), settings.detector_dir))
    emitted: Counter = Counter()
    engine.subscribe(lambda name, doc: emitted.update([name]))
    killer = _KillServerAt(server.process.pid, run_index=2, n_event=2)
    engine.subscribe(killer)
    writer = ValidatedTiledWriter(
        runs, spool_directory=settings.backup_dir, admin_client=admin, batch_size=1, retry_s=0.5
    )
    engine.subscribe(writer)
    uids = [*engine(bp.count([det], num=N_FRAMES))]
    uids += engine(bp.count([det], num=N_FRAMES))  # the server dies in this run
    assert killer.killed.is_set()
    uids += engine(bp.count([det], num=N_FRAMES))  # starts while the server is down
    assert sorted(RunSpool(settings.backup_dir).pending()) == sorted(uids[1:])
    restarted = start_server_subprocess(settings, port=port)
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
        for uid in uids:
            frames = fresh[uid]["primary"][det.name].read()
            assert frames.shape[0] == N_FRAMES and frames.std() > 0
            assert len(fresh[uid]["primary"].base["internal"].read()) == N_FRAMES
    finally:
        restarted.stop()
        server.stop()


def test_a_partly_stored_run_without_the_admin_key_stays_in_the_spool(
    tmp_path, short_client_retries
) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "data")
    server = start_server_subprocess(settings)
    runs = ensure_layout(server.client())["raw"]
    engine = RunEngine({})
    with init_devices():
        det = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), settings.detector_dir))
    killer = _KillServerAt(server.process.pid, run_index=1, n_event=2)
    engine.subscribe(killer)
    writer = ValidatedTiledWriter(runs, spool_directory=settings.backup_dir, batch_size=1)
    engine.subscribe(writer)
    (uid,) = engine(bp.count([det], num=N_FRAMES))
    restarted = start_server_subprocess(settings, port=server.settings.port)
    try:
        assert writer.wait(timeout_s=60)
        assert "needs the admin key" in writer.failed[uid]
        spool = RunSpool(settings.backup_dir)
        assert spool.pending() == [uid], "kept for opmap recover"
        tally = tally_run(runs, RunDigest.of(spool.read(uid)))
        assert tally.stored["start"] == 1 and not tally.complete
        assert tally.stored["event"] < N_FRAMES
    finally:
        restarted.stop()
        server.stop()
