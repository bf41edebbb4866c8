"""Fault injection: the control process SIGKILLed mid-map, then ``opmap resume``.

``opmap rehearse`` runs as its own process (its Tiled server a child that dies with it).
When the spool shows map 1 (the first after the kickoff) under way (its start and events,
no stop), the test SIGKILLs the rehearsal, then runs ``opmap resume EXPERIMENT_ID`` as
another process. Afterwards:

- the interrupted run is closed in Tiled with an abort stop naming the reason, and holds
  the documents the spool had of it;
- the maps go on with the same ``experiment_id`` and the next ``map_index``; the cut map is
  measured again, so ``max_maps`` complete maps exist, and the tail run ends the experiment;
- the electrochemistry record over every run is gapless and nothing is doubled (one sample
  per second of instrument time, in order);
- every run is sealed, the cut one by the resume (the writer key gets 403 on it);
- the products are one version (v1) committing exactly the complete maps, in map order,
  sealed once the resumed experiment ended.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tiled.queries import Key

from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.spool import RunSpool
from opmap.service import DataDirInUseError, ServerLock, start_server_subprocess
from opmap.settings import OpmapSettings

from .test_rehearsal_survives_server_death import _map_run_under_way

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
MAX_MAPS, CUT_MAP = 3, 1
OPMAP = [sys.executable, "-m", "opmap.cli"]


def _rehearse_until_cut(data_dir: Path, out_file: Path) -> str:
    """Run a short rehearsal; SIGKILL it while map CUT_MAP is under way; its experiment."""
    command = [*OPMAP, "rehearse", "--data-dir", str(data_dir), "--map-shape", "8", "5"]
    command += ["--time-scale", "0.05", "--max-maps", str(MAX_MAPS), "--seed", "3"]
    spool_dir = OpmapSettings(data_dir=data_dir).backup_dir
    with out_file.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 1200
            while _map_run_under_way(spool_dir, CUT_MAP) is None:
                assert process.poll() is None, out_file.read_text()
                assert time.monotonic() < deadline, f"map {CUT_MAP} was never under way"
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    found = re.search(r"^experiment (\S+) ", out_file.read_text(), re.MULTILINE)
    assert found, out_file.read_text()
    return found.group(1)


def _wait_for_free_lock(data_dir: Path) -> None:
    """The orphaned server dies with its parent (parent-death signal): its lock frees."""
    deadline = time.monotonic() + 60
    while True:
        try:
            ServerLock.acquire(data_dir).release()
            return
        except DataDirInUseError:
            assert time.monotonic() < deadline, "the killed rehearsal's server kept the lock"
            time.sleep(0.5)


def test_resume_closes_the_cut_run_and_goes_on_with_the_same_experiment(tmp_path) -> None:
    data_dir = tmp_path / "data"
    experiment_id = _rehearse_until_cut(data_dir, tmp_path / "rehearse.out")
    _wait_for_free_lock(data_dir)
    resumed = subprocess.run(
        [*OPMAP, "resume", experiment_id, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "closed the interrupted run" in resumed.stdout
    settings = OpmapSettings(data_dir=data_dir)
    assert RunSpool(settings.backup_dir).pending() == []
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        client = server.client()
        runs = client["raw"].search(Key("start.experiment_id") == experiment_id)
        starts = {uid: node.metadata["start"] for uid, node in runs.items()}
        stops = {uid: node.metadata.get("stop") or {} for uid, node in runs.items()}
        ordered = sorted(starts, key=lambda uid: starts[uid]["time"])
        _check_runs(starts, stops, ordered)
        # every run is sealed: by the dead writer, by the resume (the cut one), by the
        # resumed writer; the writer key can no longer change the cut run
        unsealed = [uid for uid, node in runs.items() if not is_sealed(node.metadata)]
        assert unsealed == [], unsealed
        put = httpx.put(
            f"{server.url}/api/v1/metadata/raw/{ordered[CUT_MAP]}",
            json={"metadata": {"touched": True}},
            headers={"Authorization": f"Apikey {server.api_key}"},
        )
        assert put.status_code == 403, put.text
        _check_gapless_electrochemistry([runs[uid] for uid in ordered])
        _check_one_product_version(client["processed"][experiment_id], starts, stops, ordered)


def _check_runs(starts: dict, stops: dict, ordered: list[str]) -> None:
    indices = [starts[uid].get("map_index") for uid in ordered]
    assert indices == [0, 1, 2, 3, None], indices  # 1 cut, re-measured as 2; then 3
    cut = ordered[CUT_MAP]
    assert stops[cut]["exit_status"] == "abort"
    assert "opmap resume" in stops[cut]["reason"]
    assert all(stops[uid]["exit_status"] == "success" for uid in ordered if uid != cut)
    resumed = [uid for uid in ordered if starts[uid].get("resumed")]
    assert resumed == ordered[CUT_MAP + 1 :]  # every run after the cut is the resumed session's
    assert len({starts[uid]["seed"] for uid in ordered}) == 1


def _check_gapless_electrochemistry(runs: list) -> None:
    times_s = np.concatenate([_sample_times_s(run) for run in runs])
    steps_s = np.diff(times_s)
    # one sample per second of instrument time, across the kill and the resume
    np.testing.assert_allclose(steps_s, 1.0, atol=1e-6)
    assert times_s[0] == 0.0


def _sample_times_s(run) -> np.ndarray:
    """``time_s`` of a run's electrochemistry samples (a run cut before its first collect
    has none)."""
    if "electrochemistry" not in run:
        return np.empty(0)
    table = run["electrochemistry"].read()
    return np.asarray(table["time_s"]) if "time_s" in table else np.empty(0)


def _check_one_product_version(experiment, starts: dict, stops: dict, ordered: list[str]) -> None:
    assert [key for key in experiment if not key.endswith("-tables")] == ["v1"]
    version = experiment["v1"]
    assert is_sealed(version.metadata)  # the resumed experiment ended: its products are final
    complete = [uid for uid in ordered if starts[uid].get("map_index") is not None]
    complete = [uid for uid in complete if stops[uid]["exit_status"] == "success"]
    assert len(complete) == MAX_MAPS
    assert version.metadata["committed"]["maps"] == MAX_MAPS
    assert version.metadata["raw_uids"] == complete
    c_perp = version["c_perp"].read()
    assert c_perp.shape[0] == MAX_MAPS
    assert np.isfinite(c_perp).any(axis=(1, 2)).all()  # every map has fitted pixels
