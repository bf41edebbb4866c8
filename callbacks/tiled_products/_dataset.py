"""How a product version is an xarray Dataset in Tiled's own terms.

Tiled's client turns a container with the spec ``xarray_dataset`` into a
``tiled.client.xarray.DatasetClient``, whose ``.read()`` builds an ``xarray.Dataset``
from the container's children: each child must carry the spec ``xarray_data_var`` or
``xarray_coord``, its ``dims`` in its array structure and its xarray attributes under
``metadata["attrs"]``; the Dataset's own attributes are the container's
``metadata["attrs"]``. This module holds those conventions and their inverse, so the
writer and the reader cannot disagree.

Mapping to :class:`~opmap.analysis.products.Products`:

- ``Products.coords`` (dims ``(name,)``: ``map``, ``z``, ``x``, ...) are dimension
  coordinates (``xarray_coord``);
- arrays named in ``coordinate_arrays`` (``time_s``, the map's time) are non-dimension
  coordinates along ``map`` (``xarray_coord`` whose dims are not its own name);
- every other array is a data variable (``xarray_data_var``);
- the scalar coordinate ``version`` (1 for ``v1``) labels the Dataset, so versions
  concatenate with ``xarray.concat(..., dim="version")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tiled.structures.core import Spec

from opmap.analysis.products import LabelledArray

__all__ = [
    "COORD",
    "DATASET",
    "DATA_VAR",
    "MAP_TIME",
    "VERSION_COORD",
    "array_metadata",
    "dataset_attrs",
    "labelled_from_node",
    "spec_names",
]

DATASET = Spec("xarray_dataset")
DATA_VAR = Spec("xarray_data_var")
COORD = Spec("xarray_coord")
#: Array written as a non-dimension coordinate along ``map``: experiment time (s).
MAP_TIME = "time_s"
#: Scalar coordinate holding the version number (1 for ``v1``).
VERSION_COORD = "version"
_DATASET_ATTRS = ("experiment_id", "version", "opmap_version", "created_utc")


def array_metadata(labelled: LabelledArray) -> dict[str, Any]:
    """Node metadata of one array: xarray ``attrs`` plus the same keys at top level.

    The top-level ``units`` / ``long_name`` are what HTTP users and older readers see
    (``node.metadata["units"]``); ``attrs`` is what ``DatasetClient.read()`` puts on the
    ``DataArray``. Empty values are left out of ``attrs`` (no ``units: ""`` in xarray).

    Examples
    --------
    >>> array_metadata(LabelledArray(np.zeros(2), ("z",), "um", "height"))
    {'units': 'um', 'long_name': 'height', 'attrs': {'units': 'um', 'long_name': 'height'}}
    >>> array_metadata(LabelledArray(np.zeros(2), ("map",), ""))["attrs"]
    {}
    """
    named = {"units": labelled.units, "long_name": labelled.long_name}
    return {**named, "attrs": {key: value for key, value in named.items() if value}}


def dataset_attrs(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The Dataset attributes of a version: its identity, flat strings only.

    Only strings are kept so the Dataset also serialises to netCDF (Tiled's
    ``application/x-netcdf`` export); the full provenance (raw uids, parameters) stays in
    the container's metadata.

    Examples
    --------
    >>> dataset_attrs({"experiment_id": "cell-7", "version": "v1", "raw_uids": ["a"]})
    {'experiment_id': 'cell-7', 'version': 'v1'}
    """
    return {key: str(metadata[key]) for key in _DATASET_ATTRS if key in metadata}


def spec_names(node: Any) -> set[str]:
    """Names of the specs of a Tiled client node."""
    return {spec.name for spec in node.specs}


def labelled_from_node(node: Any, values: np.ndarray | None = None) -> LabelledArray:
    """A :class:`LabelledArray` from a Tiled array node (its dims, units, long_name).

    Parameters
    ----------
    node : tiled.client.array.ArrayClient
        An array written by the product writer (or an older one with top-level units).
    values : ndarray, optional
        The values when already read; else ``node.read()``.
    """
    metadata = node.metadata
    attrs = metadata.get("attrs") or {}
    units = attrs.get("units", metadata.get("units", ""))
    long_name = attrs.get("long_name", metadata.get("long_name", ""))
    dims = tuple(node.structure().dims or ())
    return LabelledArray(node.read() if values is None else values, dims, units, long_name)
