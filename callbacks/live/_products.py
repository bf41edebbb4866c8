"""Publish an experiment's products to Tiled map by map (one `TiledProductWriter` each).

After every analysed map the experiment's products are recomputed; the new map's slice of
every ``("map", ...)`` array is appended (``append_map``), coordinates other than ``map``
are written once, and rows added to each table since the last map are appended
(``append_rows``) for the append-only tables (``live_tables``: the grain observations)
and the electrochemistry buffer (``electrochemistry``, gapless over the runs). Arrays without
a ``map`` dimension and tables that change as maps come (the track table) are written by
:meth:`finish`. The
twin's ground truth, when known, is appended beside the measured maps as ``truth_<name>``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
    """

    def __init__(
        self,
        processed: Any,
        experiment_id: str,
        parameters: Mapping[str, Any],
        *,
        live_tables: tuple[str, ...] = ("grains",),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.live_tables = live_tables
        #: Extra version metadata (e.g. the sampling correction's options, for replays).
        self.metadata = dict(metadata or {})
        self.processed = processed
        self.experiment_id = experiment_id
        self.parameters = dict(parameters)
        self.raw_uids: list[str] = []
        self._writer: Any = None
        self._rows: dict[str, int] = {}
        self._live: frozenset[str] | None = None

    @property
    def writer(self) -> Any:
        """The `TiledProductWriter` (created with the first map)."""
        return self._writer

    def publish_map(
        self,
        products: Products,
        raw_uid: str,
        truth: Mapping[str, LabelledArray],
        electrochemistry: Mapping[str, np.ndarray],
    ) -> None:
        """Append the last map of ``products`` (and its ``truth``), new table rows, and the
        run's potentiostat buffer (columns such as ``time_s``, ``potential_v``)."""
        from opmap.callbacks.tiled_products import TiledProductWriter

        self.raw_uids.append(raw_uid)
        if self._writer is None:
            self._writer = TiledProductWriter(
                self.processed,
                self.experiment_id,
                raw_uids=self.raw_uids,
                parameters=self.parameters,
            )
            if self.metadata:
                self._writer.container.update_metadata(metadata=self.metadata)
        else:
            self._writer.container.update_metadata(metadata={"raw_uids": list(self.raw_uids)})
        arrays = {
            name: LabelledArray(a.values[-1:], a.dims, a.units, a.long_name)
            for name, a in products.arrays.items()
            if a.dims and a.dims[0] == "map"
        }
        arrays.update({f"truth_{name}": value for name, value in truth.items()})
        arrays = self._fixed_names(arrays)
        coords = {
            name: LabelledArray(c.values[-1:], c.dims, c.units, c.long_name)
            if name == "map"
            else c
            for name, c in products.coords.items()
        }
        self._writer.append_map(arrays, coords=coords)
        if electrochemistry and len(next(iter(electrochemistry.values()))):
            self._writer.append_rows("electrochemistry", dict(electrochemistry))
        for table in self.live_tables:
            columns = products.tables.get(table)
            if columns is None:
                continue
            done = self._rows.get(table, 0)
            new = {column: np.asarray(values)[done:] for column, values in columns.items()}
            n_new = products.table_length(table) - done
            if n_new > 0:
                self._writer.append_rows(table, new)
                self._rows[table] = done + n_new

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
        """Write the arrays without a ``map`` dimension (e.g. per-track classes)."""
        if self._writer is None:
            return
        rest = {n: a for n, a in products.arrays.items() if a.dims[:1] != ("map",)}
        tables = {n: t for n, t in products.tables.items() if n not in self.live_tables}
        self._writer.write_products(Products(arrays=rest, tables=tables))
