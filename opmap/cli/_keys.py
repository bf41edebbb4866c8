"""``opmap keys``: create, list and revoke the API keys of an opmap server.

A key belongs to a user and has a role: ``reader`` (reads the experiments of its
proposals, nothing else), ``writer`` (also creates and writes; cannot delete), or
``admin`` (everything, including deleting and managing keys). ``create`` prints the new
key once, alone on standard output (``KEY=$(opmap keys create ...)``); only its hash is
kept. Keys are stored in ``DATA_DIR/authn.db`` and take effect at once, whether or not
the server runs.

Examples
--------
::

    opmap keys create alice --role reader --proposal p20261234 --expires-in 30d
    opmap keys list
    opmap keys revoke 3f9a0c1e
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from opmap.settings import OpmapSettings, toml_values

__all__ = ["parse_duration", "register", "run_create", "run_list", "run_revoke"]

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"(?P<value>\d+)(?P<unit>[smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """A lifetime such as ``30d``, ``12h``, ``90m``, ``2w`` or ``3600`` (seconds).

    Examples
    --------
    >>> parse_duration("30d")
    datetime.timedelta(days=30)
    >>> parse_duration("90m")
    datetime.timedelta(seconds=5400)
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match["value"]) == 0:
        raise argparse.ArgumentTypeError(
            f"--expires-in {text!r}: give a positive number with s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(seconds=int(match["value"]) * _UNIT_S[match["unit"]])


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``keys`` sub-command (``create``, ``list``, ``revoke``) to ``opmap``."""
    from opmap.service import ROLES

    parser = subparsers.add_parser(
        "keys", help="create, list and revoke API keys (per user, role and proposal)"
    )
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--settings", type=Path, help="TOML file with OpmapSettings fields")
    parser.add_argument("--data-dir", type=Path, help="root of all opmap data (./opmap-data)")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="the user, 1-64 of A-Za-z0-9._- (created on first use)")
    create.add_argument("--role", choices=ROLES, required=True, help="what the key may do")
    create.add_argument(
        "--proposal",
        action="append",
        default=[],
        help="restrict the key to this proposal (repeat for several; required for readers)",
    )
    create.add_argument("--expires-in", type=parse_duration, help="lifetime, e.g. 30d, 12h")
    create.add_argument("--note", help="free text shown by `opmap keys list`")
    create.set_defaults(func=run_create)
    actions.add_parser("list", help="list keys (never their secrets)").set_defaults(func=run_list)
    revoke = actions.add_parser("revoke", help="delete a key at once")
    revoke.add_argument("first_eight", help="the first eight characters, as listed")
    revoke.set_defaults(func=run_revoke)
    return parser


def _settings(args: argparse.Namespace) -> OpmapSettings:
    if args.settings is not None:
        if args.data_dir is not None:
            raise ValueError("--data-dir cannot be combined with --settings; set data_dir there")
        return OpmapSettings.model_validate(toml_values(args.settings))
    values = {} if args.data_dir is None else {"data_dir": args.data_dir}
    return OpmapSettings.model_validate(values)


def run_create(args: argparse.Namespace) -> int:
    """Create a key; print it alone on stdout, what it allows on stderr."""
    from opmap.service import create_key

    try:
        settings = _settings(args)
        key = create_key(
            settings,
            args.name,
            args.role,
            proposals=args.proposal,
            expires_in=args.expires_in,
            note=args.note,
        )
    except ValueError as error:
        logger.error("%s", error)
        return 2
    scope = ", ".join(args.proposal) if args.proposal else "all proposals"
    expiry = f", expires in {args.expires_in}" if args.expires_in else ""
    print(f"New {args.role} key for {args.name} ({scope}{expiry}); shown once:", file=sys.stderr)
    print(key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print one line per key: first eight, user, role, proposals, expiry, last use."""
    from opmap.service import list_keys

    try:
        keys = list_keys(_settings(args))
    except ValueError as error:
        logger.error("%s", error)
        return 2
    print(f"{'KEY':<10}{'USER':<16}{'ROLE':<8}{'PROPOSALS':<24}{'EXPIRES':<22}LAST USED")
    for key in keys:
        expires = key.expires.isoformat(timespec="minutes") if key.expires else "never"
        used = key.last_used.isoformat(timespec="minutes") if key.last_used else "never"
        proposals = ",".join(key.proposals) or "all"
        print(
            f"{key.first_eight:<10}{key.name:<16}{key.role:<8}{proposals:<24}{expires:<22}{used}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Delete the key whose first eight characters are given; exit 2 when none or several."""
    from opmap.service import revoke_key

    try:
        info = revoke_key(_settings(args), args.first_eight)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    except LookupError as error:  # no such key, or the prefix is ambiguous: bad input
        logger.error("%s", error.args[0])
        return 2
    print(f"Revoked {info.role} key {info.first_eight} of {info.name}")
    return 0
