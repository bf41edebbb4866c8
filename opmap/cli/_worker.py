"""``opmap analysis-worker``: see `opmap.worker` for the settings and what it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from opmap import worker

from ._worker_args import check_worker_arguments

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analysis-worker`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "analysis-worker",
        help="run the live analysis out of process, subscribed to the 0MQ proxy",
        description=worker.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zmq", required=True, help="HOST:PORT of the proxy's output side")
    parser.add_argument("--settings", type=Path, required=True, help="worker TOML settings")
    parser.add_argument(
        "--max-maps", type=int, default=None, help="exit after analysing this many maps"
    )


def run(args: argparse.Namespace) -> int:
    """Run the worker until interrupted (or ``--max-maps`` maps are analysed)."""
    logging.basicConfig(level=logging.INFO)
    # `opmap` configured the root logger already: the worker's progress is INFO
    logging.getLogger("opmap").setLevel(min(logging.INFO, logging.getLogger().level))
    try:
        address, settings = check_worker_arguments(args)
    except ValueError as error:  # bad arguments: exit 2 before anything starts
        print(f"opmap analysis-worker: error: {error}", file=sys.stderr)
        return 2
    return worker.run_worker(address, settings, args.max_maps)
