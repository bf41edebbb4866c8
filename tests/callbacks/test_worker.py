"""The analysis worker in a second process behind bluesky's 0MQ proxy (msgpack, no pickle)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bluesky.callbacks.zmq import Publisher

from opmap.analysis.geometry import save_poni
from opmap.analysis.nexus import read_products
from opmap.callbacks.live import deserialize, serialize
from opmap.plans import fly_map
from opmap.worker import load_settings, parse_zmq_address

from ._live_rig import GEOMETRY, RE, SMALL_MAP, c_truth_angstrom, rig  # noqa: F401

PARAMETERS = """
[[families.family]]
name = "perp"
azimuths_003_deg = [25, 160, 205, 345]
azimuths_110_deg = [90]
[[families.family]]
name = "par"
azimuths_003_deg = [90, 275]
azimuths_110_deg = [210]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(tmp_path: Path) -> Path:
    (tmp_path / "analysis.toml").write_text(PARAMETERS)
    save_poni(GEOMETRY, tmp_path / "eiger.poni")
    path = tmp_path / "worker.toml"
    path.write_text(
        'parameters = "analysis.toml"\nponi = "eiger.poni"\nbinning = 4\noutput_dir = "products"\n'
    )
    return path


def test_worker_process_analyses_a_published_map(RE, rig, tmp_path):  # noqa: F811
    stage, eiger, _ = rig
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    md = {"experiment_id": "worker-test", "map_index": 0}
    RE(fly_map(eiger, stage.x, stage.z, SMALL_MAP, md=md))
    settings = _settings(tmp_path)
    port_in, port_out = _free_port(), _free_port()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bluesky.commandline.zmq_proxy",
            "--in-address",
            f"tcp://127.0.0.1:{port_in}",
            "--out-address",
            f"tcp://127.0.0.1:{port_out}",
        ],
        stdout=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "opmap.cli", "analysis-worker", "--zmq", f"127.0.0.1:{port_out}",
         "--settings", str(settings), "--max-maps", "1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    publisher = None
    try:
        t0 = time.monotonic()
        deadline = t0 + 60
        publisher = Publisher(("127.0.0.1", port_in), serializer=serialize)
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(2.0)  # 0MQ PUB/SUB: a subscriber joining late misses messages
            for name, doc in docs:
                publisher(name, doc)
            if (tmp_path / "products" / "worker-test.nxs").exists():
                break
        worker.wait(timeout=max(1.0, deadline - time.monotonic()))
        elapsed_s = time.monotonic() - t0
    finally:
        if publisher is not None:
            # Close now, without lingering: a PUB context left to the garbage collector
            # blocks in zmq_term (pending messages to a stopped proxy) wherever GC runs.
            publisher._socket.close(linger=0)
            publisher._context.term()
        for process in (worker, proxy):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
    assert worker.returncode == 0, worker.stderr.read()
    products = read_products(tmp_path / "products" / "worker-test.nxs")
    truth = np.array([c_truth_angstrom(x) for x in SMALL_MAP.x_centres_um()])
    c_perp = products.arrays["c_perp"].values
    assert c_perp.shape == (1, SMALL_MAP.z_count, SMALL_MAP.x_count)
    np.testing.assert_allclose(c_perp, np.broadcast_to(truth, c_perp.shape), atol=5e-3)
    assert elapsed_s < 60


def test_wire_format_round_trips_numpy_and_refuses_objects():
    doc = {"data": {"x_um": np.arange(3.0), "n": np.int64(4)}, "uid": "u"}
    assert deserialize(serialize(("event", doc))) == ["event", {
        "data": {"x_um": [0.0, 1.0, 2.0], "n": 4}, "uid": "u"}]  # fmt: skip
    with pytest.raises(TypeError, match="cannot serialise object"):
        serialize({"bad": object()})


def test_worker_settings_name_the_bad_field(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text('parameters = "a.toml"\nponi = "b.poni"\nbinnning = 4\n')
    with pytest.raises(ValueError, match="binnning"):
        load_settings(path)
    with pytest.raises(ValueError, match="PORT in 1-65535"):
        parse_zmq_address("localhost:99999")
    path.write_text('parameters = "a.toml"\nponi = "b.poni"\ndetector_stream = "dcu:31001"\n')
    with pytest.raises(ValueError, match="detector_stream"):
        load_settings(path)
    path.write_text(
        'parameters = "a.toml"\nponi = "b.poni"\ndetector_stream = "tcp://dcu:31001"\n'
    )
    assert load_settings(path).detector_stream == "tcp://dcu:31001"
