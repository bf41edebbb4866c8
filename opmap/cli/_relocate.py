"""``opmap relocate DATA_DIR``: make a moved, copied or restored data directory serve again.

Tiled's catalog stores absolute paths; after ``mv``/``cp -a``/``tar x`` of a data
directory they point at its old place, and ``opmap serve`` refuses to start until this
command has rewritten them (in one transaction, with the server lock held). The old
place is read from the catalog itself; ``--from OLD`` overrides it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``relocate`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "relocate",
        help="rewrite a moved data directory's catalog paths so that it serves again",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="where it is now")
    parser.add_argument(
        "--from", dest="old", type=Path, metavar="OLD", help="where it was (default: recorded)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Rewrite the paths; print how many. Exit status 2 on bad input (nothing changed)."""
    from opmap.service import recorded_data_dir, relocate_data_dir

    try:
        if not args.data_dir.is_dir():
            raise ValueError(f"DATA_DIR {args.data_dir} is not a directory")
        old = args.old if args.old is not None else recorded_data_dir(args.data_dir)
        count = relocate_data_dir(args.data_dir, old)
    except (ValueError, OSError) as error:
        print(f"opmap relocate: error: {error}", file=sys.stderr)
        return 2
    where = args.data_dir.resolve()
    if count == 0:
        print(f"{where}: nothing to rewrite (the catalog already points here)")
    else:
        print(f"{where}: {count} asset paths rewritten from {old}")
    return 0
