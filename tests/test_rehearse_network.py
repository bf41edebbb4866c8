"""``opmap rehearse --control network``: the rehearsal over Channel Access and SIMPLON HTTP.

The rehearsal runs as a process of its own (libca reads its ports once per process), starts
``opmap sim-beamline`` as its child, calibrates and flies a tiny map through the real
devices, and stores everything in Tiled; the test then reads the runs back through a Tiled
client and checks that the child is gone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest

from opmap.callbacks.tiled_writer import ensure_layout
from opmap.cli import main
from opmap.devices import X_PATH
from opmap.rehearse import NetworkStartError, sim_beamline_process
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

from .devices._ca_env import ca_environment, free_tcp_udp_port
from .devices._simplon_servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MAP_SHAPE = (3, 4)
CA_VARIABLES = (
    "EPICS_CA_SERVER_PORT", "EPICS_CAS_SERVER_PORT", "EPICS_CA_REPEATER_PORT",
    "EPICS_CA_ADDR_LIST", "EPICS_CA_AUTO_ADDR_LIST", "EPICS_CAS_INTF_ADDR_LIST",
    "EPICS_CAS_BEACON_ADDR_LIST", "EPICS_CAS_AUTO_BEACON_ADDR_LIST",
)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """A finished network rehearsal: (data dir, its output, the child's pid)."""
    data_dir = tmp_path_factory.mktemp("network-rehearsal")
    opmap = Path(sys.executable).with_name("opmap")
    command = [
        str(opmap), "rehearse", "--control", "network", "--data-dir", str(data_dir),
        "--map-shape", *map(str, MAP_SHAPE), "--time-scale", "0.02", "--max-maps", "1",
        "--no-live-analysis",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pid = int(re.search(r"opmap sim-beamline \(pid (\d+)\) stopped", done.stdout).group(1))
    return data_dir, done.stdout, pid


def test_network_rehearsal_stores_runs_in_tiled_from_the_iocs_and_dcus_data(rehearsal):
    data_dir, stdout, pid = rehearsal
    assert not _alive(pid), "opmap sim-beamline outlived the rehearsal"
    assert "calibrated: distance" in stdout  # CeO2 over the network: SAMPLE:POS, SIMPLON
    settings = OpmapSettings(data_dir=data_dir)
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        raw = ensure_layout(server.client())["raw"]
        maps = [raw[uid] for uid in raw if "lines" in raw[uid]]
        assert len(maps) == 1
        run = maps[0]
        n_z, n_x = MAP_SHAPE
        # the frames, read through Tiled, are the DCU's data files
        node = run["primary"]["eiger"]
        frames = node.read()
        assert frames.shape == (n_z * n_x, 541, 517) and frames.sum(axis=(1, 2)).min() > 0
        (source,) = node.data_sources()
        files = [Path(a.data_uri.removeprefix("file://localhost")) for a in source.assets]
        assert len(files) == n_z  # one series (master + one data file) per line
        stored = []
        for path in files:
            with h5py.File(path, "r") as f:
                stored.append(f["/entry/data/data"][()])
        np.testing.assert_array_equal(frames, np.concatenate(stored))
        # the stage positions stored with each line are the IOC motor's readbacks
        lines = run["lines"]
        z_key = lines.metadata["data_keys"]["stage-z"]
        assert z_key["source"].endswith("STAGE:Z.RBV") and z_key["source"].startswith("ca://")
        table = lines.read()
        np.testing.assert_allclose(table["stage-z"], table["line_z_um"], atol=1e-3)
        # and the DCU rendered each frame on the x motor's travel during the line
        for path in files:
            master = path.with_name(path.name.replace("_data_000001", "_master"))
            with h5py.File(master, "r") as f:
                frame_x_um = f[X_PATH][()]
            assert np.all(np.diff(frame_x_um) >= 0) and np.ptp(frame_x_um) > 0
            assert frame_x_um.min() >= 200.0
            assert frame_x_um.max() <= 200.0 + 33.0 * n_x + 50.0  # at most the run-down


def test_bad_speedup_exits_2_before_anything_starts(tmp_path, capsys):
    argv = ["rehearse", "--control", "network", "--speedup", "0", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "speedup=0.0 must be a finite number > 0" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


def test_a_server_that_does_not_come_up_is_a_clear_error_and_is_stopped(tmp_path, monkeypatch):
    for name in CA_VARIABLES:  # sim_beamline_process sets them for this process: put back
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    start = sim_beamline_process(
        tmp_path / "dcu", tmp_path, speedup=10.0, binning=4, seed=0, startup_timeout_s=0.5
    )
    with pytest.raises(NetworkStartError, match=r"did not serve within 0\.5 s") as caught, start:
        pytest.fail("the block must not run")
    assert caught.value.pid is not None and not _alive(caught.value.pid)


PARENT = """
import subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
for line in child.stdout:
    print(line, end="", flush=True)
"""


def test_sim_beamline_exits_when_its_parent_is_killed(tmp_path):
    """A rehearsal killed with SIGKILL cannot stop its child: the child stops by itself."""
    opmap = Path(sys.executable).with_name("opmap")
    port = free_tcp_udp_port()
    env = {**os.environ, **ca_environment(), "EPICS_CAS_SERVER_PORT": str(port)}
    command = [
        sys.executable, "-c", PARENT, str(opmap), "sim-beamline", "--exit-with-parent",
        "--data-dir", str(tmp_path), "--http-port", str(free_port()), "--prefix", "ORPHAN:",
    ]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        child_pid = int(parent.stdout.readline())
        banner = parent.stdout.readline()  # the child's first line: it serves
        assert banner.startswith("opmap sim-beamline: serving"), banner
        assert _alive(child_pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 30.0
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child_pid), "sim-beamline outlived its killed parent"
