"""`TiledProductWriter`: one new version of an experiment's products, written or grown."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from tiled.client.container import Container
from tiled.structures.core import Spec

from opmap.analysis.products import LabelledArray, Products

from ._dataset import COORD, DATA_VAR, MAP_TIME, VERSION_COORD, array_metadata
from ._layout import (
    ROLE_KEY,
    create_version,
    provenance,
    tables_key,
    validate_key,
)

__all__ = ["MAP_DIM", "TiledProductWriter"]

#: Name of the leading dimension along which maps are appended live.
MAP_DIM = "map"
_RESERVED_METADATA = ("experiment_id", "version", "attrs", ROLE_KEY)


@dataclass
class _Growing:
    """An array being grown along ``map``: its node and what every append must match."""

    node: Any
    dims: tuple[str, ...]
    trailing_shape: tuple[int, ...]
    dtype: np.dtype
    units: str
    n_maps: int


class TiledProductWriter:
    """Write the products of one analysis of one experiment into a new Tiled version.

    Creating the writer creates ``processed/<experiment_id>/<version>`` (``version`` from
    :func:`next_version`: ``"v1"``, then ``"v2"``, ...) with metadata linking it to the
    raw runs, the analysis parameters and ``opmap.__version__``. The version container
    is a Tiled ``xarray_dataset``: ``.read()`` on it gives an ``xarray.Dataset`` with
    coordinates (``map``, ``z``, ``x``, ``time_s``, ...) and ``units`` attributes. Tables
    are written beside it, in ``processed/<experiment_id>/<version>-tables``.

    Parameters
    ----------
    processed : tiled.client.container.Container
        The ``processed`` container of the opmap server (see ``ensure_layout``).
    experiment_id : str
        Name of the experiment, 1–128 characters of ``A-Za-z0-9._-``.
    raw_uids : sequence of str
        Start uids of the raw runs the products derive from.
    parameters : mapping, optional
        Analysis parameters (JSON-serialisable), stored as ``analysis_parameters``.
    coordinate_arrays : collection of str, optional
        Arrays written as non-dimension coordinates instead of data variables (default
        ``("time_s",)``: the experiment time of each map, a coordinate along ``map``).
    proposal : str, optional
        Tag a new experiment container with this proposal, so that reader keys of the
        proposal see it (``opmap.service`` access per proposal); default: untagged.

    Attributes
    ----------
    version : str
        The version this writer writes (``"v1"``, ...).
    container : tiled.client.container.Container
        The version container.
    """

    def __init__(
        self,
        processed: Container,
        experiment_id: str,
        *,
        raw_uids: Sequence[str] = (),
        parameters: Mapping[str, Any] | None = None,
        coordinate_arrays: Collection[str] = (MAP_TIME,),
        proposal: str | None = None,
    ) -> None:
        validate_key("experiment_id", experiment_id)
        metadata = provenance(experiment_id, raw_uids, parameters or {})
        # --- access per proposal: tag the experiment when it is created (opmap.service) ---
        if proposal is not None and experiment_id not in processed:
            tags = {"metadata": {"experiment_id": experiment_id}, "access_tags": [proposal]}
            processed.create_container(experiment_id, **tags)
        self.experiment_id = experiment_id
        self.version, self.container = create_version(processed, experiment_id, metadata)
        self._growing: dict[str, _Growing] = {}
        self._static_coords: dict[str, LabelledArray] = {}
        self._tables: dict[str, tuple[Any, pa.Schema]] = {}
        self._tables_node: Any = None
        self._live_names: frozenset[str] | None = None
        self._coordinate_arrays = frozenset(coordinate_arrays)
        self._labelled = False

    @property
    def n_maps(self) -> int:
        """Number of maps appended so far with :meth:`append_map`."""
        return next((g.n_maps for g in self._growing.values()), 0)

    def write_products(self, products: Products) -> None:
        """Write every array, coordinate and table of ``products`` and merge its metadata.

        Raises
        ------
        ValueError
            Before anything is written: when a name is used twice (arrays, coordinates and
            tables share one namespace), is already stored in this version, is not a valid
            key, or when ``products.metadata`` would change ``experiment_id`` / ``version``.
        """
        named = [*products.arrays, *products.coords, *products.tables]
        self._check_new_names(named)
        metadata = dict(products.metadata)
        for key in _RESERVED_METADATA:
            if key in metadata and metadata[key] != self.container.metadata.get(key):
                raise ValueError(
                    f"products.metadata[{key!r}] = {metadata[key]!r} contradicts this "
                    f"version's {key} {self.container.metadata.get(key)!r}"
                )
        for name, coord in products.coords.items():
            self._write_array(name, coord, COORD)
        for name, array in products.arrays.items():
            self._write_array(name, array, self._spec(name))
        for name, columns in products.tables.items():
            self._tables_container().write_table(
                {column: np.asarray(values) for column, values in columns.items()}, key=name
            )
        if metadata:
            self.container.update_metadata(metadata=metadata)

    def append_map(
        self,
        arrays: Mapping[str, LabelledArray],
        *,
        coords: Mapping[str, LabelledArray] | None = None,
    ) -> int:
        """Append the next map(s) of every live array, growing each along ``map``.

        Parameters
        ----------
        arrays : mapping of str to LabelledArray
            Each with leading dim ``"map"`` of length n >= 1 (usually 1), e.g. a c map of
            shape ``(1, n_z, n_x)`` with dims ``("map", "z", "x")``. The first call fixes the
            set of names, dims, trailing shapes, dtypes and units; later calls must match.
        coords : mapping of str to LabelledArray, optional
            A coordinate named ``"map"`` (dims ``("map",)``) grows with the arrays; any
            other (``z``, ``x`` in µm) is written on its first appearance and must be
            identical afterwards.

        Returns
        -------
        int
            The number of maps stored after this call.

        Raises
        ------
        ValueError
            Before anything of this call is written, naming the array and the mismatch.
        """
        growing = {**arrays}
        static: dict[str, LabelledArray] = {}
        for name, coord in (coords or {}).items():
            (growing if coord.dims == (MAP_DIM,) else static)[name] = coord
        self._check_live_names(arrays, growing)
        self._check_growing(growing)
        self._check_static_coords(static)
        for name, coord in static.items():
            if name not in self._static_coords:
                self._write_array(name, coord, COORD)
                self._static_coords[name] = coord
        for name, labelled in growing.items():
            self._grow(name, labelled, self._spec(name) if name in arrays else COORD)
        return self.n_maps

    def append_rows(self, table_name: str, columns: Mapping[str, np.ndarray]) -> int:
        """Append rows to the appendable table ``table_name`` (created on the first call).

        Parameters
        ----------
        table_name : str
            E.g. ``"grains"`` (one row per grain observation), ``"grain_counts"``,
            ``"electrochemistry"``.
        columns : mapping of str to ndarray
            Equal-length 1-D columns; the first call fixes names and dtypes (the schema).

        Returns
        -------
        int
            Rows appended by this call.

        Raises
        ------
        ValueError
            When columns differ in length or are not 1-D, or the schema differs from the
            table's, before anything is sent.
        """
        validate_key("table_name", table_name)
        table = _arrow_table(table_name, columns)
        if table_name not in self._tables:
            self._check_new_names([table_name])
            node = self._tables_container().create_appendable_table(table.schema, key=table_name)
            self._tables[table_name] = (node, table.schema)
        node, schema = self._tables[table_name]
        if not table.schema.equals(schema):
            raise ValueError(
                f"rows for table {table_name!r} have schema {_describe(table.schema)}; "
                f"the table has {_describe(schema)}"
            )
        if table.num_rows:
            node.append_partition(0, table)  # one partition; see the module docstring
        return table.num_rows

    def _spec(self, name: str) -> Spec:
        return COORD if name in self._coordinate_arrays else DATA_VAR

    def _write_array(self, name: str, labelled: LabelledArray, spec: Spec) -> Any:
        if not self._labelled:
            self._write_version_coord()
        return self.container.write_array(
            labelled.values,
            key=name,
            dims=list(labelled.dims),
            metadata=array_metadata(labelled),
            specs=[spec],
        )

    def _write_version_coord(self) -> None:
        # Written with the first array, never alone. Besides labelling the Dataset, a 0-d
        # child keeps tiled 0.2.20's DatasetClient from its "wide table" shortcut, which
        # fetches all 1-D variables as one table whenever every child has the same first
        # length (n_maps == n_z == n_x) and then mixes up the dims map, z and x.
        number = LabelledArray(np.array(int(self.version[1:])), (), "", "product version")
        self._labelled = True
        self._write_array(VERSION_COORD, number, COORD)

    def _tables_container(self) -> Any:
        if self._tables_node is None:
            metadata = {"experiment_id": self.experiment_id, "version": self.version}
            parent = self.container.parent
            key = tables_key(self.version)
            self._tables_node = parent.create_container(key, metadata=metadata)
        return self._tables_node

    def _stored_names(self) -> set[str]:
        stored = set(self.container)
        if self._tables_node is not None:
            stored |= set(self._tables_node)
        return stored

    def _check_new_names(self, names: Sequence[str]) -> None:
        for name in names:
            validate_key("product name", name)
        if VERSION_COORD in names:
            raise ValueError(f"{VERSION_COORD!r} is reserved for the version coordinate")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"names must be unique across arrays, coords and tables: {repeated}")
        stored = sorted(set(names) & self._stored_names())
        if stored:
            raise ValueError(
                f"{stored} already stored in {self.experiment_id}/{self.version}; "
                "products are never overwritten (write a new version)"
            )

    def _check_live_names(
        self, arrays: Mapping[str, LabelledArray], growing: Mapping[str, LabelledArray]
    ) -> None:
        if not arrays:
            raise ValueError("append_map needs at least one array")
        names = frozenset(growing)
        if self._live_names is None:
            self._check_new_names(list(names))
            self._live_names = names
        elif names != self._live_names:
            raise ValueError(
                f"append_map received {sorted(names)} but the live maps are "
                f"{sorted(self._live_names)}; every map must carry the same arrays"
            )

    def _check_growing(self, growing: Mapping[str, LabelledArray]) -> None:
        counts = {}
        for name, labelled in growing.items():
            values = labelled.values
            if labelled.dims[:1] != (MAP_DIM,) or values.shape[0] < 1:
                raise ValueError(
                    f"array {name!r} must have leading dim {MAP_DIM!r} of length >= 1; "
                    f"got dims {labelled.dims} and shape {values.shape}"
                )
            known = self._growing.get(name)
            if known is not None:
                _check_matches(name, labelled, known)
            counts[name] = values.shape[0]
        if len(set(counts.values())) > 1:
            raise ValueError(f"arrays of one append_map call differ in map count: {counts}")

    def _check_static_coords(self, static: Mapping[str, LabelledArray]) -> None:
        for name, coord in static.items():
            known = self._static_coords.get(name)
            if known is None:
                self._check_new_names([name])
            elif not (
                known.dims == coord.dims
                and known.units == coord.units
                and np.array_equal(known.values, coord.values)
            ):
                raise ValueError(f"coordinate {name!r} differs from the one already written")

    def _grow(self, name: str, labelled: LabelledArray, spec: Spec) -> None:
        values = labelled.values
        known = self._growing.get(name)
        if known is None:
            node = self._write_array(name, labelled, spec)
            self._growing[name] = _Growing(
                node, labelled.dims, values.shape[1:], values.dtype, labelled.units, len(values)
            )
            return
        offset = (known.n_maps,) + (0,) * (values.ndim - 1)
        known.node.patch(values, offset=offset, extend=True)
        known.n_maps += len(values)


def _check_matches(name: str, labelled: LabelledArray, known: _Growing) -> None:
    values = labelled.values
    found = (labelled.dims, values.shape[1:], values.dtype, labelled.units)
    expected = (known.dims, known.trailing_shape, known.dtype, known.units)
    if found != expected:
        raise ValueError(
            f"array {name!r} (dims, shape after 'map', dtype, units) = {found} does not "
            f"match the stored {expected}"
        )


def _arrow_table(table_name: str, columns: Mapping[str, np.ndarray]) -> pa.Table:
    if not columns:
        raise ValueError(f"rows for table {table_name!r} need at least one column")
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    shapes = {name: values.shape for name, values in arrays.items()}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) > 1:
        raise ValueError(f"columns of table {table_name!r} must be 1-D of equal length: {shapes}")
    return pa.table(arrays)


def _describe(schema: pa.Schema) -> str:
    return "{" + ", ".join(f"{field.name}: {field.type}" for field in schema) + "}"
