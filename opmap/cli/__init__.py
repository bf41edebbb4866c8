"""The ``opmap`` command line: one sub-command per user task.

Each sub-command lives in its own module and registers itself here through a
``register(subparsers)`` function, so this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from opmap import __version__

from ._analyze import forward_deprecated
from ._profile import profile_directory
from ._serve import settings_from_args

__all__ = ["build_parser", "forward_deprecated", "main", "profile_directory", "settings_from_args"]

#: Modules that provide sub-commands, in the order ``opmap --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "opmap.cli._rehearse",
    "opmap.cli._resume",
    "opmap.cli._serve",
    "opmap.cli._keys",
    "opmap.cli._relocate",
    "opmap.cli._profile",
    "opmap.cli._worker",
    "opmap.cli._zmq_proxy",
    "opmap.cli._recover",
    "opmap.cli._analyze",
    "opmap.cli._replay",
    "opmap.cli._report",
    "opmap.cli._sim_dcu",
    "opmap.cli._sim_ioc",
    "opmap.cli._sim_beamline",
    "opmap.cli._queue",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="opmap",
        description="Operando micro-XRD imaging of batteries on Bluesky and Tiled.",
    )
    parser.add_argument("--version", action="version", version=f"opmap {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``opmap`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(forward_deprecated(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
