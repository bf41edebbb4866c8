"""Look a catalog path and its data source up once per change of the catalog database.

Why
    Tiled 0.2.20 finds the node of ``/api/v1/.../processed/bench/v1/c_perp`` one path
    segment at a time, each segment an ORM query with ``selectin`` loads (access tags,
    data sources, structures): for a c map (four segments) about fifteen statements
    through aiosqlite and ~12 ms of server CPU on 2 cores, the largest part of a slice
    fetch. Reading the array then queries its data source with its assets again (three
    statements, ~4 ms) (docs/remote-access.md, "Latency of fetching one map").

What opmap does
    Three methods of Tiled's ``CatalogNodeAdapter`` are wrapped, in the server process:

    * ``lookup_adapter`` (the walk): the node found for ``(parent node id, segments)`` is
      kept in a :class:`LookupCache` attached to the catalog's context, and later lookups
      build the adapter from it exactly as Tiled does (``STRUCTURES[family](context,
      node)``);
    * ``data_sources(include_assets=True)`` (what ``get_adapter`` reads before opening
      the zarr or HDF5 file): the data sources are kept by node id, and each caller gets
      its own deep copy. The file itself is still opened by Tiled at every read;
    * ``resolve_access_tag_ids`` (a proposal filter's tag ids), by proposal names.

    Only reads (GET, HEAD; ``_request.RequestScope``) are answered from the cache. A write
    looks its path up in the database and gets ORM nodes of its own: Tiled changes the
    node it writes through, and a write the append-only check refuses rolls the database
    back, so a shared cached node would keep the refused change (found by
    ``tests/service/test_append_only.py``).

    The cache is installed only on a catalog served from a SQLite file
    (:func:`install_lookup_cache`); on any other catalog, and in any process where it is
    not installed, the wrappers call Tiled's methods unchanged.

Why this keeps Tiled's answers and its access control
    * Everything cached is dropped when the catalog database changes: SQLite's
      ``PRAGMA data_version``, read on a connection of our own at every lookup, changes
      whenever any other connection (the server's own writes, another process) commits.
      A node created, deleted, re-tagged, sealed, grown or given new metadata is looked
      up afresh at the next request. The version is read *before* Tiled's query, so an
      answer that raced a commit is dropped at the next lookup.
    * A lookup is keyed by what restricts it: below a parent carrying the access
      policy's proposal filters (a reader key above its proposal's node) the key holds
      the filters' proposals, so one proposal's answer never serves another; a parent
      with search conditions or any other filter always goes to the database. The
      proposal filters' tag ids (``resolve_access_tag_ids``) are cached the same way.
      The policy's ``filters`` and ``allowed_scopes`` still run on every node of every
      request (Tiled's ``get_entry`` calls them; nothing here caches them).
    * Paths that do not resolve to a catalog node (404s, paths inside a file) are not
      cached.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ._request import current_request

__all__ = ["LookupCache", "install_lookup_cache", "sqlite_file"]

logger = logging.getLogger(__name__)

#: Most answers kept (then the cache is emptied): a node holds its metadata, a run's can be
#: tens of kB, so this bounds the memory to a few hundred MB at worst.
MAX_NODES = 10_000
#: Attribute of Tiled's catalog ``Context`` holding its cache.
_CONTEXT_ATTRIBUTE = "opmap_lookup_cache"
_MARK = "_opmap_lookup_cache"


def _serving_a_read() -> bool:
    """True while a GET or HEAD request is served: only those are answered from the cache.
    A write goes through, and a refused write (the append-only check) must not leave a
    cached node changed while the database rolled back."""
    request = current_request()
    return request is not None and request.is_read


class LookupCache:
    """Answers read from the catalog database, valid while its ``PRAGMA data_version``
    holds: nodes by ``(parent id, path segments, proposal filters)``, data sources by
    ``("data_sources", node id)``, tag ids by ``("tag_ids", names)``.

    Parameters
    ----------
    database_path : Path
        The catalog database (SQLite), e.g. ``DATA_DIR/catalog.db``.
    max_nodes : int
        Nodes kept (>= 1); the cache is emptied when full.
    """

    def __init__(self, database_path: Path, *, max_nodes: int = MAX_NODES) -> None:
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1; got {max_nodes}")
        self.database_path = Path(database_path)
        self.max_nodes = max_nodes
        self._nodes: dict[Hashable, Any] = {}
        self._version: int | None = None
        self._connection: sqlite3.Connection | None = None
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def data_version(self) -> int | None:
        """The database's change counter as seen from our connection; None if unreadable."""
        try:
            if self._connection is None:
                # timeout=0: never block the event loop; unreadable means "ask Tiled".
                self._connection = sqlite3.connect(
                    self.database_path, timeout=0, check_same_thread=False
                )
            return int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as error:
            logger.debug("Lookup cache: %s unreadable (%s)", self.database_path, error)
            return None

    def get(self, key: Hashable) -> tuple[Any, int | None]:
        """``(node or None, version)``: the cached node of ``key`` if the database has not
        changed since it was stored, and the version read now (pass it to :meth:`store`)."""
        version = self.data_version()
        if version is None or version != self._version:
            self._nodes.clear()
            self._version = version
            self.misses += 1
            return None, version
        node = self._nodes.get(key)
        if node is None:
            self.misses += 1
        else:
            self.hits += 1
        return node, version

    def store(self, key: Hashable, node: Any, version: int | None) -> None:
        """Keep ``node``, found by a query started at ``version``, if that is still current."""
        if version is None or version != self._version:
            return
        if len(self._nodes) >= self.max_nodes:
            self._nodes.clear()
        self._nodes[key] = node

    def close(self) -> None:
        """Close our database connection (reopened at the next lookup)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __repr__(self) -> str:
        return f"LookupCache({str(self.database_path)!r}, {len(self)} nodes)"


def _filter_key(adapter: Any) -> tuple[tuple[str, ...], ...] | None:
    """What restricts the children ``adapter`` looks up, as a cache key: the tags of its
    proposal filters (``()`` for none); None when it cannot be cached (search
    conditions, other filters, a deep search)."""
    if getattr(adapter, "conditions", True) or getattr(adapter, "deep", True):
        return None
    from tiled.queries import AccessTagsFilter

    tags = []
    for query, _ in getattr(adapter, "access_filters", None) or ():
        if type(query) is not AccessTagsFilter:
            return None
        tags.append(tuple(sorted(query.tags)))
    return tuple(tags)


def _cached_lookup_adapter(original: Any, structures: dict[Any, Any]) -> Any:
    """``lookup_adapter`` answering unfiltered lookups from the context's cache."""

    async def lookup_adapter(self: Any, segments: list[str]) -> Any:
        cache = getattr(self.context, _CONTEXT_ATTRIBUTE, None)
        parent_id = getattr(self.node, "id", None)
        filters = _filter_key(self)
        if cache is None or not _serving_a_read() or not segments or parent_id is None:
            return await original(self, segments)
        if filters is None:
            return await original(self, segments)
        key = (parent_id, tuple(segments), filters)
        node, version = cache.get(key)
        if node is not None:
            return structures[node.structure_family](self.context, node)
        adapter = await original(self, segments)
        if type(adapter) is structures.get(getattr(adapter, "structure_family", None)):
            cache.store(key, adapter.node, version)
        return adapter

    lookup_adapter.__doc__ = original.__doc__
    return lookup_adapter


