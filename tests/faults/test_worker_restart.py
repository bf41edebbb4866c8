"""Fault injection: the analysis worker is SIGKILLed between maps and started again.

Real processes: a Tiled server, ``opmap zmq-proxy`` (loopback), ``opmap analysis-worker``
with ``tiled_uri``; in this process a RunEngine maps a simulated cell, writes every run
into Tiled and publishes it to the proxy. Map 0 is analysed live; the worker is killed by
PID; map 1 is taken while it is down; the restarted worker catches maps 0 and 1 up from
Tiled, refuses a run whose ``experiment_id`` climbs out of its output dir, and analyses map
2 live. The first process's NeXus file is untouched (one map); the second process's own
file holds maps 0, 1, 2, each once, with c within 5 mÅ of the truth. In Tiled the
restarted worker grows a new product version, which seals the dead worker's one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from bluesky.callbacks.zmq import Publisher

from opmap.analysis.geometry import save_poni
from opmap.analysis.nexus import read_products
from opmap.callbacks.live import serialize
from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.plans import fly_map
from opmap.service import free_port, start_server_subprocess
from opmap.settings import OpmapSettings

from ..callbacks import test_worker as worker_tests  # its analysis parameters, not its tests
from ..callbacks._live_rig import GEOMETRY, RE, SMALL_MAP, c_truth_angstrom, rig  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
EXPERIMENT = "restart-test"


def _worker_settings(tmp_path: Path, url: str) -> Path:
    (tmp_path / "analysis.toml").write_text(worker_tests.PARAMETERS)
    save_poni(GEOMETRY, tmp_path / "eiger.poni")
    path = tmp_path / "worker.toml"
    path.write_text(
        'parameters = "analysis.toml"\nponi = "eiger.poni"\nbinning = 4\n'
        f'output_dir = "products"\ntiled_uri = "{url}"\n'
    )
    return path


def _start_worker(settings: Path, port_out: int, log: Path, api_key: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "opmap.cli", "analysis-worker"]
    command += ["--zmq", f"127.0.0.1:{port_out}", "--settings", str(settings)]
    env = {**os.environ, "OPMAP_API_KEY": api_key}
    out = log.open("a")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    _wait_for(lambda: "analysis worker listening" in log.read_text(), process, log)
    time.sleep(1.0)  # 0MQ: let the subscription reach the proxy before publishing
    return process


def _wait_for(condition, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _n_maps(path: Path) -> int:
    try:
        return len(read_products(path).metadata["raw_uids"])
    except (OSError, KeyError):
        return 0  # not written yet (or being written)


def test_worker_restart_catches_up_keeps_files_refuses_escapes(RE, rig, tmp_path):  # noqa: F811
    stage, eiger, _ = rig
    server = start_server_subprocess(OpmapSettings(data_dir=tmp_path), startup_timeout_s=300)
    port_in, port_out = free_port(), free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "opmap.cli", "zmq-proxy", "--in-port", str(port_in),
         "--out-port", str(port_out)], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    settings = _worker_settings(tmp_path, server.url)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]  # one per process
    products = tmp_path / "products"
    publisher = Publisher(("127.0.0.1", port_in), serializer=serialize)
    RE.subscribe(ValidatedTiledWriter(ensure_layout(server.client())["raw"]))
    RE.subscribe(publisher)
    uids = []
    workers = []
    try:
        workers.append(_start_worker(settings, port_out, logs[0], server.api_key))

        def take_map(index: int, experiment_id: str = EXPERIMENT) -> None:
            md = {"experiment_id": experiment_id, "map_index": index}
            uids.extend(RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP, md=md)).run_start_uids)

        take_map(0)
        _wait_for(lambda: _n_maps(products / f"{EXPERIMENT}.nxs") == 1, workers[0], logs[0])
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        take_map(1)  # nobody listens: stored in Tiled only
        workers.append(_start_worker(settings, port_out, logs[1], server.api_key))
        take_map(0, experiment_id="../../escape-test")
        take_map(2)
        second = products / f"{EXPERIMENT}.v2.nxs"
        _wait_for(lambda: _n_maps(second) == 3, workers[1], logs[1])
        # in Tiled the restarted worker grows v2; the dead worker's v1 is sealed
        versions = server.client()["processed"][EXPERIMENT]
        assert is_sealed(versions["v1"].metadata) and not is_sealed(versions["v2"].metadata)
        refused = httpx.put(
            f"{server.url}/api/v1/metadata/processed/{EXPERIMENT}/v1",
            json={"metadata": {"touched": True}},
            headers={"Authorization": f"Apikey {server.api_key}"},
        )
        assert refused.status_code == 403, refused.text
    finally:
        publisher._socket.close(linger=0)
        publisher._context.term()
        for process in (*workers, proxy):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        server.stop()
    first = read_products(products / f"{EXPERIMENT}.nxs")
    assert first.metadata["raw_uids"] == [uids[0]], "the first process's file is untouched"
    caught_up = read_products(second)
    assert caught_up.metadata["raw_uids"] == [uids[0], uids[1], uids[3]], "each map once"
    truth = np.array([c_truth_angstrom(x) for x in SMALL_MAP.x_centres_um()])
    c_perp = caught_up.arrays["c_perp"].values
    assert c_perp.shape == (3, SMALL_MAP.z_count, SMALL_MAP.x_count)
    np.testing.assert_allclose(c_perp, np.broadcast_to(truth, c_perp.shape), atol=5e-3)
    text = logs[1].read_text()
    assert "caught up maps [0, 1]" in text
    assert "experiment_id '../../escape-test' cannot name a file" in text
    assert not list(tmp_path.parent.rglob("escape-test*")), "nothing written outside"
    assert sorted(p.name for p in products.iterdir()) == [
        f"{EXPERIMENT}.nxs",
        f"{EXPERIMENT}.v2.nxs",
    ]
