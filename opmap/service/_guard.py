"""Keep registered files inside the server's readable storage, ``..`` and symlinks resolved.

The hole (Tiled 0.2.20)
    ``tiled.catalog.adapter.CatalogNodeAdapter._ensure_uri_within_readable_storage``
    compares ``os.path.commonpath([storage.path, asset_path])`` on the *unresolved* path,
    and only when data are read. A client with write access could register
    ``file://localhost/DATA/detector/../../../../root/.bashrc``: lexically it lies under
    ``DATA/detector``, so the server read it back; ``/asset/bytes`` served it without any
    check. A symlink inside the detector directory pointing out of it passed the same way.

What opmap does (two methods replaced on Tiled's catalog classes, in the server process)
    * ``CatalogNodeAdapter._put_asset`` — the one place every asset enters the catalog
      (node creation, data-source replacement) — first refuses, with HTTP 403, a ``file:``
      URI whose ``os.path.realpath`` is not under the ``realpath`` of a readable (or
      writable) file storage. Nothing is written: the database session rolls back.
    * ``_ensure_uri_within_readable_storage`` (read time) applies the same resolved
      comparison, so a node registered before the guard existed cannot be read either.

The tree factory :func:`from_uri` (``opmap.service._guard:from_uri`` in the generated
config) installs the guard before building Tiled's catalog, so the guard runs wherever the
config is served: ``opmap serve``, the rehearsal's server, ``tiled serve config FILE``.
:func:`install` refuses to start if Tiled no longer has the methods it replaces. Remove
this module once Tiled resolves paths itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["from_uri", "install", "is_within"]

logger = logging.getLogger(__name__)

_HTTP_FORBIDDEN = 403
_MARK = "_opmap_storage_guard"


def is_within(path: str | Path, roots: Sequence[str | Path]) -> bool:
    """True when ``path``, fully resolved, is one of ``roots`` (resolved) or under one.

    Examples
    --------
    >>> is_within("/data/detector/../../etc/passwd", ["/data/detector"])
    False
    >>> is_within("/data/detector/run1/a.h5", ["/data/detector"])
    True
    """
    resolved = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([top, resolved]) == top:
            return True
    return False


def _readable_roots(context: Any) -> list[Path]:
    from tiled.storage import FileStorage

    return [s.path for s in context.readable_storage.values() if isinstance(s, FileStorage)]


def _refusal(data_uri: str) -> str:
    return (
        f"Refusing {data_uri}: resolved (symlinks and '..' followed) it lies outside the "
        "readable storage of this server."
    )


def _check(context: Any, data_uri: str) -> str | None:
    """The refusal message for a ``file:`` URI outside the readable storage, else None."""
    from tiled.utils import path_from_uri

    if urlparse(data_uri).scheme != "file":
        return None  # not a path: nothing to escape from (duckdb://, sqlite://, ...)
    if is_within(path_from_uri(data_uri), _readable_roots(context)):
        return None
    return _refusal(data_uri)


def install() -> None:
    """Replace the two Tiled methods described in the module docstring (idempotent).

    Raises
    ------
    RuntimeError
        When Tiled no longer defines them (the guard would silently be absent).
    """
    from fastapi import HTTPException
    from tiled.catalog.adapter import CatalogNodeAdapter

    if getattr(CatalogNodeAdapter, _MARK, False):
        return
    for name in ("_put_asset", "_ensure_uri_within_readable_storage"):
        if not callable(getattr(CatalogNodeAdapter, name, None)):
            raise RuntimeError(
                f"tiled.catalog.adapter.CatalogNodeAdapter.{name} is gone: opmap's "
                "readable-storage guard cannot be installed; check opmap/service/_guard.py "
                "against this Tiled version"
            )
    put_asset = CatalogNodeAdapter._put_asset

    async def guarded_put_asset(self: Any, db: Any, asset: Any) -> Any:
        refusal = _check(self.context, asset.data_uri)
        if refusal is not None:
            logger.warning("Registration refused: %s", refusal)
            raise HTTPException(status_code=_HTTP_FORBIDDEN, detail=refusal)
        return await put_asset(self, db, asset)

    def ensure_within(self: Any, data_uri: str) -> None:
        refusal = _check(self.context, data_uri)
        if refusal is not None:
            raise RuntimeError(refusal)

    CatalogNodeAdapter._put_asset = guarded_put_asset
    CatalogNodeAdapter._ensure_uri_within_readable_storage = ensure_within
    setattr(CatalogNodeAdapter, _MARK, True)


def from_uri(uri: str, **kwargs: Any) -> Any:
    """Tiled's ``tiled.catalog:from_uri``, with the guard (and the DuckDB lock of
    `opmap.service._duckdb`) installed first, and the database initialised in this process
    (`opmap.service._catalog_init`) when ``init_if_not_exists`` is set.

    Parameters
    ----------
    uri : str
        Catalog database URI.
    **kwargs
        Passed on unchanged (``writable_storage``, ``readable_storage``, ...), except
        ``table_memory_mb``: the memory limit of the embedded DuckDB table store
        (`opmap.service._duckdb.limit_duckdb_memory`; absent: DuckDB's default), and
        ``table_block_kib``: the block size of a DuckDB table store not yet created
        (`opmap.service._duckdb.create_duckdb_stores`; absent: DuckDB's default).
    """
    from tiled.catalog import from_uri as tiled_from_uri

    from ._catalog_init import init_catalog_database
    from ._duckdb import create_duckdb_stores, limit_duckdb_memory, serialize_duckdb

    install()
    serialize_duckdb()  # the same server process: one DuckDB user at a time
    limit_duckdb_memory(kwargs.pop("table_memory_mb", None))
    create_duckdb_stores(kwargs.get("writable_storage", ()), kwargs.pop("table_block_kib", None))
    if kwargs.pop("init_if_not_exists", False):  # here, not in a second interpreter
        init_catalog_database(uri)
    return tiled_from_uri(uri, init_if_not_exists=False, **kwargs)
