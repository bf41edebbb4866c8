"""Write and read analysis products as NeXus (HDF5) files.

Layout (one ``NXdata`` group per product, so any NeXus viewer plots it with its axes)::

    /                           @default = "entry" (NXroot, @creator = "opmap")
    /entry                      NXentry, @default = the main product (see `main_product`)
    /entry/process              NXprocess: program, version, metadata (JSON)
    /entry/<product>            NXdata: @signal = "data", @axes = dims ("." without a
                                coordinate), @<axis>_indices, @title; one dataset per axis
    /entry/<product>/data       the values: @units, @long_name, @dims
    /entry/<product>/<axis>     the coordinate: @units, @long_name
    /entry/tables/<table>       NXcollection: one dataset per column

The ``default`` chain (root → entry → NXdata → signal and axes) is what silx and nexpy
follow to plot a file when it is opened. ``long_name`` is the axis label they show, so it
carries the unit: ``"c lattice parameter (angstrom)"``, or ``"z (um)"`` for a coordinate
without a description; `read_products` strips it back to the bare description.

Files are written to a temporary sibling and renamed into place, so a failure never leaves a
half-written file and never damages an earlier result. An existing file is only replaced when
``overwrite=True``; `next_free_path` proposes a new version name instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from opmap.analysis.products import LabelledArray, Products

__all__ = ["MAIN_PRODUCTS", "main_product", "next_free_path", "read_products", "write_products"]

#: Products a viewer should show first, in order of preference.
MAIN_PRODUCTS = ("c_perp", "rich_fraction", "c_par", "li_thickness")


def next_free_path(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if free, else the first free ``<stem>.v2<suffix>``, ``.v3``, ...

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> next_free_path(folder / "maps.nxs").name
    'maps.nxs'
    >>> _ = (folder / "maps.nxs").write_bytes(b"")
    >>> next_free_path(folder / "maps.nxs").name
    'maps.v2.nxs'
    """
    path = Path(path)
    candidate, version = path, 1
    while candidate.exists():
        version += 1
        candidate = path.with_name(f"{path.stem}.v{version}{path.suffix}")
    return candidate


