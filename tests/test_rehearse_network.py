"""``opmap rehearse --control network``: the rehearsal over Channel Access and SIMPLON HTTP.

The rehearsal runs as a process of its own (libca reads its ports once per process), starts
``opmap sim-beamline`` as its child, calibrates and flies two small maps (the pristine one
and one during the protocol) through the real devices with the live analysis, and stores
everything in Tiled; the test then reads the runs and products back through a Tiled client,
checks that the child is gone, and that the truth table's truth is the child's twin's: a
twin built here with the same seed gives the same truth at the cell times the truth records.
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

from opmap import rehearse
from opmap.beamline import BeamlineConfig
from opmap.callbacks.live import COMMANDED_LINES_NOTE, COMMANDED_X_SOURCE, MEASURED_X_SOURCE
from opmap.callbacks.tiled_products import read_latest
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.cli import main
from opmap.devices import X_PATH
from opmap.rehearse import NetworkStartError, sim_beamline_process
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.sim_beamline import SimBeamline, SimBeamlineOptions
from opmap.twin_truth import map_truth

from .devices._ca_env import ca_environment, free_tcp_udp_port
from .devices._simplon_servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: z from -3 µm: the top three rows are in the cathode (the truth table needs them)
MAP_SHAPE = (6, 3)
TIME_SCALE = 0.02
#: The rehearsal's frame pitch along x (µm; 660 µm/s × 0.05 s).
X_STEP_UM = 33.0
#: Measured x against where the DCU rendered the frame (µm): the plan times the series
#: from when its ``trigger`` request left, trusted when the DCU is seen acquiring within a
#: quarter exposure (8.25 µm of travel) of it. Half a frame: each frame in its own pixel.
MEASURED_X_TOLERANCE_UM = 0.5 * X_STEP_UM
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
        "--map-shape", *map(str, MAP_SHAPE), "--time-scale", str(TIME_SCALE),
        "--max-maps", "2",
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
        maps = _maps(raw)
        assert len(maps) == 2
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
        # the DCU rendered each line's frames where the x motor was during their exposures
        # (the sim-beamline's truth), in the order of flight on its travel (run-up and
        # run-down: 0.1 s ramps at 660 µm/s, 33 µm); the series is armed before the line, so
        # the frames fall on the line: a software trigger on a loaded machine may be late
        # (0.16 s once at load 7), or the motor's move (its kickoff waits the ramp from when
        # it sent .VAL), for a line, not for the map
        rendered_um = np.stack([_rendered_x_um(path) for path in files])
        commanded_um = np.asarray(lines["line_x_um"].read(), float)
        flight = np.sign(commanded_um[:, -1:] - commanded_um[:, :1])
        assert np.all(np.diff(rendered_um, axis=1) * flight >= 0)
        assert rendered_um.min() >= 200.0 - X_STEP_UM
        assert rendered_um.max() <= 200.0 + X_STEP_UM * (n_x + 1)
        assert np.median(np.abs(rendered_um - commanded_um)) < 0.5 * X_STEP_UM
        # each frame's measured x (the motor's .RBV monitored over CA, from the start the
        # SIMPLON Eiger bounds) is where the DCU rendered it; a line whose start or readback
        # cannot be trusted is NaN, and the map's x_source names it
        measured_um = np.asarray(lines["line_x_measured_um"].read(), float)
        trusted = np.isfinite(measured_um).all(axis=1)
        assert measured_um.shape == (n_z, n_x) and np.isfinite(measured_um[trusted]).all()
        assert np.isnan(measured_um[~trusted]).all()
        deviation_um = np.abs(measured_um - rendered_um)[trusted]
        assert np.all(deviation_um <= MEASURED_X_TOLERANCE_UM), np.round(deviation_um, 1)
        x_source = _products(server, run).metadata["x_source"]  # the first map's x
        if trusted.all():
            assert x_source == MEASURED_X_SOURCE
        elif trusted.any():
            note = COMMANDED_LINES_NOTE.format(lines=np.flatnonzero(~trusted).tolist())
            assert x_source == MEASURED_X_SOURCE + note
        else:
            assert x_source == COMMANDED_X_SOURCE


def _rendered_x_um(data_file: Path) -> np.ndarray:
    """Where the DCU rendered each frame of a series (its master's ``X_PATH``)."""
    master = data_file.with_name(data_file.name.replace("_data_000001", "_master"))
    with h5py.File(master, "r") as f:
        return np.asarray(f[X_PATH][()], float)


def _products(server, run):
    """The newest products of ``run``'s experiment."""
    layout = ensure_layout(server.client())
    return read_latest(layout["processed"], run.metadata["start"]["experiment_id"])


def _maps(raw) -> list:
    """The experiment's map runs, by map index."""
    maps = [raw[uid] for uid in raw if "lines" in raw[uid]]
    return sorted(maps, key=lambda run: run.metadata["start"]["map_index"])


def _stored_truth(data_dir: Path) -> tuple[dict, dict, float]:
    """The truth arrays of the products (``truth_`` prefix dropped), the map geometry and
    the cell time the protocol started at (recorded in map 1's ``ec_state``)."""
    settings = OpmapSettings(data_dir=data_dir)
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        layout = ensure_layout(server.client())
        maps = _maps(layout["raw"])
        start = maps[0].metadata["start"]
        products = read_latest(layout["processed"], start["experiment_id"])
        protocol_start_s = float(maps[1]["ec_state"].read()["potentiostat-protocol_start"][0])
    truth = {
        name.removeprefix("truth_"): array
        for name, array in products.arrays.items()
        if name.startswith("truth_")
    }
    return truth, start["map_geometry"], protocol_start_s


def _assert_truth_equal(stored: dict, i: int, computed: dict, *, atol: dict) -> None:
    assert set(computed) <= set(stored)
    for name, array in computed.items():
        np.testing.assert_allclose(
            np.asarray(stored[name].values[i], float),
            np.asarray(array.values[0], float),
            rtol=1e-12,
            atol=atol.get(name, 1e-12),
            err_msg=f"map {i}: {name}",
        )


def test_network_truth_table_is_the_childs_twin_at_the_maps_cell_times(rehearsal, tmp_path):
    data_dir, stdout, _ = rehearsal
    assert "recovered versus the twin's ground truth (served by opmap sim-beamline)" in stdout
    assert re.search(r"^\| c map mean perp \| [0-9.]+ \| 14(\.[0-9]+)? \|", stdout, re.M)
    stored, geometry, protocol_start_s = _stored_truth(data_dir)
    start_s = np.asarray(stored["scan_start_time"].values, float)
    stop_s = np.asarray(stored["scan_stop_time"].values, float)
    # cell times: the pristine map ends as the protocol starts (its run holds the protocol's
    # kickoff, and its last ec_state event follows START by a moment: at most 0.25 s of wall
    # time on a loaded machine), map 1 after it starts
    late_cell_s = 0.25 * rehearse.NETWORK_SPEEDUP
    assert start_s[0] < stop_s[0] <= protocol_start_s + late_cell_s
    assert protocol_start_s < start_s[1] < stop_s[1]
    twin = SimBeamline.create(SimBeamlineOptions(data_dir=tmp_path, seed=0)).twin
    pristine = map_truth(twin, geometry, start_s[0], stop_s[0])
    _assert_truth_equal(stored, 0, pristine, atol={})  # the same twin, the same times
    c_perp = stored["c_perp"].values[0]
    assert np.isnan(c_perp[:3]).all() and np.all((c_perp[3:] > 13.9) & (c_perp[3:] < 14.1))
    assert np.isnan(stored["front_position"].values[0])  # no front before the protocol
    # the pristine cell does not change: the in-process rehearsal's pristine map (other
    # cell times, same seed) has this very truth
    earlier = map_truth(twin, geometry, 0.0, 150.0)
    del earlier["scan_start_time"], earlier["scan_stop_time"]
    _assert_truth_equal(stored, 0, earlier, atol={})
    # map 1: the same protocol from the recorded start on a twin of the same seed; the
    # child integrated the electrochemistry at its own (wall-clock) steps: close, not equal
    twin.electrochemistry.advance_to(protocol_start_s)
    window = BeamlineConfig(data_dir=tmp_path).window
    twin.electrochemistry.start_protocol(rehearse._scaled_protocol(TIME_SCALE), window)
    replayed = map_truth(twin, geometry, start_s[1], stop_s[1], 0.5 * (start_s[0] + stop_s[0]))
    assert stored["li_thickness"].values[1].min() > 0.1  # Li plated by then (µm)
    um, angstrom = 2e-3, 1e-4
    atol = {"li_thickness": um, "ti_z": um, "front_position": 0.05, "front_speed": 0.5,
            "front_time": 2.0, "x_li": 1e-3, "rich_fraction": 1e-3}  # fmt: skip
    atol |= {f"{p}_{f}": angstrom for p in ("c", "a") for f in ("perp", "par")}
    _assert_truth_equal(stored, 1, replayed, atol=atol)


def test_bad_speedup_exits_2_before_anything_starts(tmp_path, capsys):
    argv = ["rehearse", "--control", "network", "--speedup", "0", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "speedup=0.0 must be a finite number > 0" in capsys.readouterr().out
    assert not (tmp_path / "logs").exists()


def test_event_clock_over_the_network_exits_2_before_anything_starts(tmp_path, capsys):
    argv = ["rehearse", "--control", "network", "--clock", "event", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "clock='event' needs control='sim'" in capsys.readouterr().out
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
