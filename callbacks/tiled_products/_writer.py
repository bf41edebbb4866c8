"""`TiledProductWriter`: one new version of an experiment's products, written or grown."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from tiled.client.container import Container
from tiled.client.utils import ClientError
from tiled.structures.core import Spec

from opmap.analysis.products import LabelledArray, Products

from ..sealing import is_sealed
from ._commit import COMMIT_KEY, CommitRecord
from ._dataset import (
    COORD,
    DATA_VAR,
    MAP_TIME,
    VERSION_COORD,
    array_metadata,
    labelled_from_node,
)
from ._layout import (
    ROLE_KEY,
    create_version,
    provenance,
    seal_version,
    tables_key,
    validate_key,
)

__all__ = ["MAP_DIM", "TiledProductWriter"]

#: Name of the leading dimension along which maps are appended live.
MAP_DIM = "map"
_RESERVED_METADATA = ("experiment_id", "version", "attrs", ROLE_KEY, COMMIT_KEY)
#: Stamps of the version's own creation (`provenance`): the stored ones stand. Products
#: carry the analysis's own (e.g. a replay's ``ExperimentAnalysis`` stamps when it ran),
#: and a stored key may not change under the writer key's append-only rule.
_CREATION_METADATA = ("created_utc", "opmap_version")
_HTTP_CONFLICT = 409


@dataclass
class _Growing:
    """An array being grown along ``map``: its node and what every append must match."""

    node: Any
    dims: tuple[str, ...]
    trailing_shape: tuple[int, ...]
    dtype: np.dtype
    units: str


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

    Notes
    -----
    Writes are atomic for readers and idempotent for retries. Every array of a map is
    written at an explicit offset along ``map`` and the map is then *committed* (the
    version's ``committed`` metadata, :class:`~._commit.CommitRecord`); readers use only
    committed maps, table rows and nodes. A call that failed half way (a timeout, a 5xx,
    a restarting server) may simply be made again: re-writing map k replaces map k, rows
    already stored by the failed call are not appended twice, and a node the failed call
    created is taken over rather than refused.

    Attributes
    ----------
    version : str
        The version this writer writes (``"v1"``, ...).
    container : tiled.client.container.Container
        The version container.
    committed : CommitRecord
        What readers may trust so far.
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
        metadata[COMMIT_KEY] = CommitRecord(0).to_metadata()  # nothing to trust yet
        # --- access per proposal: tag the experiment when it is created (opmap.service) ---
        if proposal is not None and experiment_id not in processed:
            tags = {"metadata": {"experiment_id": experiment_id}, "access_tags": [proposal]}
            processed.create_container(experiment_id, **tags)
        self.experiment_id = experiment_id
        self._processed = processed
        self.version, self.container = create_version(processed, experiment_id, metadata)
        self._init_state(coordinate_arrays)

    @classmethod
    def reopen(
        cls,
        processed: Container,
        experiment_id: str,
        version: str,
        *,
        coordinate_arrays: Collection[str] = (MAP_TIME,),
    ) -> TiledProductWriter:
        """Go on writing a stored version (a resumed experiment: ``opmap resume``).

        The committed maps, table rows and nodes are taken as written; the next
        :meth:`append_map` writes map ``committed.maps`` (maps written but not committed
        by the interrupted writer are written again). Arrays written whole stay refused.

        Raises
        ------
        KeyError
            When the version is not stored.
        ValueError
            When the version has no commit record (written before it existed) or is sealed
            (its products are final).
        """
        container = processed[experiment_id][version]
        if is_sealed(container.metadata):
            raise ValueError(f"{experiment_id}/{version} is sealed (final): write a new one")
        record = CommitRecord.from_metadata(container.metadata)
        if record is None:
            raise ValueError(f"{experiment_id}/{version} has no commit record: write a new one")
        writer = cls.__new__(cls)
        writer.experiment_id, writer.version, writer.container = experiment_id, version, container
        writer._processed = processed
        writer._init_state(coordinate_arrays)
        writer._adopt(record)
        return writer

    def _init_state(self, coordinate_arrays: Collection[str]) -> None:
        self._growing: dict[str, _Growing] = {}
        self._static_coords: dict[str, LabelledArray] = {}
        self._tables: dict[str, tuple[Any, pa.Schema]] = {}
        self._tables_node: Any = None
        self._live_names: frozenset[str] | None = None
        self._coordinate_arrays = frozenset(coordinate_arrays)
        self._labelled = False
        self._n_written = 0
        #: rows known stored per table; tables in _rows_unsure may hold more (failed append)
        self._rows: dict[str, int] = {}
        self._rows_unsure: set[str] = set()
        self._started: set[str] = set()  # nodes this writer began to create
        self._complete: set[str] = set()  # ... and finished creating
        self.committed = CommitRecord(0)

    def _adopt(self, record: CommitRecord) -> None:
        """Take the committed state of the stored version as this writer's own."""
        container = self.container
        for name in record.grown:
            node = container[name]
            like = labelled_from_node(node, np.zeros((0, *node.shape[1:]), node.dtype))
            self._growing[name] = _Growing(
                node, like.dims, tuple(node.shape[1:]), np.dtype(node.dtype), like.units
            )
        self._live_names = frozenset(record.grown) if record.grown else None
        for name in set(record.names) - set(record.grown):
            if name in container and name != VERSION_COORD:
                self._static_coords[name] = labelled_from_node(container[name])
        self._labelled = VERSION_COORD in container
        key = tables_key(self.version)
        if key in container.parent:
            self._tables_node = container.parent[key]
            for name in set(record.rows) & set(self._tables_node):
                node = self._tables_node[name]
                self._tables[name] = (node, node.structure().arrow_schema_decoded)
                self._rows_unsure.add(name)  # uncommitted rows may be stored: count them
        self._n_written, self._rows = record.maps, dict(record.rows)
        self._complete = set(record.names) | ({key} if self._tables_node is not None else set())
        # nodes the interrupted writer created but never committed: taken over when written
        stored = set(container) | (set(self._tables_node) if self._tables_node else set())
        self._started = self._complete | (stored - set(record.names) - {VERSION_COORD})
        if self._tables_node is not None:
            self._rows_unsure |= set(self._tables_node)  # rows of uncommitted maps: count
        self.committed = record

    def seal(self) -> list[str]:
        """Seal this version and its tables: its products are final (`seal_version`).

        On the opmap server only an admin key may change them afterwards, so call it when
        nothing more is to be written. Returns the keys sealed by this call.
        """
        return seal_version(self._processed, self.experiment_id, self.version)

    @property
    def n_maps(self) -> int:
        """Number of maps written so far with :meth:`append_map` (committed or not)."""
        return self._n_written

    @property
    def written_names(self) -> frozenset[str]:
        """Arrays, coordinates and tables this writer has completely created."""
        return frozenset(self._complete)

    def commit(
        self,
        n_maps: int | None = None,
        *,
        rows: Mapping[str, int] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CommitRecord:
        """Tell readers to trust the first ``n_maps`` maps and ``rows`` rows of each table.

        Parameters
        ----------
        n_maps : int, optional
            Maps to commit, at most :attr:`n_maps` (default: all written).
        rows : mapping of str to int, optional
            Rows to commit per table, each at most the rows stored (default: all stored).
        metadata : mapping, optional
            Other version metadata updated in the same request (e.g. ``raw_uids``).

        Raises
        ------
        ValueError
            When more maps or rows are committed than were written, before any request.
        """
        n_maps = self._n_written if n_maps is None else int(n_maps)
        if not 0 <= n_maps <= self._n_written:
            raise ValueError(f"n_maps must be in [0, {self._n_written}] (written); got {n_maps}")
        rows = dict(self._rows if rows is None else rows)
        for table, count in rows.items():
            if not 0 <= count <= self._rows.get(table, 0):
                raise ValueError(
                    f"rows[{table!r}] = {count} but {self._rows.get(table, 0)} rows are stored"
                )
        names = self._complete - {tables_key(self.version)}
        record = CommitRecord.build(n_maps, rows, names, self._growing)
        update = {**(metadata or {}), COMMIT_KEY: record.to_metadata()}
        self.container.update_metadata(metadata=update)
        self.committed = record
        return record

    def write_products(self, products: Products) -> None:
        """Write every array, coordinate and table of ``products`` and merge its metadata.

        The new nodes are committed (with the metadata) once all are written. After a
        failure, the same call may be made again: nodes it completed are then refused
        (pass only the rest), nodes it left half-created are written again.

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
        for key in _CREATION_METADATA:
            if key in self.container.metadata:
                metadata.pop(key, None)
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
            self._write_table(name, {c: np.asarray(v) for c, v in columns.items()})
        self.commit(self.committed.maps, rows=self.committed.rows, metadata=metadata)

    def append_map(
        self,
        arrays: Mapping[str, LabelledArray],
        *,
        coords: Mapping[str, LabelledArray] | None = None,
        at: int | None = None,
        commit: bool = True,
    ) -> int:
        """Write the next map(s) of every live array at ``at`` along ``map``, then commit.

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
        at : int, optional
            Index along ``map`` of the first map given, in ``[0, n_maps]`` (default
            :attr:`n_maps`: append). A smaller ``at`` re-writes maps (a retry).
        commit : bool
            Commit all written maps (and table rows) afterwards (default); False leaves
            that to :meth:`commit` (e.g. until the raw runs are checked).

        Returns
        -------
        int
            The number of maps written after this call.

        Raises
        ------
        ValueError
            Before anything of this call is written, naming the array and the mismatch.
        """
        growing = {**arrays}
        static: dict[str, LabelledArray] = {}
        for name, coord in (coords or {}).items():
            (growing if coord.dims == (MAP_DIM,) else static)[name] = coord
        at = self._n_written if at is None else int(at)
        if not 0 <= at <= self._n_written:
            raise ValueError(f"at must be in [0, {self._n_written}] (maps written); got {at}")
        self._check_live_names(arrays, growing)
        n_new = self._check_growing(growing)
        self._check_static_coords(static)
        for name, coord in static.items():
            if name not in self._static_coords:
                self._write_array(name, coord, COORD)
                self._static_coords[name] = coord
        for name, labelled in growing.items():
            self._grow(name, labelled, self._spec(name) if name in arrays else COORD, at)
        self._n_written = max(self._n_written, at + n_new)
        if commit:
            self.commit()
        return self._n_written

    def append_rows(
        self,
        table_name: str,
        columns: Mapping[str, np.ndarray],
        *,
        at: int | None = None,
        commit: bool = True,
    ) -> int:
        """Append rows to the appendable table ``table_name`` (created on the first call).

        Parameters
        ----------
        table_name : str
            E.g. ``"grains"`` (one row per grain observation), ``"grain_counts"``,
            ``"electrochemistry"``.
        columns : mapping of str to ndarray
            Equal-length 1-D columns; the first call fixes names and dtypes (the schema).
        at : int, optional
            Row index of the first row given (default: after the rows stored). Rows
            already stored from ``at`` on (a failed call that landed) are not sent again.
        commit : bool
            Commit the rows (default; the committed maps stay as they are); False leaves
            them invisible to readers until :meth:`commit`.

        Returns
        -------
        int
            Rows of this call now stored.

        Raises
        ------
        ValueError
            When columns differ in length or are not 1-D, the schema differs from the
            table's, or ``at`` would leave a gap, before anything is sent.
        """
        validate_key("table_name", table_name)
        table = _arrow_table(table_name, columns)
        node = self._table_node(table_name, table.schema)
        at = self._rows.get(table_name, 0) if at is None else int(at)
        stored = self._stored_rows(table_name, node)
        if not 0 <= at <= stored:
            raise ValueError(f"at must be in [0, {stored}] (rows of {table_name!r}); got {at}")
        new = table.slice(min(stored - at, table.num_rows))
        if new.num_rows:
            self._rows_unsure.add(table_name)  # until the server answers
            node.append_partition(0, new)  # one partition; see the module docstring
            self._rows_unsure.discard(table_name)
        self._rows[table_name] = max(stored, at + table.num_rows)
        if commit:
            self.commit(self.committed.maps)
        return table.num_rows

    def _spec(self, name: str) -> Spec:
        return COORD if name in self._coordinate_arrays else DATA_VAR

    def _write_array(self, name: str, labelled: LabelledArray, spec: Spec) -> Any:
        if not self._labelled:
            self._write_version_coord()
        return self._create_array(name, labelled, spec)

    def _create_array(self, name: str, labelled: LabelledArray, spec: Spec) -> Any:
        def create() -> Any:
            return self.container.write_array(
                labelled.values,
                key=name,
                dims=list(labelled.dims),
                metadata=array_metadata(labelled),
                specs=[spec],
            )

        def take_over(node: Any) -> Any:
            node.write(labelled.values)
            return node

        return self._create(self.container, name, create, take_over)

    def _create(self, parent: Any, name: str, create: Any, take_over: Any) -> Any:
        """Create node ``name``; a 409 for a node this writer began (a retry) takes it over.

        A failed attempt may have created the node without its data (or the client's own
        retry of a request that landed meets the node): the node is then written again.
        """
        self._started.add(name)
        try:
            node = create()
        except ClientError as error:
            if error.response.status_code != _HTTP_CONFLICT:
                raise
            node = take_over(parent[name])
        self._complete.add(name)
        return node

    def _write_version_coord(self) -> None:
        # Written with the first array, never alone. Besides labelling the Dataset, a 0-d
        # child keeps tiled 0.2.20's DatasetClient from its "wide table" shortcut, which
        # fetches all 1-D variables as one table whenever every child has the same first
        # length (n_maps == n_z == n_x) and then mixes up the dims map, z and x.
        number = LabelledArray(np.array(int(self.version[1:])), (), "", "product version")
        self._create_array(VERSION_COORD, number, COORD)
        self._labelled = True

    def _write_table(self, name: str, columns: Mapping[str, np.ndarray]) -> None:
        parent = self._tables_container()

        def take_over(node: Any) -> Any:
            node.write(pa.table(dict(columns)).to_pandas())
            return node

        self._create(parent, name, lambda: parent.write_table(dict(columns), key=name), take_over)

    def _table_node(self, table_name: str, schema: pa.Schema) -> Any:
        """The appendable table ``table_name``, created with ``schema`` on first use."""
        if table_name not in self._tables:
            self._check_new_names([table_name])
            parent = self._tables_container()

            def create() -> Any:
                return parent.create_appendable_table(schema, key=table_name)

            node = self._create(parent, table_name, create, lambda node: node)
            self._tables[table_name] = (node, schema)
        node, known = self._tables[table_name]
        if not schema.equals(known):
            raise ValueError(
                f"rows for table {table_name!r} have schema {_describe(schema)}; "
                f"the table has {_describe(known)}"
            )
        return node

    def _stored_rows(self, table_name: str, node: Any) -> int:
        """Rows stored in the table: known, or counted on the server after a failed append."""
        if table_name not in self._rows_unsure:
            return self._rows.get(table_name, 0)
        _, schema = self._tables[table_name]
        counted = len(node.read(columns=[schema.names[0]]))
        self._rows_unsure.discard(table_name)
        self._rows[table_name] = counted
        return counted

    def _tables_container(self) -> Any:
        if self._tables_node is None:
            metadata = {"experiment_id": self.experiment_id, "version": self.version}
            parent = self.container.parent
            key = tables_key(self.version)

            def create() -> Any:
                return parent.create_container(key, metadata=metadata)

            self._tables_node = self._create(parent, key, create, lambda node: node)
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
        half_written = self._started - self._complete  # a failed attempt of this writer
        stored = sorted((set(names) & self._stored_names()) - half_written)
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

    def _check_growing(self, growing: Mapping[str, LabelledArray]) -> int:
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
        return next(iter(counts.values()))

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

    def _grow(self, name: str, labelled: LabelledArray, spec: Spec, at: int) -> None:
        values = labelled.values
        known = self._growing.get(name)
        if known is None:  # only on the first map(s): at == 0
            node = self._write_array(name, labelled, spec)
            self._growing[name] = _Growing(
                node, labelled.dims, values.shape[1:], values.dtype, labelled.units
            )
            return
        offset = (at,) + (0,) * (values.ndim - 1)
        known.node.patch(values, offset=offset, extend=True)


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
