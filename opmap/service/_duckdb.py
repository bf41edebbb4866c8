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
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["serialize_duckdb"]

_MARK = "_opmap_duckdb_serialized"
_LOCK = threading.RLock()


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
            return _LockedConnection(connect(self))
        except BaseException:
            _LOCK.release()
            raise

    SQLStorage.connect = locked_connect
    setattr(SQLStorage, _MARK, True)
