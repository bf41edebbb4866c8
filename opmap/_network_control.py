"""``opmap rehearse --control network``: the rehearsal's devices over Channel Access and HTTP.

`sim_beamline_process` starts ``opmap sim-beamline`` (`opmap.sim_beamline`: the IOC and the
DCU on one twin) as a child process on loopback with ports of its own, waits until it
serves, and always stops it. `network_beamline` builds the real devices pointing at it,
through ``mode = "real"`` of `opmap.beamline`: `MapStage` (ophyd-async ``Motor``s),
`epics_potentiostat`, `BeamMonitor`, `SimplonEiger` and the sample changer
``$(P)SAMPLE:POS`` as an EPICS signal.

libca reads ``EPICS_CA_*`` once per process: `sim_beamline_process` sets them in this
process's environment before the first Channel Access call, so a process that already
talks CA elsewhere cannot run a network rehearsal (its devices would not connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ophyd_async.core import NotConnectedError

from opmap.analysis.geometry import save_poni
from opmap.beamline import Beamline, BeamlineConfig, RealConfig, build_beamline

__all__ = [
    "BANNER",
    "NetworkEndpoint",
    "NetworkStartError",
    "ca_environment",
    "connect_all",
    "network_beamline",
    "sim_beamline_process",
]

#: The line ``opmap sim-beamline`` prints once both servers accept clients.
BANNER = "opmap sim-beamline: serving"
#: Longest wait for the child to serve (s): it builds the twin first (seconds; minutes loaded).
STARTUP_S = 300.0
#: Longest wait for the devices to connect once the child serves (s).
CONNECT_S = 30.0
#: Longest wait for the child to stop after SIGTERM before it is killed (s).
STOP_S = 15.0


class NetworkStartError(RuntimeError):
    """``opmap sim-beamline`` did not come up (it exited, or did not serve in time).

    ``pid`` is the child's process id (stopped by the time this is raised), if it started.
    """

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True)
class NetworkEndpoint:
    """Where the child serves.

    Attributes
    ----------
    prefix
        PV prefix ``$(P)``.
    http_url
        ``http://127.0.0.1:PORT`` of the SIMPLON API.
    ca_port
        Channel Access server port (UDP search and TCP).
    pid
        The child's process id.
    log
        The child's output (stdout and stderr).
    data_dir
        The DCU's data directory (the Tiled server's readable storage).
    """

    prefix: str
    http_url: str
    ca_port: int
    pid: int
    log: Path
    data_dir: Path


def _free_tcp_udp_port(taken: set[int]) -> int:
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if port in taken:
                continue
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise NetworkStartError("no loopback port is free for both TCP and UDP")


def ca_environment(ca_port: int, repeater_port: int) -> dict[str, str]:
    """Channel Access on loopback only, server and clients on ``ca_port``."""
    return {
        "EPICS_CA_SERVER_PORT": str(ca_port),
        "EPICS_CAS_SERVER_PORT": str(ca_port),
        "EPICS_CA_REPEATER_PORT": str(repeater_port),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }


@contextlib.contextmanager
def sim_beamline_process(
    data_dir: Path,
    log_dir: Path,
    *,
    speedup: float,
    binning: int,
    seed: int,
    prefix: str = "OPMAP:",
    startup_timeout_s: float = STARTUP_S,
) -> Iterator[NetworkEndpoint]:
    """Run ``opmap sim-beamline`` on loopback with unique ports until the block ends.

    Sets this process's ``EPICS_CA_*`` variables to the child's ports (see the module
    notes). The child is stopped (SIGTERM, then SIGKILL after `STOP_S`) however the block
    ends, and waited for.

    Raises
    ------
    NetworkStartError
        The child exited before serving, or did not serve within ``startup_timeout_s``;
        the message holds the end of its output.
    """
    taken: set[int] = set()
    ca_port = _free_tcp_udp_port(taken)
    repeater = _free_tcp_udp_port(taken | {ca_port})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = int(probe.getsockname()[1])
    env = ca_environment(ca_port, repeater)
    # the clients of this process (libca reads them once); the EPICS_CAS_* are the server's
    os.environ.update({k: v for k, v in env.items() if not k.startswith("EPICS_CAS_")})
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "sim-beamline.log"
    command = [
        sys.executable, "-m", "opmap.cli", "sim-beamline", "--prefix", prefix,
        "--http-port", str(http_port), "--data-dir", str(data_dir), "--speedup", str(speedup),
        "--binning", str(binning), "--seed", str(seed), "--exit-with-parent",
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )
    try:
        try:
            _wait_for_banner(process, log, startup_timeout_s)
            url = f"http://127.0.0.1:{http_port}"
            _initialize_detector(url)
        except NetworkStartError as err:
            err.pid = process.pid
            raise
        yield NetworkEndpoint(prefix, url, ca_port, process.pid, log, data_dir)
    finally:
        _stop(process)


def _wait_for_banner(process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if any(line.startswith(BANNER) for line in text.splitlines()):
            return
        if process.poll() is not None:
            raise NetworkStartError(
                f"opmap sim-beamline exited with status {process.returncode} before serving; "
                f"its output ({log}):\n{_tail(text)}"
            )
        time.sleep(0.2)
    raise NetworkStartError(
        f"opmap sim-beamline did not serve within {timeout_s:g} s; its output ({log}):\n"
        f"{_tail(log.read_text(errors='replace'))}"
    )


def _initialize_detector(url: str) -> None:
    """``PUT command/initialize``: what an operator does once after the detector powers up."""
    import httpx

    try:
        httpx.put(f"{url}/detector/api/1.8.0/command/initialize", timeout=30.0).raise_for_status()
    except httpx.HTTPError as err:
        raise NetworkStartError(f"initializing the DCU at {url} failed: {err}") from err


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def network_beamline(endpoint: NetworkEndpoint, config: BeamlineConfig) -> Beamline:
    """The real devices pointing at ``endpoint``, not connected (see `connect_all`).

    Built as a facility's profile builds them: ``mode = "real"`` with `RealConfig` at the
    child's PV prefix and URL (`build_beamline`). ``config.sim`` names the twin the child
    serves (binning, seed); its detector geometry, the one the frames are rendered with, is
    written as the profile's PONI file (``data_dir/poni/sim-beamline.poni``), as a
    beamline's design drawings would give it.
    """
    from opmap import _beamline_sim

    p = endpoint.prefix
    real = RealConfig(
        stage_prefix=f"{p}STAGE:",
        potentiostat_prefix=f"{p}EC:",
        beam_current_pv=f"{p}BEAM:CURRENT",
        shutter_prefix=f"{p}BEAM:SHUTTER:",
        sample_changer_pv=f"{p}SAMPLE:POS",
        simplon_url=endpoint.http_url,
        detector_dir=endpoint.data_dir,
    )
    poni = config.data_dir / "poni" / "sim-beamline.poni"
    poni.parent.mkdir(parents=True, exist_ok=True)
    save_poni(_beamline_sim.integrator(config), poni, overwrite=True)  # regenerated each run
    fields = config.model_dump(exclude={"real"}) | {"mode": "real", "poni": poni}
    beamline = build_beamline(BeamlineConfig.model_validate(fields | {"real": real}))
    return dataclasses.replace(beamline, seed=config.sim.seed)


def connect_all(beamline: Beamline, timeout_s: float = CONNECT_S) -> None:
    """Connect every device of ``beamline`` in the RunEngine's event loop.

    Raises
    ------
    NetworkStartError
        A device did not connect (the message names its PVs or URL).
    """
    from bluesky.run_engine import call_in_bluesky_event_loop

    async def connect() -> None:
        await asyncio.gather(
            *(device.connect(timeout=timeout_s) for device in beamline.devices.values())
        )

    try:
        call_in_bluesky_event_loop(connect())
    except (NotConnectedError, OSError, TimeoutError) as err:
        message = f"the devices did not connect to opmap sim-beamline: {err}"
        raise NetworkStartError(message) from err
