"""``opmap serve``: start the Tiled server that holds runs, frames and products.

Options given on the command line override those of ``--settings FILE.toml``, which
override the defaults of :class:`~opmap.settings.OpmapSettings`.

Access per proposal: the writer key (``DATA_DIR/api-key``) creates and writes, the admin
key (``DATA_DIR/admin-key``) also deletes; collaborators get reader keys from
``opmap keys create``.

Safe by default: the server binds 127.0.0.1; any other address needs ``--allow-remote``
and is served over plain HTTP, so a warning says to put a TLS reverse proxy in front.
One server per data directory (a lock file names the PID holding it). Bad input (an
option combination, a weak key, a held lock, a port in use) exits with status 2 and
writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from opmap.settings import OpmapSettings, is_loopback, toml_values

__all__ = ["register", "run", "settings_from_args"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="start the Tiled server (SQLite catalog, API key, localhost by default)",
        description=__doc__,
    )
    parser.add_argument("--settings", type=Path, help="TOML file with OpmapSettings fields")
    parser.add_argument("--data-dir", type=Path, help="root of all opmap data (./opmap-data)")
    parser.add_argument("--host", help="interface to bind (127.0.0.1: this machine only)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a --host reachable from other machines (0.0.0.0, a LAN address)",
    )
    parser.add_argument("--port", type=int, help="TCP port, 1-65535 (8000)")
    parser.add_argument(
        "--api-key",
        help="beamline writer API key, >= 32 random hex digits; default: read from or "
        "generated in DATA_DIR/api-key (a key on the command line is visible to other "
        "users of this machine)",
    )
    parser.add_argument(
        "--catalog",
        help="catalog database URI: sqlite:///ABS/catalog.db (default) or "
        "postgresql://user:password@host/db for several writers",
    )
    parser.add_argument(
        "--config-only", action="store_true", help="write the Tiled config file and exit"
    )
    parser.set_defaults(func=run)
    return parser


def settings_from_args(args: argparse.Namespace) -> OpmapSettings:
    """Merge ``--settings`` and the command-line options into one validated settings."""
    values: dict[str, Any] = {}
    if args.settings is not None:
        if args.data_dir is not None:
            raise ValueError("--data-dir cannot be combined with --settings; set data_dir there")
        values = toml_values(args.settings)
    overrides = {
        "data_dir": args.data_dir,
        "host": args.host,
        "allow_remote": args.allow_remote,
        "port": args.port,
        "api_key": args.api_key,
        "catalog_uri": args.catalog,
    }
    values |= {name: value for name, value in overrides.items() if value is not None}
    return OpmapSettings.model_validate(values)


def run(args: argparse.Namespace) -> int:
    """Write the config and, unless ``--config-only``, serve in the foreground."""
    from opmap.service import run_config_file, write_server_config

    try:
        settings = settings_from_args(args)
        config_file = write_server_config(settings, check_port=not args.config_only)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    key_source = "given on the command line" if args.api_key else settings.api_key_file
    print(f"Tiled config: {config_file}")
    print(f"Writer key:   {key_source}; admin key: {settings.data_dir / 'admin-key'}")
    if args.config_only:
        return 0
    print(f"Serving on    {settings.bind_url}  (send 'Authorization: Apikey KEY')")
    if not is_loopback(settings.host):
        print(
            f"WARNING: {settings.host} is reachable from other machines over plain HTTP: "
            "the API key and the data cross the network unencrypted. Put a TLS reverse "
            "proxy in front (docs/operations.md).",
            file=sys.stderr,
        )
    try:
        run_config_file(config_file, lock_dir=settings.data_dir)
    except ValueError as error:  # another server took the lock since the check above
        logger.error("%s", error)
        return 2
    return 0
