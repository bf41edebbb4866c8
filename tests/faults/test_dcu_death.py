"""The detector's DCU dies mid-line: the map fails naming the device, nothing written is lost.

Real processes: ``opmap sim-dcu`` (SIMPLON over HTTP, writing Dectris files) and opmap's
Tiled server. ``SimplonEiger`` flies a 3-line map, one series per line; when the second
line's series has been armed (its master file exists) the DCU is SIGKILLed. The plan must
fail with an error that names the device and the DCU's URL, the run must be closed in Tiled
with a ``fail`` stop document, every document emitted must be stored, and the first line's
frames must read back, from the files and from Tiled. Then the DCU is started again and the
map resumed (`resume_fly_map`): the failed run and the resume hold every line once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import bluesky.plan_stubs as bps
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices
from ophyd_async.sim import SimMotor

from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.devices.simplon import SimplonEiger
from opmap.plans import MapGeometry, MapResume, fly_map, map_line_sources, resume_fly_map
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

from ..devices._simplon_servers import API, free_port, initialize, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
X_COUNT = 40  # frames per line: 40 x 0.05 s keeps the second series running for ~2 s
GEOMETRY = MapGeometry(
    z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=400.0, x_count=X_COUNT, exposure_s=0.05
)


def _kill_when_armed(process, master: Path, killed: threading.Event) -> threading.Thread:
    """SIGKILL ``process`` as soon as ``master`` (a series' master file) exists."""

    def watch() -> None:
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and process.poll() is None:
            if master.exists():
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed.set()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_dcu_killed_mid_line_fails_the_map_naming_the_device_and_loses_nothing(RE, tmp_path):
    settings = OpmapSettings(data_dir=tmp_path / "data")
    detector_dir = settings.detector_dir
    detector_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    opmap = str(Path(sys.executable).with_name("opmap"))
    command = [opmap, "sim-dcu", "--port", str(port), "--data-dir", str(detector_dir)]
    with (
        start_server_subprocess(settings, startup_timeout_s=300) as server,
        serving(command, f"{base_url}/{API}/status/state", 120.0) as dcu,
    ):
        initialize(base_url)
        runs = ensure_layout(server.client())["raw"]
        provider = StaticPathProvider(StaticFilenameProvider("cut"), detector_dir)
        with init_devices():
            eiger = SimplonEiger(base_url, provider, frames_per_file=16, request_timeout_s=5.0)
            stage_x = SimMotor(instant=False, units="um")
            stage_z = SimMotor(units="um")
        RE(bps.mv(stage_x.acceleration_time, 0.01))
        emitted: Counter = Counter()
        RE.subscribe(lambda name, doc: emitted.update([name]))
        writer = ValidatedTiledWriter(runs, spool_directory=settings.backup_dir)
        RE.subscribe(writer)
        killed = threading.Event()
        watcher = _kill_when_armed(dcu, detector_dir / "cut_0002_master.h5", killed)

        with pytest.raises(Exception) as failure:
            RE(fly_map(eiger, stage_x, stage_z, GEOMETRY, md={"map_index": 0}))
        watcher.join(timeout=5)
        assert killed.is_set(), "the DCU was not killed during the second line"

        # the error names the device and where it was
        chain, error = [], failure.value
        while error is not None:
            chain.append(str(error))
            error = error.__cause__ or error.__context__
        message = " | ".join(chain)
        assert f"{eiger.name}:" in message and base_url in message, message

        # every document emitted is stored: the run is closed with a fail stop document
        assert writer.wait(timeout_s=120)
        (tally,) = writer.tallies()
        assert tally.complete and tally.n_stored == sum(emitted.values()), tally.line()
        run = runs[tally.run_uid]
        stop = run.metadata["stop"]
        assert stop["exit_status"] == "fail" and base_url in stop["reason"], stop
        assert is_sealed(run.metadata)  # stored whole: the writer key cannot change it
        with pytest.raises(Exception, match="403"):
            run.update_metadata(metadata={"exit_status_was": "changed"})

        # the first line is whole, in the files and in Tiled
        with h5py.File(detector_dir / "cut_0001_master.h5", "r") as master:
            links = sorted(k for k in master["/entry/data"] if k.startswith("data_"))
            first_line = np.concatenate([master[f"/entry/data/{k}"][()] for k in links])
        assert first_line.shape[0] == X_COUNT and first_line.sum(axis=(1, 2)).min() > 0
        assert run["lines"].read()["line_index"].values.tolist() == [0]
        frames = run["primary"][eiger.name]
        assert frames.shape[0] >= X_COUNT
        np.testing.assert_array_equal(frames[:X_COUNT], first_line)


@pytest.mark.soak  # ~1-1.5 min: make soak; the kill variant runs in make test
def test_a_restarted_dcu_and_a_resume_complete_the_map_each_line_once(RE, tmp_path):
    settings = OpmapSettings(data_dir=tmp_path / "data")
    detector_dir = settings.detector_dir
    detector_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    opmap = str(Path(sys.executable).with_name("opmap"))
    command = [opmap, "sim-dcu", "--port", str(port), "--data-dir", str(detector_dir)]
    state_url = f"{base_url}/{API}/status/state"
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        runs = ensure_layout(server.client())["raw"]
        writer = ValidatedTiledWriter(runs, spool_directory=settings.backup_dir)
        RE.subscribe(writer)
        with init_devices():
            stage_x = SimMotor(instant=False, units="um")
            stage_z = SimMotor(units="um")
        RE(bps.mv(stage_x.acceleration_time, 0.01))
        with serving(command, state_url, 120.0) as dcu:
            initialize(base_url)
            eiger = _eiger(base_url, detector_dir, "cut")
            killed = threading.Event()
            watcher = _kill_when_armed(dcu, detector_dir / "cut_0002_master.h5", killed)
            with pytest.raises(Exception, match=base_url):
                RE(fly_map(eiger, stage_x, stage_z, GEOMETRY, md={"map_index": 0}))
            watcher.join(timeout=5)
            assert killed.is_set()
        assert writer.wait(timeout_s=120)
        (failed_uid,) = [tally.run_uid for tally in writer.tallies()]
        failed = runs[failed_uid]

        # the DCU comes back (a new process on the same port and data directory)
        with serving(command, state_url, 120.0):
            initialize(base_url)
            resume = MapResume.from_run(failed)
            assert resume.lines == (1, 2)
            eiger = _eiger(base_url, detector_dir, "resumed")
            result = RE(resume_fly_map(eiger, stage_x, stage_z, resume, md={"map_index": 0}))
        assert result.exit_status == "success"
        assert writer.wait(timeout_s=120)
        resumed = runs[result.run_start_uids[0]]
        assert resumed.metadata["start"]["resumes"] == failed_uid
        sources = map_line_sources([failed, resumed])
        resumed_uid = result.run_start_uids[0]
        assert [s.run_uid for s in sources.values()] == [failed_uid, resumed_uid, resumed_uid]
        for source in sources.values():
            frames = runs[source.run_uid]["primary"][eiger.name]
            line = frames[source.first_frame : source.first_frame + source.n_frames]
            assert line.shape[0] == X_COUNT and line.sum(axis=(1, 2)).min() > 0


def _eiger(base_url: str, detector_dir: Path, stem: str) -> SimplonEiger:
    provider = StaticPathProvider(StaticFilenameProvider(stem), detector_dir)
    with init_devices():
        eiger = SimplonEiger(base_url, provider, frames_per_file=16, request_timeout_s=5.0)
    return eiger
