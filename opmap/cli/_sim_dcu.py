"""``opmap sim-dcu``: a simulated Dectris DCU (SIMPLON HTTP) that renders the twin into files.

Point `opmap.devices.simplon.SimplonEiger` at ``http://HOST:PORT`` and a path provider whose
directory is ``--data-dir``; see ``docs/real-hardware.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sim-dcu`` sub-command."""
    parser = subparsers.add_parser(
        "sim-dcu",
        help="serve a simulated Eiger DCU (Dectris SIMPLON REST API) rendering the twin",
        description=__doc__,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default local)")
    parser.add_argument("--port", type=int, default=8081, help="HTTP port (default 8081)")
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the file writer's data directory"
    )
    parser.add_argument("--binning", type=int, default=4, help="Eiger 4M binning (1-16)")
    parser.add_argument("--twin-config", type=Path, default=None, help="TwinConfig TOML/YAML")
    parser.add_argument("--seed", type=int, default=0, help="seed of the detector noise")
    parser.add_argument("--x-um", type=float, default=0.0, help="beam x on the cell (µm)")
    parser.add_argument("--z-um", type=float, default=0.0, help="beam z on the cell (µm)")
    parser.add_argument(
        "--stream-port",
        type=int,
        default=None,
        help="serve the Dectris stream v2 (CBOR over ZeroMQ PUSH) on this port of --host "
        "(a DCU uses 31001); default: no stream",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    import uvicorn

    from opmap.sim_dcu import API_VERSION, DcuOptions, build_app

    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    options = DcuOptions(
        data_dir=data_dir,
        binning=args.binning,
        twin_config=args.twin_config,
        seed=args.seed,
        x_um=args.x_um,
        z_um=args.z_um,
        stream_endpoint=(
            None if args.stream_port is None else f"tcp://{args.host}:{args.stream_port}"
        ),
    )
    print(
        f"opmap sim-dcu: SIMPLON {API_VERSION} on http://{args.host}:{args.port}, "
        f"files in {data_dir}",
        flush=True,
    )
    uvicorn.run(build_app(options), host=args.host, port=args.port, log_level="warning")
    return 0
