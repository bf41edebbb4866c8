"""One simulated beamline over the network: the IOC and the DCU on one twin and one time base.

``opmap sim-beamline`` serves, in one process and one asyncio loop,

- the Channel Access PVs of ``opmap sim-ioc`` (`opmap.sim_ioc`: potentiostat ``$(P)EC:``,
  motor records ``$(P)STAGE:X`` / ``$(P)STAGE:Z``, beam ``$(P)BEAM:``) plus the sample
  changer ``$(P)SAMPLE:POS`` (`opmap.sim_ioc.SamplePVs`);
- the SIMPLON HTTP API of ``opmap sim-dcu`` (`opmap.sim_dcu`), and next to it the
  simulation-only truth channel ``/opmap/api/1/truth/...`` (`truth_routes`: the twin's
  ground truth of a map, and the cell clock, for the rehearsal's truth table),

around ONE digital twin (`opmap.twin.CellTwin`). The DCU renders each frame where the IOC's
motors were during its exposure and the cell as it was then.

Time (`SharedTime`): everything runs in the server's wall time (seconds since start-up,
monotonic) except the electrochemistry, whose clock runs ``speedup`` times faster. Motor
moves (``.VELO``, ``.ACCL``) and detector exposures (``count_time``, ``frame_time``) are
wall seconds, as on a beamline; the cell's time is ``speedup × wall`` (``$(P)EC:TIME``).
A frame exposed over wall ``[t0, t1]`` sees the x axis travel from its position at ``t0``
to its position at ``t1``, z at mid-exposure, and the cell at ``speedup × (t0 + t1) / 2``.

Simplifications (see ``docs/real-hardware.md``):

- positions are the motors' trajectories at the frame times (what ``.RBV`` samples every
  20 ms), not interpolated ``.RBV`` values;
- a frame is rendered after its series' exposure ends, from the trajectories remembered
  by the motor records (`MotorRecordPVs.position_at_um`);
- the shutter is not consulted: frames show the sample whether it is open or closed (as
  in the in-process simulation);
- with ``speedup`` > 1 the cell changes ``speedup`` times more during an exposure than it
  would: a frame samples it at mid-exposure, as the in-process simulation does;
- the sample changer moves at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opmap.beamline import BeamlineConfig, SimConfig
from opmap.devices.sim import CellTimeScene, SharedTime, SimPotentiostatDriver
from opmap.twin import CellTwin
from opmap.twin_truth import TRUTH_API, map_truth, truth_to_npz

from .sim_dcu import DcuOptions, DcuSources, SimDcu, build_app
from .sim_ioc import CaServerContext, IocGroups, IocOptions, SamplePVs, build_groups

__all__ = [
    "CELL_HISTORY_S",
    "SharedTime",
    "SimBeamline",
    "SimBeamlineOptions",
    "bind_http",
    "serve_sim_beamline",
    "truth_routes",
]

#: Cell time (s) the twin keeps behind now: frames are rendered right after their series.
CELL_HISTORY_S = 3600.0


@dataclass(frozen=True)
class SimBeamlineOptions:
    """What ``opmap sim-beamline`` serves.

    Parameters
    ----------
    data_dir
        The DCU file writer's data directory.
    prefix
        PV prefix ``$(P)``.
    speedup
        Cell (electrochemistry) seconds per wall second (> 0; 1 = real time).
    sample_interval_s
        Potentiostat sampling period (s of cell time, > 0).
    binning
        Eiger 4M binning of the rendered frames (1-16).
    twin_config
        A `TwinConfig` TOML/YAML file, or None for the paper's values.
    seed
        The simulation's one seed (twin, detector noise, ring-current noise).
    """

    data_dir: Path
    prefix: str = "OPMAP:"
    speedup: float = 1.0
    sample_interval_s: float = 1.0
    binning: int = 4
    twin_config: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.binning <= 16:
            raise ValueError(f"binning={self.binning} must be 1-16")
        if self.twin_config is not None and not Path(self.twin_config).is_file():
            raise FileNotFoundError(f"twin_config {self.twin_config} is not a file")
        self.ioc_options()  # prefix, speedup, sample interval checked here

    def ioc_options(self) -> IocOptions:
        """The IOC part's options."""
        return IocOptions(
            prefix=self.prefix,
            seed=self.seed,
            speedup=self.speedup,
            sample_interval_s=self.sample_interval_s,
            twin_config=self.twin_config,
        )

    def dcu_options(self) -> DcuOptions:
        """The DCU part's options."""
        return DcuOptions(
            data_dir=self.data_dir,
            binning=self.binning,
            twin_config=self.twin_config,
            seed=self.seed,
        )


