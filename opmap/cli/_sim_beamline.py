"""``opmap sim-beamline``: the simulated IOC and DCU in one process, on one twin and one clock.

Serves the Channel Access PVs of ``opmap sim-ioc`` (plus ``$(P)SAMPLE:POS``, the sample
changer) and the SIMPLON HTTP API of ``opmap sim-dcu`` around ONE digital twin: the DCU
renders each frame at the IOC motors' positions during its exposure and the cell at that
time. Motors and exposures run in wall time; the electrochemistry ``--speedup`` times
faster. CA ports come from ``EPICS_CAS_SERVER_PORT`` (or ``EPICS_CA_SERVER_PORT``, default
5064), as for ``opmap sim-ioc``. See ``docs/real-hardware.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ._sim_ioc import _server_port

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sim-beamline`` sub-command."""
    parser = subparsers.add_parser(
        "sim-beamline",
        help="serve the twin's IOC (Channel Access) and Eiger DCU (SIMPLON HTTP) in one process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prefix", default="OPMAP:", help="PV prefix (default OPMAP:)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default local only)")
    parser.add_argument("--http-port", type=int, default=8081, help="SIMPLON HTTP port")
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the DCU file writer's data directory"
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="cell seconds per wall second of the electrochemistry (default 1)",
    )
    parser.add_argument(
        "--sample-interval", type=float, default=1.0, help="potentiostat sampling period (s)"
    )
    parser.add_argument("--binning", type=int, default=4, help="Eiger 4M binning (1-16)")
    parser.add_argument("--twin-config", type=Path, default=None, help="TwinConfig TOML/YAML")
    parser.add_argument("--seed", type=int, default=0, help="the simulation's seed")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop serving when the parent process dies (opmap rehearse --control network)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted. Exit status 2 on bad options or an HTTP port in use."""
    parent_pid = os.getppid() if args.exit_with_parent else None  # before the slow start
    from opmap.sim_beamline import SimBeamline, SimBeamlineOptions, bind_http, serve_sim_beamline

    try:
        options = SimBeamlineOptions(
            data_dir=args.data_dir.resolve(),
            prefix=args.prefix,
            speedup=args.speedup,
            sample_interval_s=args.sample_interval,
            binning=args.binning,
            twin_config=args.twin_config,
            seed=args.seed,
        )
        ca_port = _server_port()
        if not 0 < args.http_port < 65536:
            raise ValueError(f"--http-port {args.http_port} is not a port number (1-65535)")
        http_socket = bind_http(args.host, args.http_port)
    except (ValueError, OSError) as error:  # FileNotFoundError is an OSError
        print(f"opmap sim-beamline: error: {error}", file=sys.stderr)
        return 2
    options.data_dir.mkdir(parents=True, exist_ok=True)
    beamline = SimBeamline.create(options)

    def announce(tcp_port: int) -> None:
        moved = "" if tcp_port == ca_port else f" (TCP {tcp_port}: {ca_port} was taken)"
        print(
            f"opmap sim-beamline: serving Channel Access under {options.prefix} on "
            f"{args.host}, port {ca_port}{moved}, and SIMPLON on "
            f"http://{args.host}:{args.http_port}, files in {options.data_dir}, "
            f"cell at {options.speedup:g}x",
            flush=True,
        )

    serving = serve_sim_beamline(beamline, args.host, http_socket, announce, parent_pid=parent_pid)
    asyncio.run(serving)
    return 0
