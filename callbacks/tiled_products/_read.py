"""Read a version of products back from Tiled into :class:`~opmap.analysis.products.Products`."""

from __future__ import annotations

from typing import Any

import numpy as np
from tiled.client.container import Container

from opmap.analysis.products import LabelledArray, Products

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
    for key, node in container.items():
        kind = _kind(key, node)
        if kind == "table":
            tables[key] = _columns(node)
        elif kind in ("array", "coord"):
            labelled = labelled_from_node(node)
            (coords if kind == "coord" else arrays)[key] = labelled
    tables.update(_sibling_tables(container))
    metadata = {k: v for k, v in container.metadata.items() if k != "attrs"}
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


def _sibling_tables(container: Container) -> dict[str, dict[str, np.ndarray]]:
    key = tables_key(container.item["id"])
    parent = container.parent
    if key not in parent:
        return {}
    return {name: _columns(node) for name, node in parent[key].items()}


def _columns(node: Any) -> dict[str, np.ndarray]:
    frame = node.read()
    return {column: frame[column].to_numpy() for column in frame.columns}
