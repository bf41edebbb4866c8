"""Append-only writes: what a key that is not an admin's may still change in an open node.

Why
    Tiled 0.2.20's ``write:data`` and ``write:metadata`` scopes cover appending and
    overwriting alike, and its access policy sees a node and a key, not the request. A run
    still being written, and a product version growing map by map, were therefore open to
    overwriting by the beamline writer key until sealed.

How
    :class:`~opmap.service._request.RequestScope` (a plain ASGI middleware, outermost)
    keeps the request being served in a context variable, and :func:`current_write`
    reads the method, route, node path and query of a write request to the API from it;
    :class:`~opmap.service.ProposalAccessPolicy` then checks the request against the
    stored node when Tiled asks it for the key's scopes on that node
    (:func:`check_data_write`), and checks a metadata update or a data-source update
    against what is stored just before Tiled writes it (:func:`check_metadata_grows`,
    :func:`check_data_source_grows`). A refusal is HTTP 403 naming the node and why.

What the writer key may do (any key without the admin scope)
    * arrays: ``PATCH ?extend=true`` at ``offset[0]`` equal to the stored extent along
      axis 0 (how opmap's product writers and bluesky's ``TiledWriter`` grow arrays);
      ``PUT`` of the whole array, ``PUT`` of a block, and ``PATCH`` without ``extend``
      only where no chunk they touch is stored yet (e.g. right after the node is created);
    * arrays of a product version (``processed/<experiment>/<version>/<name>``, the
      version an ``xarray_dataset`` with a commit record): also any write starting at or
      after the array's *committed extent* along axis 0 (:func:`committed_extent`), an
      ``extend`` no further than the stored extent. Readers use only committed maps, so
      the product writer redoes a map it wrote half way (a retry, ``opmap resume``) at its
      offset; the committed maps below stay refused;
    * tables: ``PATCH`` of a partition (appending rows); ``PUT`` of a partition or of the
      whole table only while it is not stored (a Parquet partition file not written yet,
      no rows in the SQL table store);
    * data sources of registered (external) arrays: the same files, dataset and data type,
      the extent along axis 0 may grow, assets may be added, none removed or changed (a
      re-send within the stored extent over the same files is accepted and not written);
    * metadata: new keys; an existing key only *grows* (:func:`grows`): a list keeps its
      items as a prefix, a mapping keeps its keys, each growing; the product commit record
      (``committed``) may count more maps and rows and name more nodes, but is only set
      when a node is created (never added by an update); specs may be added.

Not covered (refused to the writer key): ``ragged`` and ``awkward`` data writes and
tables stored in other formats (opmap writes none; the check cannot tell their extent),
replacing a data source without a patch.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import HTTPException
from starlette.status import HTTP_403_FORBIDDEN

from opmap.callbacks.tiled_products import COMMIT_KEY

from ._request import ServedRequest, current_request

__all__ = [
    "API_PREFIX",
    "PRODUCTS_CONTAINER",
    "AppendOnlyRefused",
    "WriteRequest",
    "check_data_source_grows",
    "check_data_write",
    "check_metadata_grows",
    "committed_extent",
    "current_write",
    "grows",
    "stored_metadata",
]

logger = logging.getLogger(__name__)

#: Where Tiled mounts its API.
API_PREFIX = "/api/v1/"
#: Routes whose ``PUT``/``PATCH`` write a node's data, longest first.
DATA_ROUTES = (
    "array/block",
    "array/full",
    "table/partition",
    "table/full",
    "node/full",
    "awkward/full",
    "ragged/block",
    "ragged/full",
    "data_source",
)
#: Every route noted by the middleware: data writes and metadata updates.
_NOTED_ROUTES = (*DATA_ROUTES, "metadata")
_WRITE_METHODS = frozenset({"PUT", "PATCH"})
_PARQUET = "application/x-parquet"  # tables written whole: a file per partition
#: Top-level container of product versions (``opmap.callbacks.tiled_writer``'s
#: ``PROCESSED_CONTAINER``; not imported: that module loads bluesky into the server).
PRODUCTS_CONTAINER = "processed"
_DATASET_SPEC = "xarray_dataset"  # the spec of a product version container
_SQL_TABLE = "application/x-tiled-sql-table"  # appendable tables in the SQL table store

#: ``(node id, metadata, specs)`` as stored when the request reached its node: Tiled
#: applies a merge patch to the node's own metadata dict in place before writing it.
_STORED: contextvars.ContextVar[tuple[int, Any, list[Any]] | None] = contextvars.ContextVar(
    "opmap_stored_metadata", default=None
)


class AppendOnlyRefused(HTTPException):
    """HTTP 403: a write by a key that is not an admin's would change stored data."""

    def __init__(self, path: str, why: str) -> None:
        detail = (
            f"{path}: {why}. The writer key may only append to a run or product version "
            "still being written; changing stored data needs the admin key."
        )
        super().__init__(status_code=HTTP_403_FORBIDDEN, detail=detail)


