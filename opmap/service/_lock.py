"""One Tiled server per data directory: a lock file held for the server's whole life.

SQLite and DuckDB allow one writing process. A second server on the same data directory
starts, answers, and then fails every write with HTTP 500 because DuckDB's own file lock
is held by the first. So the server process takes an exclusive ``fcntl.flock`` on
``DATA_DIR/opmap-server.lock`` before it opens any database, writes its PID into the file,
and keeps the descriptor open until it exits.

The kernel drops an ``flock`` when its holder dies, however it dies (SIGKILL included), so
a lock file left behind by a killed server is *stale*: the next server takes the lock,
finds the dead PID in the file, logs that it cleared it, and writes its own.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with ServerLock.acquire(d) as lock:
...         try:
...             ServerLock.acquire(d)
...         except DataDirInUseError as error:
...             print("refused:", error.pid == lock.pid)
refused: True
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = ["LOCK_FILE_NAME", "DataDirInUseError", "ServerLock", "check_unlocked"]

logger = logging.getLogger(__name__)

#: Name of the lock file inside the data directory.
LOCK_FILE_NAME = "opmap-server.lock"


class DataDirInUseError(ValueError):
    """Another live process holds the server lock of the data directory.

    Attributes
    ----------
    lock_file : Path
        The lock file.
    pid : int or None
        PID of the holder, as written in the lock file (None if unreadable).
    """

    def __init__(self, lock_file: Path, pid: int | None) -> None:
        self.lock_file = lock_file
        self.pid = pid
        holder = f"PID {pid}" if pid is not None else "another process (PID unknown)"
        super().__init__(
            f"data_dir {lock_file.parent} is in use: the opmap Tiled server {holder} holds "
            f"{lock_file}. Stop that server (or use its URL) or choose another --data-dir; "
            "only one server may write a data directory."
        )


@dataclass
class ServerLock:
    """An exclusive lock on a data directory, released by :meth:`release` or process exit.

    Attributes
    ----------
    path : Path
        The lock file.
    pid : int
        PID of this process, written into the file.
    """

    path: Path
    pid: int
    _fd: int

    @classmethod
    def acquire(cls, data_dir: Path | str) -> Self:
        """Take the lock of ``data_dir`` (created 0700 if missing) without waiting.

        Raises
        ------
        DataDirInUseError
            When a live process holds it; the message names that process's PID.
        """
        directory = Path(data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / LOCK_FILE_NAME
        # Not inherited by children (Python's default): a catalog-init subprocess must not
        # keep the lock alive after the server died.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirInUseError(path, holder) from None
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid():
            logger.warning(
                "Cleared a stale server lock %s of PID %d (that process is gone)", path, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        return cls(path, os.getpid(), fd)

    def release(self) -> None:
        """Empty the lock file and release the lock (idempotent)."""
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def check_unlocked(data_dir: Path | str) -> None:
    """Raise :class:`DataDirInUseError` if a live server holds ``data_dir``; change nothing.

    A probe for a clear early error (before any file is written); the server process
    itself takes the lock for real with :meth:`ServerLock.acquire`.
    """
    path = Path(data_dir) / LOCK_FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataDirInUseError(path, _read_pid(fd)) from None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