@dataclass
class SimBeamline:
    """The shared twin and the two servers' state (build with `SimBeamline.create`)."""

    options: SimBeamlineOptions
    time: SharedTime
    twin: CellTwin
    ioc: IocGroups
    dcu: SimDcu
    #: Cell time (s) before which the twin may forget, set by the rehearsal through the
    #: truth channel (``PUT /opmap/api/1/truth/keep_from``): truths still to be asked for
    #: need the cell from there on. None = only `CELL_HISTORY_S` counts.
    truth_keep_from_s: float | None = None

    @classmethod
    def create(cls, options: SimBeamlineOptions) -> SimBeamline:
        """Build the twin (seconds), the PV groups and the DCU on it."""
        from opmap import _beamline_sim

        time = SharedTime(options.speedup)
        sim = SimConfig(
            binning=options.binning, twin_config=options.twin_config, seed=options.seed
        )
        parts = _beamline_sim.build_twin(BeamlineConfig(data_dir=options.data_dir, sim=sim))
        twin = parts.twin
        driver = SimPotentiostatDriver(
            twin.electrochemistry, time.cell, sample_interval_s=options.sample_interval_s
        )
        sample = SamplePVs(f"{options.prefix}SAMPLE:", changer=parts.changer)
        ioc = build_groups(
            options.ioc_options(), driver, motor_clock=time.wall.now_s, extra=(sample,)
        )
        sources = DcuSources(
            clock=time.wall,
            scene=CellTimeScene(twin, time),
            renderer=parts.renderer,
            x_axis=ioc.x,
            z_axis=ioc.z,
            integrator=parts.integrator,
        )
        return cls(options, time, twin, ioc, SimDcu.on(options.dcu_options(), sources))

    async def forget_old_cell_states(self, period_s: float = 60.0) -> None:
        """Keep the twin's memory flat: drop snapshots older than `CELL_HISTORY_S`, and
        none from `truth_keep_from_s` on."""
        while True:
            await asyncio.sleep(period_s)
            keep_from_s = self.time.cell.now_s() - CELL_HISTORY_S
            if self.truth_keep_from_s is not None:
                keep_from_s = min(keep_from_s, self.truth_keep_from_s)
            if keep_from_s > 0:
                self.twin.forget_before(keep_from_s)


def _finite(body: Any, key: str, *, optional: bool = False) -> float | None:
    """``body[key]`` as a finite float (None allowed if ``optional``); ValueError naming it."""
    value = body.get(key) if isinstance(body, dict) else None
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number (s of cell time)")
    return float(value)


