"""The Tiled server configuration of an opmap installation, and its API key.

The configuration is plain data (a ``dict`` in tiled's config-file layout), built from
:class:`~opmap.settings.OpmapSettings` by :func:`server_config`, and written to disk as
YAML by :func:`write_server_config` after the directories have been checked.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import stat
from pathlib import Path
from typing import Any

import yaml

from opmap.settings import OpmapSettings, WeakApiKeyError, check_api_key_strength

from ._keys import PROVIDER, authn_database_path, ensure_service_keys
from ._lock import check_unlocked
from ._relocate import check_not_moved

__all__ = [
    "ACCESS_POLICY",
    "AUTHENTICATOR",
    "CATALOG_TREE",
    "JSON_SEQ_EXPORTER",
    "VALIDATOR_ROUTER",
    "check_directories",
    "check_port_free",
    "ensure_api_key",
    "prepare_data_dir",
    "server_config",
    "write_server_config",
]

logger = logging.getLogger(__name__)

#: Server-side exporter behind ``run.documents()`` (media type ``application/json-seq``).
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"
#: Router behind ``run.validate()`` (``/custom/validate/{path}``).
VALIDATOR_ROUTER = "bluesky_tiled_plugins.routers.validator:router"

#: Tree factory of the generated config: Tiled's catalog with opmap's storage guard.
CATALOG_TREE = "opmap.service._guard:from_uri"

#: Access policy of the generated config: a key's role and proposals decide.
ACCESS_POLICY = "opmap.service:ProposalAccessPolicy"
#: Login provider that logs nobody in: principals act through API keys only.
AUTHENTICATOR = "opmap.service:KeysOnlyAuthenticator"

_OWNER_ONLY = 0o600
_OWNER_ONLY_DIR = 0o700
_DIRECTORIES = ("data_dir", "detector_dir", "file_storage_dir", "backup_dir")


def check_directories(settings: OpmapSettings) -> None:
    """Check, without writing anything, that every directory opmap writes can be written.

    A directory that does not exist yet passes when its nearest existing ancestor is a
    writable directory (it will be created there).

    Raises
    ------
    ValueError
        Naming the setting (``data_dir``, ``detector_dir``, ...) and the offending path.
    """
    for name in _DIRECTORIES:
        path: Path = getattr(settings, name)
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{name} {path} cannot be created: {existing} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{name} {path} is not writable (no write permission on {existing})")


def ensure_api_key(settings: OpmapSettings) -> str:
    """Return the API key: the one given, else the one in ``api_key_file``, else a new one.

    A new key (``secrets.token_hex(32)``) is written to ``settings.api_key_file`` with
    owner-only permissions (0o600). An existing key file readable by others is refused.

    Raises
    ------
    ValueError
        When the key file is group/world accessible or does not hold a valid key.
    """
    if settings.api_key is not None:
        return settings.api_key
    path = settings.api_key_file
    assert path is not None  # filled by OpmapSettings
    if path.exists():
        return _read_key_file(path)
    key = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    with os.fdopen(fd, "w") as stream:
        stream.write(key + "\n")
    logger.info("Generated a new Tiled API key in %s", path)
    return key


def _read_key_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"api_key_file {path} has mode {mode:#o}; it must be readable by its owner only "
            f"(run `chmod 600 {path}`)"
        )
    key = path.read_text().strip()
    try:
        check_api_key_strength(key)
    except WeakApiKeyError as error:
        raise WeakApiKeyError(f"api_key_file {path}: {error}") from None
    return key


def _check_hex(key: str, source: str) -> None:
    """Tiled's key database holds hexadecimal keys only (it stores their SHA-256)."""
    try:
        bytes.fromhex(key)
    except ValueError:
        raise ValueError(
            f"{source}: the writer API key must be hexadecimal (0-9a-f, an even number of "
            "digits), e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
        ) from None


