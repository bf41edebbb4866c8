"""Read a version of products back from Tiled into :class:`~opmap.analysis.products.Products`."""

from __future__ import annotations

from typing import Any

import numpy as np
from tiled.client.container import Container

from opmap.analysis.products import LabelledArray, Products

from ._layout import ROLE_KEY, versions

__all__ = ["read_latest", "read_tiled_products"]


def read_tiled_products(container: Container) -> Products:
    """Read every product of one version container (``processed/<experiment>/<version>``).

    Arrays and coordinates come back with their ``dims``, ``units`` and ``long_name``;
    tables (written in one go or grown row by row) as ``{column: ndarray}``; the
    container's metadata (raw run uids, analysis parameters, opmap version, ...) as
    ``Products.metadata``. Nodes not written by opmap are ignored.

    Parameters
    ----------
    container : tiled.client.container.Container
        A version container written by :class:`~opmap.callbacks.tiled_products.TiledProductWriter`.

    Returns
    -------
    Products
        The inverse of ``TiledProductWriter.write_products`` (plus anything appended live).
    """
    arrays: dict[str, LabelledArray] = {}
    coords: dict[str, LabelledArray] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    for key, node in container.items():
        role = node.metadata.get(ROLE_KEY)
        if role in ("array", "coord"):
            target = arrays if role == "array" else coords
            target[key] = _labelled(node)
        elif role == "table":
            frame = node.read()
            tables[key] = {column: frame[column].to_numpy() for column in frame.columns}
    return Products(arrays=arrays, coords=coords, tables=tables, metadata=dict(container.metadata))


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


def _labelled(node: Any) -> LabelledArray:
    metadata = node.metadata
    dims = tuple(node.structure().dims or ())
    units, long_name = metadata.get("units", ""), metadata.get("long_name", "")
    return LabelledArray(node.read(), dims, units, long_name)
