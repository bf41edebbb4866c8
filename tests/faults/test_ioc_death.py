"""The stage's IOC dies mid-line: the map fails naming the device and its PVs, nothing is lost.

Real processes: ``opmap sim-ioc`` (the map stage as motor records over Channel Access),
``opmap sim-dcu`` (SIMPLON over HTTP, writing Dectris files) and opmap's Tiled server.
`MapStage` (ophyd-async ``Motor``s) and `SimplonEiger` fly a 3-line map; once the second
line's series is armed (its master file exists) and the fly axis is under way, the IOC is
SIGKILLed. The plan must fail within a bounded time with an error naming the stage axis and
its PV, the run must be closed in Tiled with a ``fail`` stop naming them, every document
emitted must be stored, and the first line's frames must read back, from the files and from
Tiled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices

from opmap.callbacks.sealing import is_sealed
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.devices import BeamMonitor, DeviceUnreachableError, MapStage, epics_potentiostat
from opmap.devices.simplon import SimplonEiger
from opmap.plans import MapGeometry, MapResume, fly_map, map_line_sources, resume_fly_map
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings

from ..devices._ca_env import ca_environment, wait_for_banner
from ..devices._simplon_servers import API, free_port, initialize, serving, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PREFIX = f"OPMAPK{os.getpid()}:"
X_COUNT = 40  # frames per line: 40 x 0.05 s keeps the second line flying for ~2 s
GEOMETRY = MapGeometry(
    z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=400.0, x_count=X_COUNT, exposure_s=0.05
)
#: Longest the plan may take to fail once the IOC is gone (s): CA's put timeout of the move
#: (its length plus ophyd-async's 10 s) and a loaded machine's slack, never a hang.
FAIL_WITHIN_S = 60.0
#: Longest wait for the devices to connect (s); after an IOC restart CA searches again.
CONNECT_S = 60.0


def start_ioc() -> subprocess.Popen:
    """``opmap sim-ioc`` serving the stage under `PREFIX`, on this process's CA ports."""
    opmap = str(Path(sys.executable).with_name("opmap"))
    process = subprocess.Popen(
        [opmap, "sim-ioc", "--prefix", PREFIX],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **ca_environment(), "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_banner(process, "opmap sim-ioc: serving", 120.0)
    except BaseException:
        stop_process(process)
        raise
    return process


class Killer:
    """SIGKILLs a server 0.3 s after a file appears (a series' master: the line is armed)."""

    def __init__(self, process: subprocess.Popen, trigger: Path) -> None:
        self.killed_at: float | None = None
        self._thread = threading.Thread(target=self._watch, args=(process, trigger), daemon=True)
        self._thread.start()

    def _watch(self, process: subprocess.Popen, trigger: Path) -> None:
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline and process.poll() is None:
            if trigger.exists():
                time.sleep(0.3)  # the fly axis is under way
                process.send_signal(signal.SIGKILL)
                process.wait()
                self.killed_at = time.monotonic()
                return
            time.sleep(0.005)

    def join(self) -> float:
        """When the server was killed (monotonic s); fails if it never was."""
        self._thread.join(timeout=5)
        assert self.killed_at is not None, "the server was not killed during the line"
        return self.killed_at


def error_chain(error: BaseException | None) -> str:
    """Every message of an exception and its causes, joined."""
    chain = []
    while error is not None:
        chain.append(f"{type(error).__name__}: {error}")
        # aioca's CANothing is falsy: test for None, not truth
        error = error.__cause__ if error.__cause__ is not None else error.__context__
    return " | ".join(chain)


@dataclass(frozen=True)
class Servers:
    """Tiled and ``opmap sim-dcu`` as processes (shared by this module's tests)."""

    RE: RunEngine
    backup_dir: Path
    detector_dir: Path
    base_url: str
    runs: Any


@dataclass
class Bench:
    """`Servers`, ``opmap sim-ioc`` as a process and a writer to Tiled, for one test.

    ``tag`` prefixes the test's file names (the DCU refuses a series whose master exists).
    """

    servers: Servers
    tag: str
    writer: ValidatedTiledWriter
    emitted: Counter
    ioc: subprocess.Popen

    def master(self, stem: str, series: int) -> Path:
        """The master file of series ``series`` of the files ``stem``."""
        return self.servers.detector_dir / f"{self.tag}{stem}_{series:04d}_master.h5"

    def devices(self, stem: str) -> tuple[SimplonEiger, MapStage]:
        """The Eiger (files `master` ``(stem, n)``) and the stage, connected."""
        provider = StaticPathProvider(
            StaticFilenameProvider(f"{self.tag}{stem}"), self.servers.detector_dir
        )
        with init_devices(timeout=CONNECT_S):
            eiger = SimplonEiger(
                self.servers.base_url, provider, frames_per_file=16, request_timeout_s=5.0
            )
            stage = MapStage(f"{PREFIX}STAGE:")
        return eiger, stage

    def fly_until_the_ioc_dies(self) -> tuple[pytest.ExceptionInfo, float, str]:
        """Fly `GEOMETRY` (files "cut"), the IOC SIGKILLed in line 1 (the second).

        Returns the failure, the seconds from the kill to the failure and the run's uid.
        """
        eiger, stage = self.devices("cut")
        killer = Killer(self.ioc, self.master("cut", 2))
        with pytest.raises(Exception) as failure:
            self.servers.RE(fly_map(eiger, stage.x, stage.z, GEOMETRY, md={"map_index": 0}))
        failed_after_s = time.monotonic() - killer.join()
        assert self.writer.wait(timeout_s=120)
        (tally,) = self.writer.tallies()
        assert tally.complete and tally.n_stored == sum(self.emitted.values()), tally.line()
        return failure, failed_after_s, tally.run_uid

    def restart_ioc(self) -> None:
        """Start ``opmap sim-ioc`` again, on the same prefix and ports (the IOC rebooted)."""
        assert self.ioc.poll() is not None, "the IOC is still running"
        self.ioc = start_ioc()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("ioc-death") / "data")
    detector_dir = settings.detector_dir
    detector_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    opmap = str(Path(sys.executable).with_name("opmap"))
    dcu = [opmap, "sim-dcu", "--port", str(port), "--data-dir", str(detector_dir)]
    run_engine = RunEngine(call_returns_result=True)  # before any device connects
    with (
        pytest.MonkeyPatch.context() as patch,  # libca reads these once per process
        start_server_subprocess(settings, startup_timeout_s=300) as server,
        serving(dcu, f"{base_url}/{API}/status/state", 120.0),
    ):
        for key, value in ca_environment().items():
            patch.setenv(key, value)
        initialize(base_url)
        runs = ensure_layout(server.client())["raw"]
        yield Servers(run_engine, settings.backup_dir, detector_dir, base_url, runs)
        if run_engine.state != "idle":
            run_engine.halt()


