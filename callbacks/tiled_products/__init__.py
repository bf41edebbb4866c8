"""Analysis products in Tiled: one version per analysis of an experiment, as xarray.

Layout (flat, so remote users browse short paths)::

    processed/<experiment_id>/                 container, metadata {experiment_id}
    processed/<experiment_id>/v1/              spec xarray_dataset: ``.read()`` gives an
                                               xarray.Dataset; metadata: raw_uids,
                                               analysis_parameters, opmap_version,
                                               created_utc, version, + Products.metadata,
                                               attrs (the Dataset's attributes)
    processed/<experiment_id>/v1/c_perp        array, spec xarray_data_var, dims
                                               ("map", "z", "x"), metadata {units,
                                               long_name, attrs: {units, long_name}}
    processed/<experiment_id>/v1/z             dimension coordinate (spec xarray_coord)
    processed/<experiment_id>/v1/time_s        coordinate along map (spec xarray_coord)
    processed/<experiment_id>/v1/version       scalar coordinate: 1 for v1
    processed/<experiment_id>/v1-tables/       container of the version's tables
    processed/<experiment_id>/v1-tables/grains table

Tables stay Tiled tables beside the Dataset: a child of an ``xarray_dataset`` must be
an array, and an appendable table in the SQL store grows row by row in one request.

Writes are atomic per map for readers: every array of a map is written, then the map is
committed in the version's metadata (``committed``: maps, table rows, complete nodes), and
:func:`read_tiled_products` reads only what is committed. A failed write is retried
idempotently (:func:`retry_transient`; re-writing map k replaces map k).

A replay writes ``v2``, ``v3``, ...; an existing version, array or table is never
replaced. A version whose products are final is sealed (:func:`seal_version`,
:meth:`TiledProductWriter.seal`): the live publisher seals its version when it finishes and
the earlier versions when it starts a new one, a replay seals its version once written; on
the opmap server only an admin key may then change a sealed version.

Maps are grown live along ``map`` (:meth:`TiledProductWriter.append_map`, one
``patch(..., offset=n, extend=True)`` per map); tables grow row by row
(:meth:`TiledProductWriter.append_rows`) as Tiled *appendable* tables stored in the
server's SQL table store. Tiled 0.2.20 appends any number of batches to the same
partition, so every appendable table has exactly one partition (partition 0) and rows
read back in the order they were appended.

Examples
--------
::

    from opmap.callbacks.tiled_products import TiledProductWriter, read_latest
    from opmap.callbacks.tiled_writer import ensure_layout

    processed = ensure_layout(client)["processed"]
    writer = TiledProductWriter(processed, "lco-cell-3", raw_uids=[uid], parameters=params)
    writer.append_map({"c_perp": c_map[None]}, coords={"z": z, "x": x})
    writer.append_rows("grains", {"grain_id": ids, "chi_deg": chi_deg})
    products = read_latest(processed, "lco-cell-3")
"""

from ._commit import COMMIT_KEY, CommitRecord
from ._layout import (
    ROLE_KEY,
    TABLES_SUFFIX,
    create_version,
    experiment_container,
    next_version,
    provenance,
    seal_earlier_versions,
    seal_version,
    tables_key,
    validate_key,
    versions,
)
from ._read import read_latest, read_tiled_products
from ._retry import TiledUnavailableError, is_transient, retry_transient
from ._writer import MAP_DIM, TiledProductWriter

__all__ = [
    "COMMIT_KEY",
    "MAP_DIM",
    "ROLE_KEY",
    "TABLES_SUFFIX",
    "CommitRecord",
    "TiledProductWriter",
    "TiledUnavailableError",
    "create_version",
    "experiment_container",
    "is_transient",
    "next_version",
    "provenance",
    "read_latest",
    "read_tiled_products",
    "retry_transient",
    "seal_earlier_versions",
    "seal_version",
    "tables_key",
    "validate_key",
    "versions",
]
