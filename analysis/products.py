"""Analysis products: labelled arrays with units, tables and provenance.

The same value objects feed the NeXus writer (`opmap.analysis.nexus`), the Tiled product
writer and the figures, so every product carries its dimension names and units wherever it
goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelledArray:
    """An array with named dimensions and a unit.

    Parameters
    ----------
    values : ndarray
        The data; ``values.ndim == len(dims)``.
    dims : tuple of str
        One name per axis, e.g. ``("map", "z", "x")``.
    units : str
        Unit of the values (``"angstrom"``, ``"um"``, ``"s"``, ``""`` for dimensionless).
    long_name : str, optional
        A human description.

    Examples
    --------
    >>> c = LabelledArray(np.full((2, 3), 14.0), ("z", "x"), "angstrom", "c lattice parameter")
    >>> c.dims, c.values.shape
    (('z', 'x'), (2, 3))
    >>> LabelledArray(np.zeros(3), ("z", "x"), "um")
    Traceback (most recent call last):
    ...
    ValueError: dims=('z', 'x') names 2 axes but values has shape (3,)
    """

    values: np.ndarray
    dims: tuple[str, ...]
    units: str
    long_name: str = ""

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        object.__setattr__(self, "values", values)
        if values.ndim != len(self.dims):
            raise ValueError(
                f"dims={self.dims} names {len(self.dims)} axes but values has shape {values.shape}"
            )


@dataclass(frozen=True)
class Products:
    """A set of analysis products for one experiment (or one run).

    Parameters
    ----------
    arrays : mapping of str to LabelledArray
        Maps and series, e.g. ``"c_perp"`` with dims ``("map", "z", "x")``.
    coords : mapping of str to LabelledArray
        One-dimensional coordinates named after a dimension (``"z"`` in µm, ``"time"`` in s).
    tables : mapping of str to mapping of str to ndarray
        Column tables, e.g. the grain table; all columns of a table have equal length.
    metadata : mapping
        Provenance: raw run uids, analysis parameters, opmap version. JSON-serialisable.

    Examples
    --------
    >>> p = Products(
    ...     arrays={"li_thickness": LabelledArray(np.array([0.0, 1.2]), ("map",), "um")},
    ...     coords={"map": LabelledArray(np.arange(2), ("map",), "")},
    ...     tables={"grains": {"id": np.array([1, 2]), "azimuth_deg": np.array([0.0, 60.0])}},
    ...     metadata={"opmap_version": "0.1.0"},
    ... )
    >>> sorted(p.arrays), p.table_length("grains")
    (['li_thickness'], 2)
    """

    arrays: Mapping[str, LabelledArray] = field(default_factory=dict)
    coords: Mapping[str, LabelledArray] = field(default_factory=dict)
    tables: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, coord in self.coords.items():
            if coord.dims != (name,):
                raise ValueError(
                    f"coordinate {name!r} must have dims ({name!r},), not {coord.dims}"
                )
        for name, array in self.arrays.items():
            for axis, dim in enumerate(array.dims):
                coord = self.coords.get(dim)
                if coord is not None and coord.values.shape[0] != array.values.shape[axis]:
                    raise ValueError(
                        f"array {name!r} has {array.values.shape[axis]} entries along {dim!r} "
                        f"but coordinate {dim!r} has {coord.values.shape[0]}"
                    )
        for name in self.tables:
            self.table_length(name)

    def table_length(self, name: str) -> int:
        """Number of rows of table ``name``; raise ValueError if its columns disagree."""
        lengths = {column: len(values) for column, values in self.tables[name].items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"table {name!r} has columns of different lengths: {lengths}")
        return next(iter(lengths.values()), 0)