@pytest.fixture
def bench(servers, request):
    emitted: Counter = Counter()
    writer = ValidatedTiledWriter(servers.runs, spool_directory=servers.backup_dir)
    tokens = [
        servers.RE.subscribe(lambda name, doc: emitted.update([name])),
        servers.RE.subscribe(writer),
    ]
    bench = Bench(
        servers, request.node.name.removeprefix("test_")[:8] + "-", writer, emitted, start_ioc()
    )
    try:
        yield bench
    finally:
        for token in tokens:
            servers.RE.unsubscribe(token)
        stop_process(bench.ioc)


def test_ioc_killed_mid_line_fails_the_map_naming_the_pv_and_loses_nothing(bench):
    with init_devices(timeout=CONNECT_S):  # the IOC's other devices, to read once it is gone
        potentiostat = epics_potentiostat(f"{PREFIX}EC:", name="potentiostat")
        beam = BeamMonitor(f"{PREFIX}BEAM:CURRENT", f"{PREFIX}BEAM:SHUTTER:")
    failure, failed_after_s, run_uid = bench.fly_until_the_ioc_dies()
    assert failed_after_s < FAIL_WITHIN_S, failed_after_s  # bounded: no hang
    _reads_name_the_device_and_the_pv(potentiostat, beam)

    # the error names the device and its PV; so does the run's fail stop in Tiled
    message = error_chain(failure.value)
    assert "stage-x" in message and f"{PREFIX}STAGE:X" in message, message
    run = bench.servers.runs[run_uid]
    stop = run.metadata["stop"]
    # the fail stop names the device; its PV only when the failed status carries an
    # AxisUnreachableError: a put ended by aioca's falsy CANothing outside the axis' own
    # moves shows in bluesky's status repr as "done" (seen once at load 8)
    assert stop["exit_status"] == "fail" and "stage-x" in stop["reason"], stop
    assert is_sealed(run.metadata)  # every emitted document stored (the fixture's tally)

    # the first line is whole, in the files and in Tiled
    with h5py.File(bench.master("cut", 1), "r") as master:
        links = sorted(k for k in master["/entry/data"] if k.startswith("data_"))
        first_line = np.concatenate([master[f"/entry/data/{k}"][()] for k in links])
    assert first_line.shape[0] == X_COUNT and first_line.sum(axis=(1, 2)).min() > 0
    assert run["lines"].read()["line_index"].values.tolist() == [0]
    frames = run["primary"]["eiger"]
    assert frames.shape[0] >= X_COUNT
    np.testing.assert_array_equal(frames[:X_COUNT], first_line)


