"""``opmap profile install``: a Tiled client profile for the opmap server.

After ``opmap profile install``, ``databroker.from_profile("opmap")`` (which is
``tiled.client.from_profile``) connects to the server with its API key::

    opmap profile install [--settings opmap.toml | --data-dir DIR] [--name opmap]
                          [--url http://beamline:8000] [--key-from-env] [--force]
                          [--node raw]

With ``--node raw`` the profile opens at the catalog of raw runs (databroker's view):
``catalog = databroker.from_profile("opmap-raw"); catalog[-1]`` is the latest run,
``catalog[scan_id]`` a run by scan id.

The profile is a YAML file ``<name>.yml`` in Tiled's user profile directory: ``$TILED_PROFILES``
when set, else ``<user config dir>/tiled/profiles`` (``~/.config/tiled/profiles`` on Linux),
the directory Tiled searches with the highest precedence. Tiled profiles have no field for a
key file, so the key is written into the profile's ``uri`` as ``?api_key=KEY`` (Tiled moves it
into the ``Authorization`` header and out of the URI it shows) and the file is made readable
by its owner only (0600). With ``--key-from-env`` no key is written; the client then reads it
from the environment variable ``TILED_API_KEY``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from opmap.settings import OpmapSettings

__all__ = ["install_profile", "profile_directory", "register", "run"]

logger = logging.getLogger(__name__)

_OWNER_ONLY = 0o600


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``profile`` sub-command (with ``install``) to the ``opmap`` parser."""
    parser = subparsers.add_parser(
        "profile",
        help="install a Tiled/databroker client profile for the opmap server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="profile_action", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="write <name>.yml into Tiled's profile directory")
    install.add_argument("--settings", type=Path, help="TOML file with OpmapSettings fields")
    install.add_argument("--data-dir", type=Path, help="root of all opmap data (./opmap-data)")
    install.add_argument("--name", default="opmap", help="profile name (default: opmap)")
    install.add_argument("--url", help="server URL as clients reach it (default: from settings)")
    install.add_argument(
        "--key-from-env",
        action="store_true",
        help="write no key; clients read it from the TILED_API_KEY environment variable",
    )
    install.add_argument(
        "--node",
        help="root the profile at this node, e.g. 'raw': a databroker catalog of runs where "
        "catalog[-1] is the latest run (default: the server's root)",
    )
    install.add_argument("--force", action="store_true", help="replace an existing profile")
    install.set_defaults(func=run)
    return parser


def profile_directory() -> Path:
    """Tiled's user profile directory, as Tiled resolves it (``$TILED_PROFILES`` first)."""
    import platformdirs

    default = Path(platformdirs.user_config_dir("tiled"), "profiles")
    return Path(os.environ.get("TILED_PROFILES", default))


def install_profile(
    name: str,
    url: str,
    api_key: str | None,
    *,
    directory: Path | None = None,
    overwrite: bool = False,
    node: str | None = None,
) -> Path:
    """Write the Tiled profile ``name`` pointing at ``url``; return the file written.

    Parameters
    ----------
    name : str
        Profile name (letters, digits, ``-`` and ``_``), used as ``from_profile(name)``.
    url : str
        ``http://`` or ``https://`` URL of the server.
    api_key : str or None
        Written into the URI (file mode 0600); None leaves it to ``TILED_API_KEY``.
    directory : Path, optional
        Default :func:`profile_directory`.
    overwrite : bool
        Replace an existing profile file of that name.
    node : str, optional
        Path of the node the client opens at (``"raw"``: the catalog of runs, where
        ``catalog[-1]`` is the latest run); default: the server's root.

    Raises
    ------
    ValueError
        For a bad name or URL, or when the profile exists and ``overwrite`` is False.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"name must be letters, digits, '-' or '_'; got {name!r}")
    if not url.startswith(("http://", "https://")) or "?" in url:
        raise ValueError(f"url must be http(s)://host:port without a query; got {url!r}")
    if node is not None and not all(
        part.replace("-", "").replace("_", "").isalnum() for part in node.strip("/").split("/")
    ):
        raise ValueError(f"node must be a path of letters, digits, '-', '_'; got {node!r}")
    target = (directory or profile_directory()) / f"{name}.yml"
    if target.exists() and not overwrite:
        raise ValueError(f"profile {name!r} already exists at {target}; pass --force to replace")
    base = url.rstrip("/") + (f"/api/v1/metadata/{node.strip('/')}" if node else "")
    uri = base if api_key is None else f"{base}?api_key={api_key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    # Created owner-only: the key is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    with os.fdopen(fd, "w") as stream:
        yaml.safe_dump({name: {"uri": uri}}, stream)
    temporary.replace(target)
    return target


def _settings(args: argparse.Namespace) -> OpmapSettings:
    if args.settings is not None and args.data_dir is not None:
        raise ValueError("--data-dir cannot be combined with --settings; set data_dir there")
    if args.settings is not None:
        return OpmapSettings.from_toml(args.settings)
    return OpmapSettings(data_dir=args.data_dir) if args.data_dir else OpmapSettings()


def _api_key(settings: OpmapSettings) -> str:
    from opmap.service import ensure_api_key

    key_file = settings.api_key_file
    if settings.api_key is None and (key_file is None or not key_file.exists()):
        raise ValueError(
            f"no API key: {key_file} does not exist (run `opmap serve` once to create it, "
            "or use --key-from-env)"
        )
    return ensure_api_key(settings)


def run(args: argparse.Namespace) -> int:
    """``opmap profile install``: write the profile, print where and how to use it."""
    try:
        settings = _settings(args)
        key = None if args.key_from_env else _api_key(settings)
        url = args.url or settings.url
        path = install_profile(args.name, url, key, overwrite=args.force, node=args.node)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    print(f"Tiled profile {args.name!r}: {path}")
    print(f"Use: databroker.from_profile({args.name!r})")
    if args.key_from_env:
        print("Set TILED_API_KEY to the server's key before connecting.")
    return 0