def check_port_free(host: str, port: int) -> None:
    """Raise ``ValueError`` when ``host:port`` cannot be bound (in use, or not an address here).

    Binds as uvicorn does (``SO_REUSEADDR``), so a port in ``TIME_WAIT`` passes and a
    listening server does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "in use by another process" if error.errno == errno.EADDRINUSE else error
            raise ValueError(
                f"--port {port} on --host {host} cannot be used ({reason}); stop what holds "
                "it or choose another --port (1-65535)"
            ) from None


def server_config(settings: OpmapSettings) -> dict[str, Any]:
    """Build the Tiled server configuration (tiled's config-file layout) as a ``dict``.

    Parameters
    ----------
    settings : OpmapSettings
        Paths, database URIs and address.

    Returns
    -------
    dict
        Keys ``trees`` (one catalog at ``/``), ``authentication`` (API keys of
        ``DATA_DIR/authn.db``, no anonymous access, principal ``admin`` of provider
        ``opmap`` a Tiled admin), ``database``, ``access_control``
        (:data:`ACCESS_POLICY`), ``media_types``, ``routers`` and ``uvicorn``; validates
        against tiled's service-configuration schema and ``tiled.config.Config``.
    """
    catalog_args = {
        "uri": settings.catalog_uri,
        "init_if_not_exists": True,
        "writable_storage": [str(settings.file_storage_dir), settings.table_store_uri],
        "readable_storage": [str(settings.detector_dir)],
        "table_memory_mb": settings.table_memory_mb,  # opmap's from_uri: DuckDB's limit
        "table_block_kib": settings.table_block_kib,  # opmap's from_uri: a new store's blocks
    }
    authentication = {
        "providers": [{"provider": PROVIDER, "authenticator": AUTHENTICATOR}],
        "tiled_admins": [{"provider": PROVIDER, "id": "admin"}],
        "allow_anonymous_access": False,
    }
    return {
        "trees": [{"path": "/", "tree": CATALOG_TREE, "args": catalog_args}],
        "authentication": authentication,
        "database": {"uri": f"sqlite:///{authn_database_path(settings)}"},
        "access_control": {"access_policy": ACCESS_POLICY, "args": {}},
        "media_types": {"BlueskyRun": {"application/json-seq": JSON_SEQ_EXPORTER}},
        "routers": [VALIDATOR_ROUTER],
        "uvicorn": {"host": settings.host, "port": settings.port},
    }


def prepare_data_dir(settings: OpmapSettings, *, hex_key: bool, check_port: bool = False) -> None:
    """Check the directories and the writer key, then create the directories (owner-only).

    Parameters
    ----------
    settings : OpmapSettings
        The installation.
    hex_key : bool
        Also require a hexadecimal writer key (Tiled's key database holds hex keys only;
        a single-user in-process app takes any strong key).
    check_port : bool, optional
        Also require that ``settings.host:settings.port`` can be bound (before any write).

    Raises
    ------
    ValueError
        Before anything is written, for a bad directory or key file, a non-hex key when
        ``hex_key``, a data directory held by a running server or moved since its catalog
        was written (``opmap relocate``), or a port in use when ``check_port``.
    """
    check_directories(settings)
    if settings.data_dir.exists():
        check_unlocked(settings.data_dir)
        if _default_layout(settings):
            check_not_moved(settings.data_dir)
    if check_port:
        check_port_free(settings.host, settings.port)
    key_file = settings.api_key_file
    if settings.api_key is not None:
        key, source = settings.api_key, "api_key"
    elif key_file is not None and key_file.exists():
        key, source = _read_key_file(key_file), f"api_key_file {key_file}"
    else:
        key, source = None, ""
    if hex_key and key is not None:
        _check_hex(key, source)
    for name in _DIRECTORIES:
        getattr(settings, name).mkdir(mode=_OWNER_ONLY_DIR, parents=True, exist_ok=True)
    _make_owner_only(settings.data_dir)


def _default_layout(settings: OpmapSettings) -> bool:
    """Catalog, tables and product files where opmap puts them in the data directory."""
    default = OpmapSettings(data_dir=settings.data_dir)
    names = ("catalog_uri", "table_store_uri", "file_storage_dir")
    return all(getattr(settings, name) == getattr(default, name) for name in names)


def write_server_config(settings: OpmapSettings, *, check_port: bool = False) -> Path:
    """Check the directories, create them, and write the Tiled config file (mode 0o600).

    With ``check_port``, a port that cannot be bound is refused first (``ValueError``).
    The beamline writer key (``api_key_file``, or ``api_key``) and the admin key
    (``DATA_DIR/admin-key``, made if missing) are registered in Tiled's authentication
    database ``DATA_DIR/authn.db`` (created if missing). An existing config file is
    replaced (it is derived data: the settings are the source). The data directory is made
    owner-only (0o700), as are the directories created under it.

    Returns
    -------
    Path
        ``settings.config_file``.

    Raises
    ------
    ValueError
        From :func:`check_directories` or :func:`ensure_api_key`, before anything is
        written; :class:`~opmap.service._lock.DataDirInUseError` when a server runs on
        the data directory.
    """
    prepare_data_dir(settings, hex_key=True, check_port=check_port)
    ensure_service_keys(settings, ensure_api_key(settings))
    config = server_config(settings)
    path = settings.config_file
    assert path is not None  # filled by OpmapSettings
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OWNER_ONLY)
    with os.fdopen(fd, "w") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    os.chmod(temporary, _OWNER_ONLY)
    temporary.replace(path)
    return path


def _make_owner_only(directory: Path) -> None:
    """Set ``directory`` to 0o700 (it holds the key, the catalog and the logs)."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode != _OWNER_ONLY_DIR:
        logger.info("Setting %s to mode 0o700 (was %#o)", directory, mode)
        directory.chmod(_OWNER_ONLY_DIR)