@pytest.mark.soak  # ~1-1.5 min: make soak; the kill variant runs in make test
def test_restarting_the_ioc_and_resuming_completes_the_map_each_line_once(bench):
    _, _, failed_uid = bench.fly_until_the_ioc_dies()
    runs = bench.servers.runs
    failed = runs[failed_uid]
    assert failed.metadata["stop"]["exit_status"] == "fail"

    bench.restart_ioc()
    resume = MapResume.from_run(failed)  # read back through the Tiled client
    assert resume == MapResume(resumes=failed_uid, geometry=GEOMETRY, lines=(1, 2))
    eiger, stage = bench.devices("resumed")
    result = bench.servers.RE(resume_fly_map(eiger, stage.x, stage.z, resume, md={"map_index": 0}))
    assert result.exit_status == "success"
    assert bench.writer.wait(timeout_s=120)
    assert all(tally.complete for tally in bench.writer.tallies())
    (resumed_uid,) = result.run_start_uids
    resumed = runs[resumed_uid]
    start = resumed.metadata["start"]
    assert start["resumes"] == failed_uid and start["map_lines"] == [1, 2]
    assert start["map_geometry"] == failed.metadata["start"]["map_geometry"]
    assert resumed.metadata["stop"]["exit_status"] == "success"

    # the two runs hold every line of the map exactly once (map_line_sources refuses a
    # line missing or doubled), each whole: X_COUNT frames that saw the beam
    sources = map_line_sources([failed, resumed])
    assert {i: s.run_uid for i, s in sources.items()} == {
        0: failed_uid, 1: resumed_uid, 2: resumed_uid,
    }  # fmt: skip
    assert resumed["lines"].read()["line_index"].values.tolist() == [1, 2]
    for index, source in sources.items():
        frames = runs[source.run_uid]["primary"]["eiger"]
        line = frames[source.first_frame : source.first_frame + source.n_frames]
        assert line.shape[0] == X_COUNT, index
        assert line.sum(axis=(1, 2)).min() > 0, index
    # the resumed lines are the ones the DCU wrote for the resume, in the files too
    with h5py.File(bench.master("resumed", 1), "r") as master:
        links = sorted(k for k in master["/entry/data"] if k.startswith("data_"))
        line_1 = np.concatenate([master[f"/entry/data/{k}"][()] for k in links])
    first = sources[1].first_frame
    stored = resumed["primary"]["eiger"][first : first + X_COUNT]
    np.testing.assert_array_equal(stored, line_1)


def _reads_name_the_device_and_the_pv(potentiostat: Any, beam: BeamMonitor) -> None:
    """With the IOC dead, reading the potentiostat and the beam monitor fails (after the
    signal timeout) naming the device, the operation and a PV of that device."""

    async def read_both() -> list[Any]:
        return await asyncio.gather(
            potentiostat.driver.status(), beam.read(), return_exceptions=True
        )

    status_error, beam_error = call_in_bluesky_event_loop(read_both(), timeout=120.0)
    assert isinstance(status_error, DeviceUnreachableError), repr(status_error)
    said = str(status_error)
    assert said.startswith("potentiostat: status read failed: ") and f"{PREFIX}EC:" in said, said
    assert isinstance(beam_error, DeviceUnreachableError), repr(beam_error)
    said = str(beam_error)
    assert said.startswith("beam: read failed: ") and f"{PREFIX}BEAM:" in said, said