@dataclass(frozen=True)
class WriteRequest:
    """A ``PUT``/``PATCH`` of a node's data, as the middleware saw it.

    Attributes
    ----------
    method : str
        ``PUT`` or ``PATCH``.
    route : str
        One of :data:`DATA_ROUTES`, or ``metadata``.
    path : str
        The node's path, ``/``-separated, without the route.
    query : Mapping[str, str]
        The query parameters (last value of each).
    """

    method: str
    route: str
    path: str
    query: Mapping[str, str]

    @property
    def key(self) -> str:
        """The node's own key (last path segment)."""
        return self.path.rsplit("/", 1)[-1]

    @classmethod
    def from_request(cls, request: ServedRequest) -> WriteRequest | None:
        """The write ``request`` makes, or None (reads, creations, other apps)."""
        method, path = request.method, request.path
        if method not in _WRITE_METHODS or not path.startswith(API_PREFIX):
            return None
        rest = path[len(API_PREFIX) :]
        for route in _NOTED_ROUTES:
            if rest.startswith(route + "/"):
                query = dict(parse_qsl(request.query_string.decode("latin-1")))
                node = unquote(rest[len(route) + 1 :]).strip("/")
                return cls(method, route, node, query)
        return None


def current_write() -> WriteRequest | None:
    """The data write of the request being served: None outside one, for a read, and
    where the server does not check writes (``serve --no-append-only``)."""
    request = current_request()
    if request is None or not request.append_only:
        return None
    return WriteRequest.from_request(request)


async def check_data_write(
    node: Any, request: WriteRequest, *, committed: int | None = None
) -> None:
    """Refuse ``request`` on ``node`` (:class:`AppendOnlyRefused`) unless it only appends.

    ``PUT /data_source`` is checked later, when Tiled writes it: the node's
    ``put_data_source`` is wrapped for this request (:func:`check_data_source_grows`).

    Parameters
    ----------
    node : Tiled catalog adapter
        The request's node.
    request : WriteRequest
        What the request writes.
    committed : int, optional
        The node's committed extent along axis 0 (:func:`committed_extent`): array writes
        starting there or later are allowed too. None: only appending is.
    """
    route = request.route
    if route == "metadata":  # checked when written (`check_metadata_grows`)
        _STORED.set((node.node.id, copy.deepcopy(node.metadata()), list(node.specs)))
        return
    if route.startswith("array/"):
        await _check_array_write(node, request, committed)
    elif route == "table/partition" and request.method == "PATCH":
        return  # appends rows to the partition
    elif route.startswith(("table/", "node/")):
        await _check_table_write(node, request)
    elif route == "data_source":
        _guard_data_source(node, request.path)
    else:
        raise AppendOnlyRefused(request.path, f"{route} writes cannot be checked for appending")


async def _check_array_write(node: Any, request: WriteRequest, committed: int | None) -> None:
    structure = node.structure()
    shape = tuple(structure.shape)
    if request.method == "PATCH":
        offset = _ints(request.query.get("offset", ""))
        if request.query.get("extend", "").lower() == "true":
            _check_extend(request.path, offset, shape, committed)
            return
        region = _region(offset, _ints(request.query.get("shape", "")), shape)
    elif request.route == "array/block":
        block = _ints(request.query.get("block", ""))
        region = _block_region(block, structure.chunks)
    else:
        region = tuple((0, n) for n in shape)
    if committed is not None and region and region[0][0] >= committed:
        return  # beyond what readers use: the product writer redoing an uncommitted map
    if await _any_chunk_stored(node, region):
        raise AppendOnlyRefused(request.path, f"data already stored in {_show(region)}")


def _check_extend(
    path: str, offset: tuple[int, ...], shape: tuple[int, ...], committed: int | None
) -> None:
    """Refuse a ``PATCH ?extend=true`` at ``offset`` unless it starts at the stored extent,
    or (``committed`` given) anywhere from the committed extent up to the stored one."""
    if shape and offset:
        if offset[0] == shape[0]:
            return
        if committed is not None and committed <= offset[0] <= shape[0]:
            return
    extent = shape[0] if shape else "none (a scalar)"
    why = f"extending at offset {offset[:1]} along axis 0 would not append: the stored extent"
    why += f" is {extent}"
    if committed is not None:
        why += f" and the first {committed} are committed (readers use them)"
    raise AppendOnlyRefused(path, why)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip().isdigit())


