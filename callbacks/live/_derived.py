"""The derived document stream of the live analysis (bluesky's ``LiveDispatcher`` pattern).

For every analysed map run, a new run is emitted: its start document points at the raw run
(``original_run_uid``) and carries ``experiment_id`` and ``map_index``; one ``analysis``
event holds the map's summary values (scalars: mean c per family, Li thickness, grain count,
valid and discarded frames, ...); then a stop. Every document is built with event-model's
``compose_*`` functions and so is schema-valid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from event_model import DataKey, compose_run

from opmap.analysis.products import Products

__all__ = ["DERIVED_STREAM", "emit_map_run", "map_summary"]

#: Stream name of the summary events of the derived runs.
DERIVED_STREAM = "analysis"

Emit = Callable[[str, Mapping[str, Any]], Any]


def _finite_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def map_summary(products: Products, *, map_position: int = -1) -> dict[str, tuple[float, str]]:
    """Scalar summary of one map: the finite mean of every ``("map", ...)`` array there.

    Parameters
    ----------
    products : Products
        The experiment's products so far.
    map_position : int
        Which map along ``map`` (default the last).

    Returns
    -------
    dict
        ``{name: (value, units)}``; NaN when the map has no finite value.
    """
    summary: dict[str, tuple[float, str]] = {}
    for name, array in products.arrays.items():
        values = np.asarray(array.values)
        if array.dims[:1] == ("map",) and values.shape[0] and values.dtype.kind in "iuf":
            summary[name] = (_finite_mean(values[map_position]), array.units)
    return summary


def emit_map_run(
    emit: Emit,
    *,
    raw_start: Mapping[str, Any],
    summary: Mapping[str, tuple[float, str]],
    metadata: Mapping[str, Any],
) -> str:
    """Emit start, descriptor, one ``analysis`` event and stop of a derived run.

    Parameters
    ----------
    emit : callable
        ``emit(name, doc)``, e.g. a 0MQ ``Publisher`` or a TiledWriter.
    raw_start : mapping
        Start document of the analysed raw run.
    summary : mapping
        ``{field: (value, units)}`` of the event (see :func:`map_summary`).
    metadata : mapping
        Extra start metadata (analysis parameters, opmap version); JSON-serialisable.

    Returns
    -------
    str
        The uid of the derived run.
    """
    start_md = {
        **metadata,
        "original_run_uid": raw_start["uid"],
        "experiment_id": raw_start.get("experiment_id"),
        "map_index": raw_start.get("map_index"),
        "purpose": "live analysis",
    }
    bundle = compose_run(metadata=start_md)
    emit("start", bundle.start_doc)
    data_keys = {
        key: DataKey(source="opmap.live_analysis", dtype="number", shape=[], units=units)
        for key, (_, units) in summary.items()
    }
    descriptor = bundle.compose_descriptor(name=DERIVED_STREAM, data_keys=data_keys)
    emit("descriptor", descriptor.descriptor_doc)
    now = time.time()
    event = descriptor.compose_event(
        data={key: value for key, (value, _) in summary.items()},
        timestamps=dict.fromkeys(summary, now),
    )
    emit("event", event)
    emit("stop", bundle.compose_stop(exit_status="success"))
    return bundle.start_doc["uid"]
