"""Argument checks of ``opmap analysis-worker``, made before the worker starts.

Only the command line and the settings file are checked here (addresses, files, the
output directory, the Tiled URL); what the worker does at run time is `opmap.worker`'s.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["check_worker_arguments"]


def check_worker_arguments(args: argparse.Namespace) -> tuple[tuple[str, int], Any]:
    """The proxy address and the worker settings, every one checked.

    Raises
    ------
    ValueError
        Naming the option or setting: ``--zmq`` not HOST:PORT, ``--max-maps`` < 1, a missing
        or invalid ``--settings``, a missing ``parameters`` or ``poni`` file, an
        ``output_dir`` that cannot be written, a ``tiled_uri`` that is not http(s)://HOST.
    """
    from opmap import worker

    address = worker.parse_zmq_address(args.zmq)
    if args.max_maps is not None and args.max_maps < 1:
        raise ValueError(f"--max-maps {args.max_maps} must be >= 1")
    if not Path(args.settings).is_file():
        raise ValueError(f"--settings {args.settings}: file not found")
    settings = worker.load_settings(args.settings)
    for name in ("parameters", "poni"):
        path = getattr(settings, name)
        if not path.is_file():
            raise ValueError(f"{name} {path} (in --settings {args.settings}): file not found")
    if settings.output_dir is not None:
        _check_writable_dir(settings.output_dir, args.settings)
    if settings.tiled_uri is not None:
        _check_tiled_uri(settings.tiled_uri, args.settings)
    return address, settings


def _check_writable_dir(path: Path, source: Path) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output_dir {path} (in --settings {source}): {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"output_dir {path} (in --settings {source}) is not writable "
            f"(no write permission on {existing})"
        )


def _check_tiled_uri(uri: str, source: Path) -> None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"tiled_uri {uri!r} (in --settings {source}): {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"tiled_uri {uri!r} (in --settings {source}) must be http(s)://HOST[:PORT][/PATH]"
        )
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"tiled_uri {uri!r} (in --settings {source}): port must be 1-65535")