def write_products(
    path: str | os.PathLike[str], products: Products, *, overwrite: bool = False
) -> Path:
    """Write ``products`` to a NeXus file at ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.nxs``/``.h5`` file.
    products : Products
        What to write.
    overwrite : bool, optional
        Replace an existing file. Without it an existing ``path`` raises `FileExistsError`.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "maps.nxs"
    >>> p = Products(arrays={"c_perp": LabelledArray(np.full((1, 2, 2), 14.1), ("map", "z", "x"),
    ...                                              "angstrom")})
    >>> write_products(target, p).name
    'maps.nxs'
    >>> read_products(target).arrays["c_perp"].units
    'angstrom'
    >>> write_products(target, p)
    Traceback (most recent call last):
    ...
    FileExistsError: ... exists; pass overwrite=True or write to ...maps.v2.nxs
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True or write to {next_free_path(path)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as nexus:
            _write_entry(nexus, products)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def main_product(products: Products) -> str | None:
    """The product a NeXus viewer opens by default: the first of `MAIN_PRODUCTS` present,
    else the array with the most dimensions (the first of those), else None.

    Examples
    --------
    >>> flat = LabelledArray(np.zeros(2), ("map",), "s")
    >>> cube = LabelledArray(np.zeros((2, 1, 1)), ("map", "z", "x"), "")
    >>> main_product(Products(arrays={"time_s": flat, "phase_au": cube}))
    'phase_au'
    >>> main_product(Products(arrays={"time_s": flat, "c_perp": cube, "li_thickness": flat}))
    'c_perp'
    """
    for name in MAIN_PRODUCTS:
        if name in products.arrays:
            return name
    ranked = sorted(products.arrays, key=lambda name: -products.arrays[name].values.ndim)
    return ranked[0] if ranked else None


def _write_entry(nexus: h5py.File, products: Products) -> None:
    nexus.attrs["NX_class"] = "NXroot"
    nexus.attrs["creator"] = "opmap"
    nexus.attrs["default"] = "entry"
    entry = nexus.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    default = main_product(products)
    if default is not None:
        entry.attrs["default"] = default
    process = entry.create_group("process")
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = "opmap"
    process["version"] = str(products.metadata.get("opmap_version", ""))
    process["metadata"] = json.dumps(dict(products.metadata), default=str)
    for name, array in products.arrays.items():
        _write_nxdata(entry.create_group(name), name, array, products.coords)
    tables = entry.create_group("tables")
    tables.attrs["NX_class"] = "NXcollection"
    for name, columns in products.tables.items():
        group = tables.create_group(name)
        group.attrs["NX_class"] = "NXcollection"
        for column, values in columns.items():
            group[column] = np.asarray(values)


def _write_nxdata(
    group: h5py.Group, name: str, array: LabelledArray, coords: Mapping[str, LabelledArray]
) -> None:
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "data"
    group.attrs["title"] = array.long_name or name
    group.attrs["axes"] = [dim if dim in coords else "." for dim in array.dims]
    data = group.create_dataset("data", data=array.values, compression="gzip")
    data.attrs["units"] = array.units
    data.attrs["long_name"] = _label(name, array)
    data.attrs["dims"] = list(array.dims)
    for index, dim in enumerate(array.dims):
        if dim in coords:
            coord = coords[dim]
            group[dim] = coord.values
            group[dim].attrs["units"] = coord.units
            group[dim].attrs["long_name"] = _label(dim, coord)
            group.attrs[f"{dim}_indices"] = index


def _label(name: str, labelled: LabelledArray) -> str:
    """The viewer's label: the description (or the name) with the unit in brackets.

    Examples
    --------
    >>> _label("z", LabelledArray(np.zeros(1), ("z",), "um"))
    'z (um)'
    >>> _label("c", LabelledArray(np.zeros(1), ("m",), "", "c lattice parameter"))
    'c lattice parameter'
    """
    text = labelled.long_name or name
    return f"{text} ({labelled.units})" if labelled.units else text


def _unlabel(name: str, label: str, units: str) -> str:
    """The inverse of `_label`: the bare ``long_name`` ("" when the label was the name).

    Examples
    --------
    >>> _unlabel("z", "z (um)", "um"), _unlabel("c", "c parameter (angstrom)", "angstrom")
    ('', 'c parameter')
    """
    suffix = f" ({units})" if units else ""
    text = label[: -len(suffix)] if suffix and label.endswith(suffix) else label
    return "" if text == name else text


def read_products(path: str | os.PathLike[str]) -> Products:
    """Read a file written by `write_products` back into `Products`.

    Raises
    ------
    ValueError
        If the file is not an opmap products file (names the missing part).
    """
    with h5py.File(path, "r") as nexus:
        if "entry/process/metadata" not in nexus:
            raise ValueError(f"{path} is not an opmap products file: no /entry/process/metadata")
        entry = nexus["entry"]
        metadata = json.loads(entry["process/metadata"][()])
        arrays, coords = {}, {}
        for name, group in entry.items():
            if group.attrs.get("NX_class") != "NXdata":
                continue
            arrays[name] = _read_labelled(name, group["data"])
            for dim in arrays[name].dims:
                if dim in group and dim not in coords:
                    coords[dim] = _read_coord(dim, group[dim])
        tables = {
            name: {column: values[()] for column, values in group.items()}
            for name, group in entry["tables"].items()
        }
    return Products(arrays=arrays, coords=coords, tables=tables, metadata=metadata)


def _read_labelled(name: str, dataset: h5py.Dataset) -> LabelledArray:
    dims = tuple(_text(d) for d in dataset.attrs["dims"])
    units = _text(dataset.attrs["units"])
    long_name = _unlabel(name, _text(dataset.attrs["long_name"]), units)
    return LabelledArray(dataset[()], dims, units, long_name)


def _read_coord(dim: str, dataset: h5py.Dataset) -> LabelledArray:
    units = _text(dataset.attrs.get("units", ""))
    long_name = _unlabel(dim, _text(dataset.attrs.get("long_name", "")), units)
    return LabelledArray(dataset[()], (dim,), units, long_name)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
