"""Write and read analysis products as NeXus (HDF5) files.

Layout (one ``NXdata`` group per product, so any NeXus viewer plots it with its axes)::

    /entry                      NXentry, attribute default = first product
    /entry/process              NXprocess: program, version, metadata (JSON)
    /entry/<product>            NXdata: signal "data" (units), axes = dims, one dataset per axis
    /entry/tables/<table>       NXcollection: one dataset per column

Files are written to a temporary sibling and renamed into place, so a failure never leaves a
half-written file and never damages an earlier result. An existing file is only replaced when
``overwrite=True``; `next_free_path` proposes a new version name instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from opmap.analysis.products import LabelledArray, Products

__all__ = ["next_free_path", "read_products", "write_products"]


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


def _write_entry(nexus: h5py.File, products: Products) -> None:
    entry = nexus.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    if products.arrays:
        entry.attrs["default"] = next(iter(products.arrays))
    process = entry.create_group("process")
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = "opmap"
    process["version"] = str(products.metadata.get("opmap_version", ""))
    process["metadata"] = json.dumps(dict(products.metadata), default=str)
    for name, array in products.arrays.items():
        _write_nxdata(entry.create_group(name), array, products.coords)
    tables = entry.create_group("tables")
    tables.attrs["NX_class"] = "NXcollection"
    for name, columns in products.tables.items():
        group = tables.create_group(name)
        group.attrs["NX_class"] = "NXcollection"
        for column, values in columns.items():
            group[column] = np.asarray(values)


def _write_nxdata(
    group: h5py.Group, array: LabelledArray, coords: dict[str, LabelledArray] | object
) -> None:
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "data"
    group.attrs["axes"] = [dim if dim in coords else "." for dim in array.dims]  # type: ignore[operator]
    data = group.create_dataset("data", data=array.values, compression="gzip")
    data.attrs["units"] = array.units
    data.attrs["long_name"] = array.long_name
    data.attrs["dims"] = list(array.dims)
    for dim in array.dims:
        if dim in coords:  # type: ignore[operator]
            coord = coords[dim]  # type: ignore[index]
            group[dim] = coord.values
            group[dim].attrs["units"] = coord.units
            group[dim].attrs["long_name"] = coord.long_name


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
            arrays[name] = _read_labelled(group["data"])
            for dim in arrays[name].dims:
                if dim in group and dim not in coords:
                    coords[dim] = LabelledArray(
                        group[dim][()],
                        (dim,),
                        _text(group[dim].attrs.get("units", "")),
                        _text(group[dim].attrs.get("long_name", "")),
                    )
        tables = {
            name: {column: values[()] for column, values in group.items()}
            for name, group in entry["tables"].items()
        }
    return Products(arrays=arrays, coords=coords, tables=tables, metadata=metadata)


def _read_labelled(dataset: h5py.Dataset) -> LabelledArray:
    dims = tuple(_text(d) for d in dataset.attrs["dims"])
    return LabelledArray(
        dataset[()], dims, _text(dataset.attrs["units"]), _text(dataset.attrs["long_name"])
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