def truth_routes(beamline: SimBeamline) -> list[Route]:
    """The simulation-only truth channel on ``beamline``'s twin (see `opmap.twin_truth`).

    - ``POST /opmap/api/1/truth/map`` ``{"map_geometry": {...}, "start_s", "stop_s",
      "previous_mid_s"}`` (cell times, s): `map_truth` of the twin, as ``.npz``
      (`truth_to_npz`); 400 naming the bad field, or a time after the cell's now;
    - ``PUT /opmap/api/1/truth/keep_from`` ``{"value": s}``: the twin may forget the cell
      before ``s`` (`SimBeamline.truth_keep_from_s`);
    - ``GET /opmap/api/1/truth/now``: ``{"value": s}``, the cell time now (the clock of
      ``$(P)EC:TIME`` and of the frames): the rehearsal notes a map's start and stop with it.

    A truth is computed in the servers' event loop: the IOC's potentiostat advances the
    same electrochemistry from that loop, and a truth from another thread raced it (a
    sample time stepping back). The servers pause meanwhile (0.1-0.6 s for a 9 × 9 map
    here), while the rehearsal's plan waits for this very truth between two maps.
    """

    async def truth(request: Request) -> Response:
        try:
            body = await request.json()
            start_s, stop_s = _finite(body, "start_s"), _finite(body, "stop_s")
            previous_s = _finite(body, "previous_mid_s", optional=True)
            now_s = beamline.time.cell.now_s()
            if stop_s > now_s:
                raise ValueError(f"stop_s={stop_s} is after the cell's now ({now_s:.3f} s)")
            geometry = body.get("map_geometry")
            arrays = map_truth(beamline.twin, geometry, start_s, stop_s, previous_s)
        except (ValueError, TypeError) as err:  # the request's fault: said to the client
            return Response(f"truth: {err}", status_code=400)
        return Response(truth_to_npz(arrays), media_type="application/octet-stream")

    async def keep_from(request: Request) -> Response:
        try:
            beamline.truth_keep_from_s = _finite(await request.json(), "value")
        except ValueError as err:
            return Response(f"keep_from: {err}", status_code=400)
        return JSONResponse([])

    async def now(request: Request) -> Response:
        return JSONResponse({"value": beamline.time.cell.now_s()})

    return [
        Route(f"{TRUTH_API}/map", truth, methods=["POST"]),
        Route(f"{TRUTH_API}/now", now, methods=["GET"]),
        Route(f"{TRUTH_API}/keep_from", keep_from, methods=["PUT"]),
    ]


def bind_http(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Raises
    ------
    OSError
        The port is in use or the address cannot be bound (the message names both).
    """
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of such a
    # socket; without it a response's header and body writes wait for the client's delayed
    # ACK (Nagle), 40 ms per request on Linux
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"HTTP port {host}:{port} cannot be bound: {err.strerror}") from err
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def _parent_gone(parent_pid: int, period_s: float = 1.0) -> None:
    """Return once this process is no longer the child of ``parent_pid``."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(period_s)


async def serve_sim_beamline(
    beamline: SimBeamline,
    host: str,
    http_socket: socket.socket,
    announce: Callable[[int], Any],
    *,
    parent_pid: int | None = None,
) -> None:
    """Serve Channel Access and SIMPLON HTTP until interrupted (SIGINT / SIGTERM).

    Parameters
    ----------
    beamline
        What to serve.
    host
        Interface of the Channel Access server.
    http_socket
        The bound HTTP socket (`bind_http`).
    announce
        Called with the CA server's TCP port once both servers accept clients.
    parent_pid
        Stop serving when this process stops being its child (the parent died, even by
        SIGKILL, and could not stop it); None = serve on.
    """
    import uvicorn

    app = build_app(beamline.options.dcu_options(), make_dcu=lambda: beamline.dcu)
    app.router.routes.extend(truth_routes(beamline))  # the simulation-only truth channel
    http = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    context = CaServerContext(beamline.ioc.pvdb, [host])

    async def when_both_up(async_lib: Any) -> None:
        while not http.started:
            await asyncio.sleep(0.05)
        announce(int(context.port))

    tasks = [
        asyncio.ensure_future(http.serve(sockets=[http_socket])),
        asyncio.ensure_future(context.run(startup_hook=when_both_up)),
        asyncio.ensure_future(beamline.forget_old_cell_states()),
    ]
    if parent_pid is not None:
        tasks.append(asyncio.ensure_future(_parent_gone(parent_pid)))
    try:  # the HTTP server returns on SIGINT / SIGTERM (or if its start-up fails)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        if not http.started and not any(task in done for task in tasks[3:]):
            raise RuntimeError("the SIMPLON HTTP server did not start (see the log above)")
    finally:
        if not tasks[0].done():  # the HTTP server shuts down cleanly: the DCU closes its files
            http.should_exit = True
            await asyncio.wait([tasks[0]], timeout=10.0)
        for task in tasks:
            task.cancel()
        # the first failure was raised above; the others are only waited for here
        await asyncio.gather(*tasks, return_exceptions=True)
