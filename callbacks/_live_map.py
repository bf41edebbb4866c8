"""`LiveMapRun`: the event-model ``DocumentRouter`` that follows one map run.

It reads each batch of frames a ``stream_datum`` announces (`FrameReader`), reduces it at
once with the compiled reduction, records the ``lines``, ``ec_state`` and
``electrochemistry`` streams, and at ``stop`` hands the completed map to its owner
(`LiveAnalysis`), which runs the map-level analysis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from event_model import DocumentRouter, unpack_event_page

from opmap.analysis.pipeline import MapLayout
from opmap.analysis.reduction import CompiledReduction

from ._live_run import RunAccumulator
from .frames import FrameReader

__all__ = ["LINES_STREAM", "LiveMapRun", "layout_from_start"]

logger = logging.getLogger(__name__)

LINES_STREAM = "lines"
EC_STREAM = "electrochemistry"
EC_STATE_STREAM = "ec_state"


class MapOwner(Protocol):
    """What a `LiveMapRun` needs from the analysis that created it."""

    def reduction_for(self, start: Mapping[str, Any]) -> CompiledReduction: ...

    def frame_reader(self, start: Mapping[str, Any]) -> FrameReader: ...

    def map_completed(self, run: LiveMapRun) -> None: ...


def layout_from_start(start: Mapping[str, Any]) -> MapLayout:
    """The `MapLayout` of a map run from its start document's ``map_geometry``.

    Raises
    ------
    ValueError
        The start document has no ``map_geometry`` (not a map run).
    """
    from opmap.plans import MapGeometry

    if "map_geometry" not in start:
        raise ValueError(f"run {start.get('uid')} has no map_geometry: not a map run")
    geometry = MapGeometry(**start["map_geometry"])
    return MapLayout(
        n_z=geometry.z_count,
        n_x=geometry.x_count,
        snake=geometry.snake,
        z_um=geometry.z_positions_um(),
        x_um=geometry.x_centres_um(),
    )


def _field(data: Mapping[str, Any], suffix: str) -> str | None:
    return next((k for k in data if k == suffix or k.endswith(f"_{suffix}")), None)


class LiveMapRun(DocumentRouter):
    """Follow the documents of one map run and accumulate its reduced frames.

    Parameters
    ----------
    start : mapping
        The run's start document (with ``map_geometry``).
    owner : MapOwner
        Provides the compiled reduction and the frame reader; told when the map is done.
    """

    def __init__(self, start: Mapping[str, Any], owner: MapOwner) -> None:
        super().__init__()
        self.start_doc = dict(start)
        self.owner = owner
        self.layout = layout_from_start(start)
        self.acc = RunAccumulator(self.layout.n_z, self.layout.n_x)
        self.reader = owner.frame_reader(start)
        self.reduction = owner.reduction_for(start)
        self.stop_doc: dict[str, Any] | None = None
        self.frame_key: str | None = None
        self._streams: dict[str, str] = {}

    @property
    def uid(self) -> str:
        """Start uid of the raw run."""
        return str(self.start_doc["uid"])

    def descriptor(self, doc: Any) -> None:
        self._streams[doc["uid"]] = doc["name"]
        self.reader("descriptor", doc)
        for key, data_key in doc["data_keys"].items():
            if data_key.get("external") and len(data_key.get("shape", [])) == 2:
                self.frame_key = self.frame_key or key

    def stream_resource(self, doc: Any) -> None:
        self.reader("stream_resource", doc)

    def stream_datum(self, doc: Any) -> None:
        batch = self.reader("stream_datum", doc)
        if batch is None or batch.stream not in ("", "primary"):
            return
        if batch.data_key == self.frame_key:
            packed = self.reduction.reduce_packed(batch.values)
            self.acc.add_packed(batch.frame_indices, packed)
        elif self.frame_key and batch.data_key == f"{self.frame_key}-time_s":
            self.acc.add_times(batch.frame_indices, batch.values)

    def event_page(self, doc: Any) -> None:
        stream = self._streams.get(doc["descriptor"], "")
        for event in unpack_event_page(doc):
            data = event["data"]
            if stream == LINES_STREAM:
                self.acc.add_line(data)
            elif stream == EC_STATE_STREAM and (key := _field(data, "time_s")):
                self.acc.ec_state_time_s.append(float(data[key]))
            elif stream == EC_STREAM:
                self.acc.ec_rows.append(_ec_row(data))

    def stop(self, doc: Any) -> None:
        self.stop_doc = dict(doc)
        self.owner.map_completed(self)


def _ec_row(data: Mapping[str, Any]) -> dict[str, float]:
    # "potentiostat_potential_v" -> "potential_v": known names keep their unit suffix.
    row: dict[str, float] = {}
    for key, value in data.items():
        for name in ("potential_v", "current_a", "charge_c", "time_s", "step_index"):
            if key == name or key.endswith(f"_{name}"):
                row[name] = float(np.asarray(value))
    return row