def _region(
    offset: tuple[int, ...], shape: tuple[int, ...], full: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per axis of a patch; axes it does not name span the array."""
    offset = offset + (0,) * (len(full) - len(offset))
    shape = shape + full[len(shape) :]
    return tuple((o, o + n) for o, n in zip(offset, shape, strict=False))


def _block_region(block: tuple[int, ...], chunks: Any) -> tuple[tuple[int, int], ...]:
    if len(block) != len(chunks) or any(i >= len(c) for i, c in zip(block, chunks, strict=True)):
        raise HTTPException(status_code=400, detail=f"block {block} is not a block of {chunks}")
    region = []
    for index, sizes in zip(block, chunks, strict=False):
        start = sum(sizes[:index])
        region.append((start, start + sizes[index]))
    return tuple(region)


def _show(region: tuple[tuple[int, int], ...]) -> str:
    return "[" + ", ".join(f"{a}:{b}" for a, b in region) + "]"


async def _any_chunk_stored(node: Any, region: tuple[tuple[int, int], ...]) -> bool:
    """Whether any chunk of ``node``'s zarr array overlapping ``region`` is on disk.

    Arrays that are not written zarr arrays of opmap's file storage (registered files)
    count as stored: their data is never overwritten through Tiled.
    """
    sources = await node.data_sources(include_assets=True)
    if len(sources) != 1 or sources[0].mimetype != "application/x-zarr":
        return True
    (asset,) = sources[0].assets
    return await asyncio.to_thread(_zarr_chunks_stored, asset.data_uri, region)


def _zarr_chunks_stored(data_uri: str, region: tuple[tuple[int, int], ...]) -> bool:
    """Whether a chunk file of the zarr array at ``data_uri`` overlaps ``region``."""
    import zarr
    from tiled.utils import path_from_uri

    if any(stop <= start for start, stop in region):
        return False
    root = Path(path_from_uri(data_uri))
    array = zarr.open_array(str(root), mode="r")
    ranges = [
        range(start // size, (stop - 1) // size + 1)
        for (start, stop), size in zip(region, array.chunks, strict=False)
    ]
    return any(
        (root / array.metadata.encode_chunk_key(coords)).exists()
        for coords in itertools.product(*ranges)
    )


async def _check_table_write(node: Any, request: WriteRequest) -> None:
    if request.route == "table/partition":
        partitions = [int(request.query.get("partition", "0"))]
        where = f"partition {partitions[0]}"
    else:
        partitions = list(range(node.structure().npartitions))
        where = "the table"
    sources = await node.data_sources(include_assets=True)
    mimetype = sources[0].mimetype if len(sources) == 1 else None
    if mimetype == _PARQUET:
        files = {asset.num: asset.data_uri for asset in sources[0].assets}
        stored = [p for p in partitions if p in files and _file_exists(files[p])]
        if stored:
            raise AppendOnlyRefused(request.path, f"{where} is already stored")
    elif mimetype == _SQL_TABLE:
        adapter = await node.get_adapter()
        rows = sum([await asyncio.to_thread(_rows, adapter, p) for p in partitions])
        if rows:
            raise AppendOnlyRefused(request.path, f"{where} already holds {rows} rows")
    else:
        raise AppendOnlyRefused(request.path, f"tables stored as {mimetype} cannot be rewritten")


def _file_exists(data_uri: str) -> bool:
    from tiled.utils import path_from_uri

    return Path(path_from_uri(data_uri)).exists()


def _rows(adapter: Any, partition: int) -> int:
    """Rows of ``partition`` in a table of the SQL table store."""
    return len(adapter.read_partition(partition))


def _guard_data_source(node: Any, path: str) -> None:
    """Check the data source Tiled is about to write on ``node`` (this request only)."""
    original = node.put_data_source

    async def put_data_source(data_source: Any, patch: Any) -> Any:
        stored = await node.data_sources()  # loaded with the node: no query
        assets = await _stored_assets(node, data_source.id)
        if check_data_source_grows(path, stored, assets, data_source, patch):
            return await original(data_source, patch)
        logger.debug("%s: a re-sent data source within the stored extent, not written", path)
        return None

    node.put_data_source = put_data_source


async def _stored_assets(node: Any, source_id: int | None) -> set[tuple[str, Any, Any]]:
    """``(data_uri, parameter, num)`` of the assets of data source ``source_id`` (one
    query; cheaper than loading the node's data sources with their assets)."""
    from sqlalchemy import select
    from tiled.catalog import orm

    association = orm.DataSourceAssetAssociation
    statement = (
        select(orm.Asset.data_uri, association.parameter, association.num)
        .join(association, association.asset_id == orm.Asset.id)
        .where(association.data_source_id == source_id)
    )
    async with node.context.session() as db:
        return {tuple(row) for row in (await db.execute(statement)).all()}


def check_data_source_grows(
    path: str, stored: list[Any], stored_assets: set[tuple[str, Any, Any]], new: Any, patch: Any
) -> bool:
    """Refuse a data-source update that does not only extend the data along axis 0.

    A re-send of rows already stored (a shorter extent over the same files, as when a
    partly stored run is completed from the spool) changes nothing and is not written.

    Parameters
    ----------
    path : str
        The node (named in the refusal).
    stored : list
        The node's data sources now (Tiled ``DataSource``; their assets are not used).
    stored_assets : set of tuple
        ``(data_uri, parameter, num)`` of the stored assets of the data source updated.
    new : object
        The data source sent (a ``PutDataSourceRequest.data_source``).
    patch : object or None
        The request's ``patch_shape``/``patch_offset`` (None: a replacement).

    Returns
    -------
    bool
        True: write it (it extends the data or restates it); False: a re-send within the
        stored extent, nothing to write.

    Raises
    ------
    AppendOnlyRefused
        Naming what would change.
    """
    if patch is None:
        raise AppendOnlyRefused(path, "replacing a data source (no patch_shape/patch_offset)")
    old = next((source for source in stored if source.id == new.id), None)
    if old is None:
        raise AppendOnlyRefused(path, f"no data source {new.id} is stored on this node")
    old_extent, new_extent = _check_same_kind(path, old, new)
    old_assets = stored_assets
    new_assets = {(a.data_uri, a.parameter, a.num) for a in new.assets}
    if new_extent < old_extent:
        if new_assets <= old_assets:
            return False
        raise AppendOnlyRefused(path, f"the extent would shrink from {old_extent} to {new_extent}")
    for data_uri, _, _ in sorted(old_assets - new_assets):
        raise AppendOnlyRefused(path, f"the stored asset {data_uri} would be dropped")
    return True


def _check_same_kind(path: str, old: Any, new: Any) -> tuple[int, int]:
    """Refuse a data source of another kind, type or trailing shape than ``old``;
    return the extents along axis 0 (stored, new)."""
    if old.structure_family != "array":
        raise AppendOnlyRefused(path, f"{old.structure_family} data sources cannot be extended")
    for field in ("mimetype", "parameters", "structure_family"):
        if getattr(old, field) != getattr(new, field):
            raise AppendOnlyRefused(path, f"the data source's {field} would change")
    old_structure, new_structure = _structure(old.structure), _structure(new.structure)
    old_shape, new_shape = tuple(old_structure.shape), tuple(new_structure.shape)
    if len(new_shape) != len(old_shape) or new_shape[1:] != old_shape[1:] or not new_shape:
        raise AppendOnlyRefused(path, f"the shape would change from {old_shape} to {new_shape}")
    if old_structure.data_type != new_structure.data_type:
        raise AppendOnlyRefused(path, "the data type would change")
    return old_shape[0], new_shape[0]


def _structure(structure: Any) -> Any:
    """An array structure, from its JSON form (a request's) or as stored."""
    from tiled.structures.array import ArrayStructure

    return ArrayStructure.from_json(structure) if isinstance(structure, Mapping) else structure


def grows(old: Any, new: Any) -> bool:
    """Whether metadata value ``new`` only adds to ``old``.

    Equal values grow; a list grows when ``old`` is its prefix (each kept item equal); a
    mapping grows when it keeps every key of ``old`` and each of their values grows.

    Examples
    --------
    >>> grows({"notes": ["a"]}, {"notes": ["a", "b"], "stop": {}})
    True
    >>> grows({"notes": ["a"]}, {"notes": ["b"]})
    False
    >>> grows({"x": 1}, {})
    False
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return all(key in new and grows(value, new[key]) for key, value in old.items())
    if isinstance(old, list) and isinstance(new, list):
        return len(new) >= len(old) and all(grows(a, b) for a, b in zip(old, new, strict=False))
    return bool(old == new)


def committed_extent(ancestry: Sequence[tuple[int, str, Any, Any]]) -> int | None:
    """The extent along axis 0 of a product array that readers use, from its ancestry.

    A product version (``processed/<experiment>/<version>``, spec ``xarray_dataset``)
    carries a commit record (``committed``, `opmap.callbacks.tiled_products.CommitRecord`):
    readers use the first ``maps`` maps of the arrays it lists as ``grown``, the arrays it
    names whole, and nothing of an array it does not name (left by a writer that failed
    before committing it).

    Parameters
    ----------
    ancestry : sequence of tuple
        ``(depth, key, metadata, specs)`` of the node (depth 0) and of each ancestor
        below the root (depth 1 is the parent), as stored.

    Returns
    -------
    int or None
        ``maps`` for a grown array, 0 for an array the record does not name; None for an
        array named whole, or any node that is not an array of a product version with a
        commit record (only appending is then allowed).

    Examples
    --------
    >>> record = {"maps": 2, "names": ["c_perp", "z"], "grown": ["c_perp"]}
    >>> version = (1, "v1", {"committed": record}, [{"name": "xarray_dataset"}])
    >>> top = [version, (2, "cell-3", {}, []), (3, "processed", {}, [])]
    >>> [committed_extent([(0, name, {}, []), *top]) for name in ("c_perp", "z", "new")]
    [2, None, 0]
    >>> committed_extent([(0, "x", {}, []), (1, "primary", {"committed": record}, []),
    ...                   (2, "run", {}, []), (3, "raw", {}, [])]) is None
    True
    """
    rows = {depth: (key, metadata, specs) for depth, key, metadata, specs in ancestry}
    if sorted(rows) != [0, 1, 2, 3] or rows[3][0] != PRODUCTS_CONTAINER:
        return None
    key, (_, metadata, specs) = rows[0][0], rows[1]
    record = metadata.get(COMMIT_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(record, Mapping) or _DATASET_SPEC not in {_spec_name(s) for s in specs}:
        return None
    maps = record.get("maps")
    if key in (record.get("grown") or ()):
        return maps if isinstance(maps, int) and maps >= 0 else None
    return None if key in (record.get("names") or ()) else 0


def _commit_grows(old: Any, new: Any) -> bool:
    """A product commit record grows: no fewer maps or rows, no node forgotten."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return bool(old == new)
    old_rows, new_rows = old.get("rows", {}), new.get("rows", {})
    return (
        new.get("maps", 0) >= old.get("maps", 0)
        and all(new_rows.get(name, -1) >= count for name, count in old_rows.items())
        and set(old.get("names", ())) <= set(new.get("names", ()))
        and set(old.get("grown", ())) <= set(new.get("grown", ()))
    )


def stored_metadata(node: Any) -> tuple[Any, list[Any]]:
    """``node``'s metadata and specs as stored before this request changed anything.

    Noted when the access policy was asked about the node (:func:`check_data_write`);
    the node's current values otherwise.
    """
    stored = _STORED.get()
    if stored is not None and stored[0] == node.node.id:
        return stored[1], stored[2]
    return node.metadata(), list(node.specs)


def check_metadata_grows(
    path: str, old: Mapping[str, Any], new: Mapping[str, Any], old_specs: Any, new_specs: Any
) -> None:
    """Refuse a metadata update that changes or removes what is stored.

    Parameters
    ----------
    path : str
        The node (named in the refusal).
    old, new : Mapping
        The stored metadata and the metadata Tiled is about to write.
    old_specs, new_specs : sequence
        The stored specs and the new ones (specs may only be added).

    Raises
    ------
    AppendOnlyRefused
        Naming the first key that would change, or a commit record (``committed``) that
        the update would add: it widens what the key may rewrite (`committed_extent`).
    """
    if COMMIT_KEY in new and COMMIT_KEY not in old:
        raise AppendOnlyRefused(
            path, f"metadata key {COMMIT_KEY!r} is set when a product version is created"
        )
    for key, value in old.items():
        if key not in new:
            raise AppendOnlyRefused(path, f"metadata key {key!r} would be removed")
        kept = _commit_grows if key == COMMIT_KEY else grows
        if not kept(value, new[key]):
            raise AppendOnlyRefused(path, f"metadata key {key!r} would be changed, not extended")
    old_names = {_spec_name(spec) for spec in old_specs or ()}
    if not old_names <= {_spec_name(spec) for spec in new_specs or ()}:
        raise AppendOnlyRefused(path, "a spec would be removed")


def _spec_name(spec: Any) -> Any:
    return getattr(spec, "name", spec.get("name") if isinstance(spec, Mapping) else spec)
