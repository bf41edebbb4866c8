"""Publish an experiment's products to Tiled map by map (one `TiledProductWriter` each).

After every analysed map the experiment's products are recomputed; the new map's slice of
every ``("map", ...)`` array is appended (``append_map``), coordinates other than ``map``
are written once, and rows added to each table since the last map are appended
(``append_rows``) for the append-only tables (``live_tables``: the grain observations)
and the electrochemistry buffer (``electrochemistry``, gapless over the runs). Arrays without
a ``map`` dimension and tables that change as maps come (the track table) are written by
:meth:`finish`. The
twin's ground truth, when known, is appended beside the measured maps as ``truth_<name>``.

Nothing is lost or half-claimed. Each map is queued, written with every array at its
offset along ``map`` (retried with backoff through transient Tiled errors, idempotently),
and committed only once its raw run is completely in Tiled (`raw_run_problem`) and every
earlier map is committed. A map whose write still fails stays queued and is written with
the next map or at :meth:`ProductPublisher.finish`, which raises if anything is left.

Final products are sealed (`opmap.callbacks.tiled_products.seal_version`): the version when
:meth:`ProductPublisher.finish` has written and claimed everything (with maps left
unclaimed it stays open, for a later ``finish``), and the experiment's earlier versions
when a publisher starts a new one. A version adopted by ``opmap resume`` was not finished,
so it is open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from opmap.analysis.products import LabelledArray, Products

__all__ = ["ProductPublisher", "truth_from_start"]

logger = logging.getLogger(__name__)


def truth_from_start(start: Mapping[str, Any]) -> dict[str, LabelledArray]:
    """Ground truth carried by a rehearsal's start document, as one-map arrays.

    The start document's ``twin_truth`` maps a name to ``{"values", "dims", "units"}``
    (values of one map, without the ``map`` dimension); absent, the result is empty.
    """
    truth = start.get("twin_truth") or {}
    return {
        name: LabelledArray(
            np.asarray(entry["values"])[np.newaxis],
            ("map", *entry["dims"]),
            str(entry.get("units", "")),
            f"twin ground truth: {name}",
        )
        for name, entry in truth.items()
    }


@dataclass
class _QueuedMap:
    """One analysed map: its raw run, truth, potentiostat rows and table rows after it."""

    raw_uid: str
    truth: dict[str, LabelledArray]
    electrochemistry: dict[str, np.ndarray]
    rows_after: dict[str, int]


class ProductPublisher:
    """Grow one experiment's products in Tiled, map by map.

    Parameters
    ----------
    processed : tiled.client.container.Container
        The server's ``processed`` container.
    experiment_id : str
        The experiment (a version container is created under it).
    parameters : mapping
        Analysis parameters stored as provenance.
    live_tables : tuple of str
        Tables whose earlier rows never change, appended map by map.
    metadata : mapping, optional
        Extra version metadata (e.g. the seed).
    raw_check : callable, optional
        ``raw_check(uid)`` -> None when the raw run is completely stored, else what is
        wrong (`raw_run_problem` on the raw catalog); None claims every analysed map.
    retry_total_s : float
        How long transient Tiled errors of one write are retried (s).

    Attributes
    ----------
    unclaimed : dict of str to str
        Raw uid -> why its map is not (yet) committed.
    """

    def __init__(
        self,
        processed: Any,
        experiment_id: str,
        parameters: Mapping[str, Any],
        *,
        live_tables: tuple[str, ...] = ("grains",),
        metadata: Mapping[str, Any] | None = None,
        raw_check: Callable[[str], str | None] | None = None,
        retry_total_s: float = 300.0,
    ) -> None:
        self.live_tables = live_tables
        #: Extra version metadata (e.g. the sampling correction's options, for replays).
        self.metadata = dict(metadata or {})
        self.processed = processed
        self.experiment_id = experiment_id
        self.parameters = dict(parameters)
        self.raw_check = raw_check
        self.retry_total_s = retry_total_s
        self.unclaimed: dict[str, str] = {}
        self._writer: Any = None
        self._queue: list[_QueuedMap] = []
        self._written: list[_QueuedMap] = []
        self._verified: set[str] = set()
        self._live: frozenset[str] | None = None
        self._products: Products | None = None

    @property
    def writer(self) -> Any:
        """The `TiledProductWriter` (created with the first map)."""
        return self._writer

    @property
    def raw_uids(self) -> list[str]:
        """Raw run uids of the maps committed so far, in map order."""
        committed = 0 if self._writer is None else self._writer.committed.maps
        return [entry.raw_uid for entry in self._written[:committed]]

    def adopt(self, version: str) -> list[str]:
        """Go on growing the stored ``version`` (a resumed experiment, ``opmap resume``).

        Its committed maps count as written; their products must be analysed again, in
        order, for what spans maps (tracks, the front), but not published again
        (`LiveAnalysis.resume_products`). Must be called before the first map.

        Returns
        -------
        list of str
            The raw run uids of the committed maps, in map order.
        """
        from opmap.callbacks.tiled_products import TiledProductWriter

        if self._writer is not None or self._queue:
            raise RuntimeError(f"{self.experiment_id}: adopt a version before the first map")
        writer = TiledProductWriter.reopen(self.processed, self.experiment_id, version)
        committed = writer.committed
        uids = [str(uid) for uid in writer.container.metadata.get("raw_uids") or []]
        if len(uids) < committed.maps:
            raise ValueError(
                f"{self.experiment_id}/{version} commits {committed.maps} maps but names "
                f"{len(uids)} raw runs"
            )
        uids = uids[: committed.maps]
        self._written = [_QueuedMap(uid, {}, {}, dict(committed.rows)) for uid in uids]
        self._verified |= set(uids)
        self._live = frozenset(committed.grown) or None
        self._writer = writer
        return uids

    def publish_map(
        self,
        products: Products,
        raw_uid: str,
        truth: Mapping[str, LabelledArray],
        electrochemistry: Mapping[str, np.ndarray],
        *,
        write: bool = True,
    ) -> None:
        """Queue the last map of ``products`` (with its ``truth`` and its run's potentiostat
        buffer, columns such as ``time_s``), then write and commit every queued map.

        With ``write=False`` the map only joins the queue: the next call (or `finish`)
        writes every queued map from its products, one request per array.

        Raises
        ------
        TiledUnavailableError
            When Tiled still fails after ``retry_total_s``; the maps stay queued.
        """
        rows = dict(self._queue[-1].rows_after if self._queue else self._rows_written())
        ec = {k: np.asarray(v) for k, v in electrochemistry.items()}
        n_ec = len(next(iter(ec.values()))) if ec else 0
        if n_ec:
            rows["electrochemistry"] = rows.get("electrochemistry", 0) + n_ec
        for table in self.live_tables:
            if table in products.tables:
                rows[table] = products.table_length(table)
        self._queue.append(_QueuedMap(raw_uid, dict(truth), ec if n_ec else {}, rows))
        self._products = products
        if write:
            self._flush_retried()

    def _rows_written(self) -> dict[str, int]:
        return dict(self._written[-1].rows_after) if self._written else {}

    def _flush_retried(self) -> None:
        from opmap.callbacks.tiled_products import retry_transient

        first = len(self._written)
        maps = f"map(s) {first}-{first + len(self._queue) - 1}" if self._queue else "maps"
        what = f"{self.experiment_id}: products of {maps}"
        retry_transient(self._flush, what=what, total_s=self.retry_total_s)

    def _flush(self) -> None:
        """Write every queued map (idempotent: at its offset), then commit what is claimed."""
        if self._writer is None:
            self._create_writer()
        if self._queue and self._products is not None:
            self._write_queued(self._products)
            # written: only the run and the table rows are needed from now on (a long
            # experiment would otherwise hold every map's truth and potentiostat buffer)
            self._written.extend(_QueuedMap(e.raw_uid, {}, {}, e.rows_after) for e in self._queue)
            self._queue = []
        self._commit_claimed()

    def _create_writer(self) -> None:
        from opmap.callbacks.tiled_products import TiledProductWriter

        self._writer = TiledProductWriter(
            self.processed, self.experiment_id, parameters=self.parameters
        )
        metadata = {**self.metadata, **_experiment_constants(self._products)}
        if metadata:
            self._writer.container.update_metadata(metadata=metadata)
        self._seal_superseded()

    def _seal_superseded(self) -> None:
        """Seal the experiment's earlier versions: this new live version supersedes them
        (their writer is gone, e.g. a restarted analysis worker). A failure is logged and
        leaves them open to the writer key; the analysis goes on."""
        from opmap.callbacks.tiled_products import seal_earlier_versions

        experiment_id = self.experiment_id
        try:
            sealed = seal_earlier_versions(self.processed, experiment_id, self._writer.version)
        except Exception:
            logger.exception("%s: earlier product versions could not be sealed", experiment_id)
            return
        if sealed:
            logger.info("%s: sealed the superseded versions %s", self.experiment_id, sealed)

    def _write_queued(self, products: Products) -> None:
        first, n = len(self._written), len(self._queue)
        arrays = {
            name: LabelledArray(a.values[first : first + n], a.dims, a.units, a.long_name)
            for name, a in products.arrays.items()
            if a.dims and a.dims[0] == "map"
        }
        for name in self._queue[0].truth:
            values = [entry.truth[name].values for entry in self._queue]
            like = self._queue[0].truth[name]
            arrays[f"truth_{name}"] = LabelledArray(
                np.concatenate(values), like.dims, like.units, like.long_name
            )
        arrays = self._fixed_names(arrays)
        coords = {
            name: LabelledArray(c.values[first : first + n], c.dims, c.units, c.long_name)
            if name == "map"
            else c
            for name, c in products.coords.items()
        }
        self._writer.append_map(arrays, coords=coords, at=first, commit=False)
        self._append_tables(products)

    def _append_tables(self, products: Products) -> None:
        before = self._rows_written()
        ec = [entry.electrochemistry for entry in self._queue if entry.electrochemistry]
        if ec:
            columns = {key: np.concatenate([rows[key] for rows in ec]) for key in ec[0]}
            at = before.get("electrochemistry", 0)
            self._writer.append_rows("electrochemistry", columns, at=at, commit=False)
        for table in self.live_tables:
            columns = products.tables.get(table)
            done = before.get(table, 0)
            if columns is None or products.table_length(table) <= done:
                continue
            new = {column: np.asarray(values)[done:] for column, values in columns.items()}
            self._writer.append_rows(table, new, at=done, commit=False)

    def _commit_claimed(self) -> None:
        """Commit the longest run of written maps whose raw runs are complete in Tiled."""
        committed = self._writer.committed.maps
        n = committed
        while n < len(self._written) and self._claimable(self._written[n].raw_uid):
            n += 1
        if n == committed and self._writer.committed.names:
            return
        rows = self._written[n - 1].rows_after if n else {}
        uids = [entry.raw_uid for entry in self._written[:n]]
        self._writer.commit(n, rows=rows, metadata={"raw_uids": uids})

    def _claimable(self, uid: str) -> bool:
        if uid in self._verified or self.raw_check is None:
            return True
        problem = self.raw_check(uid)
        if problem is None:
            self._verified.add(uid)
            self.unclaimed.pop(uid, None)
            return True
        if self.unclaimed.get(uid) != problem:
            logger.warning(
                "%s: raw run %s %s; its map is not claimed yet", self.experiment_id, uid, problem
            )
        self.unclaimed[uid] = problem
        return False

    def _fixed_names(self, arrays: dict[str, LabelledArray]) -> dict[str, LabelledArray]:
        # append_map fixes its set of arrays on the first map; later extras are skipped.
        if self._live is None:
            self._live = frozenset(arrays)
        extra = sorted(set(arrays) - self._live)
        if extra:
            logger.warning(
                "%s: arrays %s appeared after map 0; not grown live", self.experiment_id, extra
            )
        return {name: arrays[name] for name in self._live if name in arrays}

    def finish(self, products: Products) -> None:
        """Write any map still queued, commit what is claimed, and write the arrays without
        a ``map`` dimension (e.g. per-track classes), the other tables and the metadata
        keys of ``products`` not stored yet (the front's phases, coverage, ...).

        Raises
        ------
        TiledUnavailableError
            When Tiled still fails after ``retry_total_s``.
        RuntimeError
            When maps are left unclaimed (their raw runs are incomplete in Tiled), after
            everything else is written; the version stays open (not sealed), so a later
            `finish`, once the raw runs are complete, claims them and seals it.
        """
        from opmap.callbacks.tiled_products import retry_transient

        if self._writer is None and not self._queue:
            return
        self._flush_retried()
        rest = {n: a for n, a in products.arrays.items() if a.dims[:1] != ("map",)}
        tables = {n: t for n, t in products.tables.items() if n not in self.live_tables}

        def write_rest() -> None:
            done = self._writer.written_names
            stored = self._writer.container.metadata
            self._writer.write_products(
                Products(
                    arrays={n: a for n, a in rest.items() if n not in done},
                    tables={n: t for n, t in tables.items() if n not in done},
                    # the final analysis metadata (front, coverage, ...): keys only added
                    metadata={k: v for k, v in products.metadata.items() if k not in stored},
                )
            )

        retry_transient(write_rest, what=f"{self.experiment_id}: final products")
        left = len(self._written) - self._writer.committed.maps
        if left:
            raise RuntimeError(
                f"{self.experiment_id}: {left} analysed map(s) not claimed by the products, "
                f"their raw runs being incomplete in Tiled: {self.unclaimed}"
            )
        # final: only an admin key may change the version from now on
        retry_transient(self._writer.seal, what=f"{self.experiment_id}: sealing the products")


#: Analysis metadata that the parameters fix for a whole experiment, written with the live
#: version when it is created, so live readers (and the truth table) have them from the
#: first map: x_Li's calibration lines and calibrated c range, and the pixel-flag and
#: Ti-flag legends. Metadata that changes from map to map (the front's phase values,
#: coverage) is not written live: the writer key may add metadata but never change a
#: stored key.
EXPERIMENT_CONSTANTS = (
    "x_li_calibration", "x_li_c_range_angstrom", "pixel_flags", "ti_flags"
)  # fmt: skip


def _experiment_constants(products: Products | None) -> dict[str, Any]:
    if products is None:
        return {}
    found = products.metadata
    return {key: found[key] for key in EXPERIMENT_CONSTANTS if key in found}