def _cached_data_sources(original: Any) -> Any:
    """``data_sources`` answering the assets query from the context's cache (copies)."""

    async def data_sources(self: Any, include_assets: bool = False) -> Any:
        cache = getattr(self.context, _CONTEXT_ATTRIBUTE, None)
        node_id = getattr(self.node, "id", None)
        if cache is None or not _serving_a_read() or not include_assets or node_id is None:
            return await original(self, include_assets)  # without assets: no query
        key = ("data_sources", node_id)
        found, version = cache.get(key)
        if found is None:
            found = await original(self, include_assets)
            cache.store(key, found, version)
        return copy.deepcopy(found)  # adapters get their own, as from Tiled

    data_sources.__doc__ = original.__doc__
    return data_sources


def _cached_tag_ids(original: Any) -> Any:
    """``resolve_access_tag_ids`` (a proposal filter's tag ids) from the context's cache."""

    async def resolve_access_tag_ids(self: Any, names: Any) -> Any:
        cache = getattr(self.context, _CONTEXT_ATTRIBUTE, None)
        if cache is None or not _serving_a_read():
            return await original(self, names)
        key = ("tag_ids", tuple(names))
        found, version = cache.get(key)
        if found is None:
            found = await original(self, names)
            cache.store(key, tuple(found), version)
        return list(found)

    resolve_access_tag_ids.__doc__ = original.__doc__
    return resolve_access_tag_ids


def _wrap_catalog_methods() -> None:
    """Wrap ``lookup_adapter`` and ``data_sources`` of Tiled's catalog nodes, once per
    process (see the module docstring)."""
    from tiled.catalog.adapter import STRUCTURES, CatalogNodeAdapter

    if getattr(CatalogNodeAdapter, _MARK, False):
        return
    CatalogNodeAdapter.lookup_adapter = _cached_lookup_adapter(
        CatalogNodeAdapter.lookup_adapter, STRUCTURES
    )
    CatalogNodeAdapter.data_sources = _cached_data_sources(CatalogNodeAdapter.data_sources)
    CatalogNodeAdapter.resolve_access_tag_ids = _cached_tag_ids(
        CatalogNodeAdapter.resolve_access_tag_ids
    )
    setattr(CatalogNodeAdapter, _MARK, True)


def install_lookup_cache(root_tree: Any) -> LookupCache | None:
    """Cache the path lookups of the catalog served as ``root_tree``.

    Parameters
    ----------
    root_tree : object
        The app's root tree (``app.state.root_tree``), Tiled's catalog adapter.

    Returns
    -------
    LookupCache or None
        None (nothing installed) when the tree is not a Tiled catalog or its database
        is not a SQLite file: every lookup goes to the database, as before.
    """
    context = getattr(root_tree, "context", None)
    engine = getattr(context, "engine", None)
    path = None if engine is None else sqlite_file(engine.url)
    if path is None:
        logger.info("Lookup cache off: the catalog database is not a SQLite file")
        return None
    _wrap_catalog_methods()
    cache = LookupCache(path)
    setattr(context, _CONTEXT_ATTRIBUTE, cache)
    return cache


def sqlite_file(url: Any) -> Path | None:
    """The file of a SQLite database URL (``sqlite+aiosqlite:///DIR/catalog.db``); None for
    any other database, or one in memory."""
    parsed = make_url(str(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
