"""``opmap sim-ioc``: a soft IOC (Channel Access) serving the twin's potentiostat, stage and beam.

PVs under ``--prefix`` (default ``OPMAP:``): ``EC:*`` (the potentiostat interface of
`opmap.devices.epics_potentiostat`), ``STAGE:X`` / ``STAGE:Z`` (motor records, as
`opmap.devices.MapStage` uses them with prefix ``OPMAP:STAGE:``), ``BEAM:CURRENT`` and
``BEAM:SHUTTER:`` (`opmap.devices.BeamMonitor`). Ports and addresses come from the usual
EPICS variables: ``EPICS_CAS_SERVER_PORT`` (or ``EPICS_CA_SERVER_PORT``, default 5064) for
the server, ``EPICS_CA_ADDR_LIST`` / ``EPICS_CA_AUTO_ADDR_LIST`` for clients. See
``docs/real-hardware.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sim-ioc`` sub-command."""
    parser = subparsers.add_parser(
        "sim-ioc",
        help="serve the twin's potentiostat, the map stage and the beam as EPICS PVs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prefix", default="OPMAP:", help="PV prefix (default OPMAP:)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to serve on (default local only)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the ring-current noise")
    parser.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="experiment seconds per wall second of the electrochemistry (default 1)",
    )
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=1.0,
        help="potentiostat sampling period, s of experiment time (default 1)",
    )
    parser.add_argument("--twin-config", type=Path, default=None, help="TwinConfig TOML/YAML")
    parser.set_defaults(func=run)


def _server_port() -> int:
    # caproto reads EPICS_CA_SERVER_PORT; an IOC's own variable is EPICS_CAS_SERVER_PORT
    name = "EPICS_CAS_SERVER_PORT" if "EPICS_CAS_SERVER_PORT" in os.environ else None
    name = name or ("EPICS_CA_SERVER_PORT" if "EPICS_CA_SERVER_PORT" in os.environ else None)
    text = os.environ[name] if name else "5064"
    if not (text.strip().isdigit() and 0 < int(text) < 65536):
        raise ValueError(f"{name}={text!r} is not a port number (1-65535)")
    port = int(text)
    os.environ["EPICS_CA_SERVER_PORT"] = str(port)
    return port


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted. Exit status 2 on bad options."""
    from opmap.sim_ioc import IocOptions, build_pvdb, serve_pvdb

    try:
        if args.twin_config is not None and not args.twin_config.is_file():
            raise FileNotFoundError(f"--twin-config {args.twin_config} is not a file")
        options = IocOptions(
            prefix=args.prefix,
            seed=args.seed,
            speedup=args.speedup,
            sample_interval_s=args.sample_interval,
            twin_config=args.twin_config,
        )
        port = _server_port()
        pvdb, _ = build_pvdb(options)
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        print(f"opmap sim-ioc: error: {error}", file=sys.stderr)
        return 2

    async def announce(async_lib: object) -> None:
        # called once the server's sockets are bound: clients may search from now on
        print(
            f"opmap sim-ioc: serving {len(pvdb)} PVs under {options.prefix} on {args.host}, "
            f"UDP port {port} (Channel Access), electrochemistry at {options.speedup:g}x",
            flush=True,
        )

    serve_pvdb(pvdb, [args.host], startup_hook=announce)
    return 0
