"""Read a version of products back from Tiled into :class:`~opmap.analysis.products.Products`."""

from __future__ import annotations

from typing import Any

import numpy as np
from tiled.client.container import Container

from opmap.analysis.products import LabelledArray, Products

from ._commit import COMMIT_KEY, CommitRecord
from ._dataset import VERSION_COORD, labelled_from_node, spec_names
from ._layout import ROLE_KEY, tables_key, versions

__all__ = ["read_latest", "read_tiled_products"]


def read_tiled_products(container: Container) -> Products:
    """Read every product of one version container (``processed/<experiment>/<version>``).

    Arrays and coordinates come back with their ``dims``, ``units`` and ``long_name``;
    tables (written in one go or grown row by row, stored beside the version in
    ``<version>-tables``) as ``{column: ndarray}``; the container's metadata (raw run
    uids, analysis parameters, opmap version, ...) as ``Products.metadata``. Nodes not
    written by opmap are ignored. Versions written before products became xarray
    Datasets (nodes tagged ``opmap_role``, tables inside the version) are read too.

    Only what the writer committed is read (:class:`~._commit.CommitRecord`): arrays
    along ``map`` are cut to the committed maps, grown tables to their committed rows, and
    nodes not yet committed are skipped, so a map whose write failed half way is never
    seen. (Tiled's own ``container.read()`` as an ``xarray.Dataset`` shows the stored
    arrays uncut.)

    Parameters
    ----------
    container : tiled.client.container.Container
        A version container written by :class:`~opmap.callbacks.tiled_products.TiledProductWriter`.

    Returns
    -------
    Products
        The inverse of ``TiledProductWriter.write_products`` (plus anything appended live):
        dimension coordinates (dims ``(name,)``) go to ``coords``; data variables and
        non-dimension coordinates (``time_s``) to ``arrays``; the scalar ``version``
        coordinate is dropped (it repeats ``metadata["version"]``).
    """
    arrays: dict[str, LabelledArray] = {}
    coords: dict[str, LabelledArray] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    record = CommitRecord.from_metadata(container.metadata)
    for key, node in container.items():
        if record is not None and key not in record.names:
            continue
        kind = _kind(key, node)
        if kind == "table":
            tables[key] = _columns(node)
        elif kind in ("array", "coord"):
            labelled = _committed_array(key, node, record)
            if labelled is not None:
                (coords if kind == "coord" else arrays)[key] = labelled
    tables.update(_sibling_tables(container, record))
    metadata = {k: v for k, v in container.metadata.items() if k not in ("attrs", COMMIT_KEY)}
    return Products(arrays=arrays, coords=coords, tables=tables, metadata=metadata)


def read_latest(processed: Container, experiment_id: str) -> Products:
    """Read the newest version of ``experiment_id`` under ``processed``.

    Raises
    ------
    KeyError
        When no version of ``experiment_id`` is stored.
    """
    stored = versions(processed, experiment_id)
    if not stored:
        raise KeyError(f"no products stored for experiment {experiment_id!r}")
    return read_tiled_products(processed[experiment_id][stored[-1]])


def _kind(key: str, node: Any) -> str | None:
    """``"coord"``, ``"array"``, ``"table"`` or None (not a product) for one child node."""
    legacy = node.metadata.get(ROLE_KEY)
    if legacy is not None:
        return legacy
    specs = spec_names(node)
    if "xarray_coord" in specs:
        dims = tuple(node.structure().dims or ())
        if dims == (key,):
            return "coord"
        return None if key == VERSION_COORD and dims == () else "array"
    return "array" if "xarray_data_var" in specs else None


def _committed_array(key: str, node: Any, record: CommitRecord | None) -> LabelledArray | None:
    """A grown array cut to the committed maps along ``map``; None when none is committed."""
    if record is None or key not in record.grown:
        return labelled_from_node(node)
    if record.maps == 0:
        return None
    if node.shape[0] <= record.maps:
        return labelled_from_node(node)
    return labelled_from_node(node, node.read(slice=np.s_[: record.maps]))


def _sibling_tables(
    container: Container, record: CommitRecord | None
) -> dict[str, dict[str, np.ndarray]]:
    key = tables_key(container.item["id"])
    parent = container.parent
    if key not in parent:
        return {}
    return {
        name: _columns(node, None if record is None else record.rows.get(name))
        for name, node in parent[key].items()
        if record is None or name in record.names
    }


def _columns(node: Any, n_rows: int | None = None) -> dict[str, np.ndarray]:
    """The table's columns; only the first ``n_rows`` when given (its committed rows)."""
    frame = node.read()
    if n_rows is not None:
        frame = frame.iloc[:n_rows]
    return {column: frame[column].to_numpy() for column in frame.columns}
