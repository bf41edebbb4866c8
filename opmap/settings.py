"""Settings of an opmap installation: where data live and how the Tiled service is reached.

One frozen :class:`OpmapSettings` holds every path and address the service needs. Paths
that are not given explicitly default to places under ``data_dir`` (``./opmap-data``
relative to the working directory unless chosen otherwise). Constructing the settings
only validates and resolves names; nothing is read or written until the service uses
them, and this module keeps no global state.

Examples
--------
>>> s = OpmapSettings(data_dir="/srv/opmap", port=8123)
>>> str(s.detector_dir)
'/srv/opmap/detector'
>>> s.catalog_uri
'sqlite:////srv/opmap/catalog.db'
>>> s.url
'http://127.0.0.1:8123'
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_DATA_DIR",
    "MIN_API_KEY_BITS",
    "MIN_API_KEY_LENGTH",
    "TABLE_BLOCK_KIB",
    "OpmapSettings",
    "WeakApiKeyError",
    "check_api_key_strength",
    "check_table_block_kib",
    "is_loopback",
    "toml_values",
]

#: The data directory used when none is chosen, relative to the working directory.
DEFAULT_DATA_DIR = Path("opmap-data")

_API_KEY_PATTERN = re.compile(r"[A-Za-z0-9]{1,256}")
#: Shortest API key accepted (``secrets.token_hex(16)`` has 32 characters).
MIN_API_KEY_LENGTH = 32
#: Least estimated entropy of an API key, in bits (length x per-character Shannon entropy).
MIN_API_KEY_BITS = 96
_GENERATE_HINT = "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
_CATALOG_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+asyncpg://")
_TABLE_SCHEMES = ("duckdb:///", "sqlite:///", "postgresql://")
#: Block sizes (KiB) DuckDB accepts for a database file: powers of two, 16 to 256.
TABLE_BLOCK_KIB = (16, 32, 64, 128, 256)
_PATH_FIELDS = (
    "data_dir",
    "detector_dir",
    "file_storage_dir",
    "backup_dir",
    "api_key_file",
    "config_file",
)


class WeakApiKeyError(ValueError):
    """An API key that is too short, too repetitive or not letters and digits."""


def check_api_key_strength(key: str) -> None:
    """Refuse an API key that is easy to guess.

    A key must be 32 to 256 letters and digits, must not repeat a shorter pattern
    (``abcd`` * 8), and its estimated entropy (length times the Shannon entropy of its
    character frequencies) must be at least :data:`MIN_API_KEY_BITS`. A heuristic against
    typed-in keys, not a proof of randomness: generate keys with :mod:`secrets`.

    Raises
    ------
    WeakApiKeyError
        Naming the rule broken; the key itself is never quoted.

    Examples
    --------
    >>> import secrets
    >>> check_api_key_strength(secrets.token_hex(32))
    >>> try:
    ...     check_api_key_strength("password" * 4)
    ... except WeakApiKeyError as error:
    ...     print(str(error)[:45])
    api_key is weak: it repeats a shorter pattern
    """
    if not _API_KEY_PATTERN.fullmatch(key):
        raise WeakApiKeyError(
            f"api_key must be letters and digits [A-Za-z0-9], at most 256; got {len(key)} "
            f"characters including others; {_GENERATE_HINT}"
        )
    if len(key) < MIN_API_KEY_LENGTH:
        raise WeakApiKeyError(
            f"api_key is weak: {len(key)} characters, at least {MIN_API_KEY_LENGTH} are "
            f"required; {_GENERATE_HINT}"
        )
    if (key + key).find(key, 1) < len(key):
        raise WeakApiKeyError(f"api_key is weak: it repeats a shorter pattern; {_GENERATE_HINT}")
    counts = Counter(key).values()
    bits = -sum(n * math.log2(n / len(key)) for n in counts)
    if bits < MIN_API_KEY_BITS:
        raise WeakApiKeyError(
            f"api_key is weak: about {bits:.0f} bits of entropy, at least {MIN_API_KEY_BITS} "
            f"are required (too few distinct characters); {_GENERATE_HINT}"
        )


def check_table_block_kib(value: int) -> int:
    """``value`` if DuckDB accepts it as a block size in KiB (`TABLE_BLOCK_KIB`).

    Examples
    --------
    >>> check_table_block_kib(16)
    16
    >>> try:
    ...     check_table_block_kib(24)
    ... except ValueError as error:
    ...     print(str(error).split(";")[-1])
     got 24
    """
    if value not in TABLE_BLOCK_KIB:
        raise ValueError(
            f"table_block_kib must be a power of two from 16 to 256 (DuckDB's block "
            f"sizes: {', '.join(map(str, TABLE_BLOCK_KIB))}); got {value}"
        )
    return value


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (``localhost``, ``127.x``, ``::1``).

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class OpmapSettings(BaseModel):
    """Paths, database URIs and network address of one opmap installation.

    Parameters
    ----------
    data_dir : Path
        Root of everything opmap writes; default ``./opmap-data``. Made absolute.
    detector_dir : Path, optional
        Where detectors write HDF5 frames; the Tiled server reads them there in place.
        Default ``data_dir / "detector"``.
    file_storage_dir : Path, optional
        Tiled's writable file storage (arrays written through Tiled).
        Default ``data_dir / "tiled-files"``.
    backup_dir : Path, optional
        Where the TiledWriter saves a run as JSON lines when the server fails.
        Default ``data_dir / "backup"``.
    catalog_uri : str, optional
        Tiled catalog database: ``sqlite:///ABS/catalog.db`` (default, one writer) or
        ``postgresql://user:pw@host/db`` for several writers (stored as
        ``postgresql+asyncpg://``).
    table_store_uri : str, optional
        SQL store of the event tables: ``duckdb:///ABS/tables.duckdb`` (default),
        ``sqlite:///ABS/...`` or ``postgresql://...``.
    table_memory_mb : int
        Memory (MB, >= 16) the server's embedded DuckDB table store may hold: its cache of
        stored table blocks and query results, beyond which it evicts blocks (read back
        from its file) and spills larger results to disk; default 64. DuckDB's own
        default, 80 % of RAM, let the server grow with every stored row.
    table_block_kib : int
        Block size (KiB) of a DuckDB table store the server creates: a power of two from
        16 to 256 (DuckDB's range); default 16. DuckDB holds the rows appended since its
        last checkpoint in blocks of this size, at least one per column of each table:
        with its own default, 256 KiB, the server's DuckDB held 2-3 times the rows' size
        (`docs/operations.md`, "Soak"). Only a new store takes it; an existing
        ``tables.duckdb`` keeps the block size it was created with.
    host : str
        Interface the server binds to; default ``127.0.0.1`` (this machine only). Any
        non-loopback address (``0.0.0.0``, a LAN address, a host name) needs
        ``allow_remote``.
    allow_remote : bool
        Allow ``host`` to be reachable from other machines; default False.
    port : int
        TCP port of the server, 1–65535; default 8000.
    api_key : str, optional
        The beamline writer API key (32–256 hex digits, not guessable: see
        :func:`check_api_key_strength`; other keys are made with ``opmap keys``). When
        absent, the key is read from ``api_key_file`` or generated there.
    api_key_file : Path, optional
        File holding the API key, owner-only permissions. Default ``data_dir / "api-key"``.
    config_file : Path, optional
        The generated Tiled server configuration. Default ``data_dir / "tiled-config.yml"``.
    """

    # hide_input_in_errors: a rejected api_key or database password never reaches a log.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    data_dir: Path = DEFAULT_DATA_DIR
    detector_dir: Path | None = None
    file_storage_dir: Path | None = None
    backup_dir: Path | None = None
    catalog_uri: str | None = None
    table_store_uri: str | None = None
    table_memory_mb: int = Field(default=64, ge=16)
    table_block_kib: int = 16
    host: str = Field(default="127.0.0.1", min_length=1)
    allow_remote: bool = False
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: str | None = Field(default=None, repr=False)
    api_key_file: Path | None = None
    config_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        filled = dict(values)
        data_dir = Path(filled.get("data_dir") or DEFAULT_DATA_DIR).absolute()
        filled["data_dir"] = data_dir
        defaults = {
            "detector_dir": data_dir / "detector",
            "file_storage_dir": data_dir / "tiled-files",
            "backup_dir": data_dir / "backup",
            "api_key_file": data_dir / "api-key",
            "config_file": data_dir / "tiled-config.yml",
            "catalog_uri": f"sqlite:///{data_dir / 'catalog.db'}",
            "table_store_uri": f"duckdb:///{data_dir / 'tables.duckdb'}",
        }
        for name, default in defaults.items():
            if filled.get(name) is None:
                filled[name] = default
        return filled

    @field_validator(*_PATH_FIELDS)
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).absolute()

    @field_validator("catalog_uri")
    @classmethod
    def _check_catalog_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(_CATALOG_SCHEMES):
            raise ValueError(
                f"catalog_uri must start with one of {', '.join(_CATALOG_SCHEMES)}; "
                f"got {_redact(value)!r}"
            )
        if value.startswith("postgresql://"):
            return "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("table_store_uri")
    @classmethod
    def _check_table_store_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_TABLE_SCHEMES):
            raise ValueError(
                f"table_store_uri must start with one of {', '.join(_TABLE_SCHEMES)}; "
                f"got {_redact(value)!r}"
            )
        return value

    @field_validator("table_block_kib")
    @classmethod
    def _check_table_block_kib(cls, value: int) -> int:
        return check_table_block_kib(value)

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: str | None) -> str | None:
        if value is not None:
            check_api_key_strength(value)
        return value

    @model_validator(mode="after")
    def _check_remote(self) -> Self:
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines; binding beyond "
                "loopback (127.0.0.1, ::1, localhost) needs allow_remote = true "
                "(`opmap serve --allow-remote`)"
            )
        return self

    @property
    def url(self) -> str:
        """Base URL of the server as clients reach it, e.g. ``http://127.0.0.1:8000``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def bind_url(self) -> str:
        """The address the server binds, as given: ``http://0.0.0.0:8000`` for all interfaces."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def uses_postgresql(self) -> bool:
        """True when the catalog lives in PostgreSQL (several writers allowed)."""
        return str(self.catalog_uri).startswith("postgresql")

    @classmethod
    def from_toml(cls, path: Path | str, *, table: str | None = None) -> Self:
        """Load settings from a TOML file; relative paths are taken from the file's folder.

        Parameters
        ----------
        path : Path or str
            The TOML file.
        table : str, optional
            Dotted name of the table holding the settings (e.g. ``"opmap.service"``);
            default: the whole document.

        Raises
        ------
        ValueError
            When the file does not parse, the table is missing, or a field is unknown or
            out of range (the message names the field).
        """
        return cls.model_validate(toml_values(path, table=table))


def toml_values(path: Path | str, *, table: str | None = None) -> dict[str, Any]:
    """The raw fields of a settings TOML file, relative paths made absolute, not validated.

    For callers that merge command-line options before validating (``opmap serve``);
    see :meth:`OpmapSettings.from_toml` for the parameters.
    """
    path = Path(path)
    with path.open("rb") as stream:
        try:
            document: dict[str, Any] = tomllib.load(stream)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"settings file {path} is not valid TOML: {error}") from None
    for key in table.split(".") if table else ():
        if not isinstance(document.get(key), dict):
            raise ValueError(f"settings file {path} has no table [{table}]")
        document = document[key]
    base = path.absolute().parent
    return {
        name: base / value if name in _PATH_FIELDS and isinstance(value, str) else value
        for name, value in document.items()
    }


def _redact(uri: str) -> str:
    """Hide a password in ``scheme://user:password@host`` before it goes into a message."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", uri)
