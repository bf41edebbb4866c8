"""A portable data directory: find where a catalog was written, and rewrite it for here.

Tiled 0.2 stores every asset (detector files, product arrays, the DuckDB event tables) as
an absolute URI in the catalog (``file://localhost/ABS/...``, ``duckdb://localhost//ABS/...``)
and has no URIs relative to a root. A data directory that was moved, copied or restored
from an archive therefore points at its old place. :func:`relocate_data_dir` rewrites the
asset URIs under the old directory to the new one (in one SQLite transaction), and
:func:`check_not_moved` lets the server refuse to start on a moved directory with the
command that fixes it, instead of answering 500 for every read.

Document metadata (e.g. an event descriptor's ``source``) keeps the path as it was
recorded: it is provenance, not where Tiled reads.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote, unquote

from ._lock import ServerLock

__all__ = ["check_not_moved", "recorded_data_dir", "relocate_data_dir"]

#: How Tiled writes an absolute path into each kind of asset URI.
_PREFIXES = ("file://localhost", "duckdb://localhost/")
#: Names in the data directory whose asset URIs reveal where the catalog was written
#: (the detector directory may be configured elsewhere, so it tells nothing).
_MARKERS = ("/tables.duckdb", "/tiled-files/")


def _catalog(data_dir: Path) -> Path:
    path = Path(data_dir) / "catalog.db"
    if not path.is_file():
        raise ValueError(f"DATA_DIR {data_dir} holds no opmap SQLite catalog (catalog.db)")
    return path


def _asset_paths(catalog: Path) -> list[str]:
    with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True) as db:
        uris = [row[0] for row in db.execute("SELECT data_uri FROM assets")]
    paths = []
    for uri in uris:
        for prefix in _PREFIXES:
            if uri.startswith(prefix + "/"):
                paths.append(unquote(uri.removeprefix(prefix)))
    return paths


def recorded_data_dir(data_dir: Path | str) -> Path | None:
    """The directory the catalog of ``data_dir`` was written in (None: no assets yet).

    Found from the asset URIs of the DuckDB table store or of the product files, which
    live in the data directory in opmap's layout.
    """
    paths = _asset_paths(_catalog(Path(data_dir)))
    for marker in _MARKERS:
        for path in paths:
            head, found, _ = path.partition(marker)
            if found and head:
                return Path(head)
    return None


def check_not_moved(data_dir: Path | str) -> None:
    """Raise ``ValueError`` when the catalog of ``data_dir`` was written somewhere else.

    A data directory without ``catalog.db`` (new, or a PostgreSQL catalog) passes.
    """
    data_dir = Path(data_dir)
    if not (data_dir / "catalog.db").is_file():
        return
    recorded = recorded_data_dir(data_dir)
    if recorded is not None and recorded.resolve() != data_dir.resolve():
        raise ValueError(
            f"data_dir {data_dir} was moved: its catalog points at {recorded}. "
            f"Run `opmap relocate {data_dir}` once, then serve it again"
        )


def relocate_data_dir(data_dir: Path | str, old: Path | str | None = None) -> int:
    """Rewrite the catalog's asset URIs under ``old`` to lie under ``data_dir``.

    Parameters
    ----------
    data_dir : Path or str
        The data directory where it is now (no server may run on it).
    old : Path or str, optional
        Where it was; default :func:`recorded_data_dir`.

    Returns
    -------
    int
        Number of asset URIs rewritten (0: nothing pointed elsewhere).

    Raises
    ------
    ValueError
        No ``catalog.db`` in ``data_dir``, or a server holds it
        (:class:`~opmap.service.DataDirInUseError`).
    """
    new = Path(data_dir).resolve()
    catalog = _catalog(new)
    old_dir = Path(old) if old is not None else recorded_data_dir(new)
    if old_dir is None or Path(old_dir) == new:
        return 0
    count = 0
    with ServerLock.acquire(new), sqlite3.connect(catalog) as db:
        for prefix in _PREFIXES:
            for form in (str, quote):
                before, after = prefix + form(str(old_dir)) + "/", prefix + form(str(new)) + "/"
                cursor = db.execute(
                    "UPDATE assets SET data_uri = ? || substr(data_uri, ?) "
                    "WHERE substr(data_uri, 1, ?) = ?",
                    (after, len(before) + 1, len(before), before),
                )
                count += cursor.rowcount
    return count
