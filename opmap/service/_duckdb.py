"""One DuckDB user at a time: serialize Tiled's shared embedded DuckDB connection.

The hole (Tiled 0.2.20)
    ``tiled.storage.SQLStorage`` hands every thread of the server the *same* DuckDB ADBC
    connection (a ``StaticPool``). The rehearsal's raw-run writer, its validator and the
    live products write tables concurrently; under a long run the server then logs
    ``No active transaction`` / ``closed pending query result`` and finally dies (a libc
    segfault or ``malloc_consolidate()`` heap corruption), seen in every 24 h-equivalent
    soak (``make soak-24h``) before this guard; with it, a full soak ran clean.

What opmap does
    In the server process, ``SQLStorage.connect`` for a DuckDB storage takes a process-wide
    lock and returns the connection wrapped so that ``close()`` (Tiled always uses
    ``contextlib.closing``) releases it. SQLite and PostgreSQL storages are untouched.
    Remove once Tiled gives each thread its own DuckDB cursor or serializes it itself.

Its memory (:func:`limit_duckdb_memory`)
    DuckDB keeps the blocks of the tables it stores in its buffer pool and evicts them only
    at its ``memory_limit``, 80 % of the machine's RAM by default: the server's RSS grew
    with every table row the experiment stored (raw event tables, products' tables; the
    24 h soak's server +8.5 %, tracking the WAL; a plain ADBC DuckDB appending 40 MB of
    rows grew 51 MB). The server sets ``memory_limit`` (``OpmapSettings.table_memory_mb``)
    on each new connection: stored blocks beyond it are evicted and read back from the
    file when needed, and larger query results spill to DuckDB's temporary directory
    beside the database.

Its blocks (:func:`create_duckdb_stores`)
    The rows appended since DuckDB's last checkpoint live in memory, in blocks of the
    database's block size (256 KiB by default), at least one per column of each table: the
    24 h soak's server held 17.6 MiB of them for a 7 MiB WAL (DuckDB's ``duckdb_memory()``,
    tag ``IN_MEMORY_TABLE``), and a checkpoint starting new row groups added a block per
    column again (the step in the server's RSS at the 16 MB checkpoint). The server
    creates a table store that is not there yet with ``OpmapSettings.table_block_kib``
    (16 KiB by default): the same soak then held 8.1 MiB. DuckDB fixes the block size when
    it creates the file; an existing store keeps its own.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opmap.settings import check_table_block_kib

__all__ = ["create_duckdb_stores", "limit_duckdb_memory", "serialize_duckdb"]

_MARK = "_opmap_duckdb_serialized"
_LOCK = threading.RLock()
#: ``memory_limit`` (MB) set on each new DuckDB connection; None: DuckDB's default.
_MEMORY_LIMIT_MB: list[int | None] = [None]
_LIMITED: weakref.WeakSet[Any] = weakref.WeakSet()  # ADBC connections already limited


class _LockedConnection:
    """The shared connection, held under the lock until ``close()``."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def close(self) -> None:
        try:
            self._connection.close()
        finally:
            _LOCK.release()


def serialize_duckdb() -> None:
    """Install the lock around DuckDB connections of Tiled's SQL storage (idempotent).

    Raises
    ------
    RuntimeError
        When Tiled no longer has ``SQLStorage.connect`` (the guard would be silently absent).
    """
    from tiled.storage import SQLStorage

    if getattr(SQLStorage, _MARK, False):
        return
    connect = getattr(SQLStorage, "connect", None)
    if not callable(connect):
        raise RuntimeError(
            "tiled.storage.SQLStorage.connect is gone: check opmap/service/_duckdb.py "
            "against this Tiled version"
        )

    def locked_connect(self: Any) -> Any:
        if self.dialect != "duckdb":
            return connect(self)
        _LOCK.acquire()
        try:
            connection = connect(self)
            _apply_memory_limit(connection)
            return _LockedConnection(connection)
        except BaseException:
            _LOCK.release()
            raise

    SQLStorage.connect = locked_connect
    setattr(SQLStorage, _MARK, True)


def limit_duckdb_memory(memory_mb: int | None) -> None:
    """Set DuckDB's ``memory_limit`` to ``memory_mb`` MB on the server's DuckDB connections.

    Takes effect on each connection Tiled's SQL storage opens from now on (Tiled 0.2.20
    opens one and shares it); needs :func:`serialize_duckdb` installed.

    Parameters
    ----------
    memory_mb : int or None
        At least 16 MB; None leaves DuckDB's default (80 % of RAM).

    Raises
    ------
    ValueError
        When ``memory_mb`` is below 16.
    """
    if memory_mb is not None and memory_mb < 16:
        raise ValueError(f"table memory must be >= 16 MB (DuckDB's working set); got {memory_mb}")
    _MEMORY_LIMIT_MB[0] = memory_mb
    _LIMITED.clear()


def _apply_memory_limit(connection: Any) -> None:
    """Set ``memory_limit`` once per ADBC connection (Tiled's pool hands out a new proxy of
    the same connection at every ``connect``)."""
    memory_mb = _MEMORY_LIMIT_MB[0]
    adbc = getattr(connection, "dbapi_connection", connection)
    if memory_mb is None or adbc in _LIMITED:
        return
    with contextlib.closing(connection.cursor()) as cursor:
        cursor.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
    _LIMITED.add(adbc)


def create_duckdb_stores(storage: Iterable[Any], block_kib: int | None) -> list[Path]:
    """Create each DuckDB table store of ``storage`` not there yet, with ``block_kib`` blocks.

    Run in the server process before Tiled opens its storage (Tiled would create the file
    with DuckDB's default, 256 KiB blocks). Stores that exist keep their block size; other
    storage (directories, SQLite, PostgreSQL) is left alone.

    Parameters
    ----------
    storage : iterable
        Tiled's ``writable_storage`` items; ``duckdb:///ABS/PATH`` strings are the DuckDB
        stores.
    block_kib : int or None
        Block size in KiB, a power of two from 16 to 256; None: DuckDB's default (nothing
        is created here).

    Returns
    -------
    list of Path
        The stores created.

    Raises
    ------
    ValueError
        When ``block_kib`` is not a block size DuckDB accepts.
    """
    if block_kib is None:
        return []
    check_table_block_kib(block_kib)  # a hand-edited server config is checked here too
    import duckdb

    created = []
    for path in filter(None, map(_duckdb_path, storage)):
        if path.exists():
            continue
        config = {"default_block_size": str(block_kib * 1024)}
        duckdb.connect(str(path), config=config).close()
        created.append(path)
    return created


def _duckdb_path(item: Any) -> Path | None:
    """The file of a ``duckdb:`` storage URI, read as Tiled reads it; None for other storage."""
    from tiled.utils import ensure_uri, path_from_uri

    if not isinstance(item, str) or not item.startswith("duckdb:"):
        return None
    return Path(path_from_uri(ensure_uri(item)))
