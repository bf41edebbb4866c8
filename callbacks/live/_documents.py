"""`MapRunDocuments`: the one reading of a map run's documents, live or replayed.

A map run says what it measured in documents: ``stream_resource`` / ``stream_datum`` locate
the detector frames and their mid-exposure times (files, datasets, rows), the ``lines``
stream names the frames that form the map, ``ec_state`` and ``electrochemistry`` give its
time and cell state. The live analysis follows these documents as they are emitted, the
replay reads the same documents back from Tiled (``run.documents()``); both route them
through this class, so the frame-key rule, the datum checks and the event recording exist
once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Self

import numpy as np
from event_model import DocumentRouter, unpack_event_page

from opmap.analysis.pipeline import MapLayout
from opmap.plans import EC_STATE_STREAM, EC_STREAM, FRAMES_STREAM, LINES_STREAM

from ..frames import DatumRows, FrameReader, FrameReadError, per_frame_shape
from ._run import COMMANDED_X_SOURCE, RunAccumulator

__all__ = [
    "MapRunDocuments",
    "detector_frame_key",
    "electrochemistry_row",
    "layout_from_start",
]

logger = logging.getLogger(__name__)

#: Columns of the potentiostat buffer; a device prefix (``potentiostat_``) is dropped.
EC_COLUMNS = ("potential_v", "current_a", "charge_c", "time_s", "step_index")


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


def detector_frame_key(descriptor: Mapping[str, Any]) -> str | None:
    """The data key of the detector frames in a descriptor, or None.

    It is the first key of the frames stream (``primary``) stored outside the events
    (``external``) with an image shape: at least two dimensions once ophyd-async's leading
    1 (one collection per event) is dropped, so ``[1, H, W]`` and an older run's ``[H, W]``
    both are frames, ``[1, n]`` (a spectrum) is not.

    Examples
    --------
    >>> detector_frame_key({"name": "primary", "data_keys": {
    ...     "eiger-x_um": {"external": "STREAM:", "shape": [1]},
    ...     "eiger": {"external": "STREAM:", "shape": [1, 541, 517]},
    ... }})
    'eiger'
    """
    if descriptor.get("name") != FRAMES_STREAM:
        return None
    for key, data_key in descriptor["data_keys"].items():
        if data_key.get("external") and len(per_frame_shape(data_key.get("shape", []))) >= 2:
            return key
    return None


def _field(data: Mapping[str, Any], suffix: str) -> str | None:
    return next((k for k in data if k == suffix or k.endswith(f"_{suffix}")), None)


def electrochemistry_row(data: Mapping[str, Any]) -> dict[str, float]:
    """One ``electrochemistry`` event as a row of `EC_COLUMNS` (device prefix dropped).

    Examples
    --------
    >>> electrochemistry_row({"potentiostat_potential_v": 4.1, "potentiostat_current_a": 2e-6})
    {'potential_v': 4.1, 'current_a': 2e-06}
    """
    row: dict[str, float] = {}
    for name in EC_COLUMNS:
        key = _field(data, name)
        if key is not None:
            row[name] = float(np.asarray(data[key]))
    return row


class MapRunDocuments(DocumentRouter):
    """Route the documents of one map run: frames, completed lines, recorded events.

    Call it with every document of the run (``router(name, doc)``, or :meth:`follow`).

    - A ``stream_datum`` of the detector frames in ``primary`` (`detector_frame_key` of its
      descriptor) is located and checked by the `FrameReader` and handed to :meth:`frames`,
      the one hook subclasses override: the live analysis reads and reduces the rows at
      once, the replay remembers where they lie.
    - A ``stream_datum`` of the frames' mid-exposure times (``<frame_key>-time_s``) is read
      into ``accumulator`` (unreadable times are logged: the map time then comes from
      ``ec_state`` alone).
    - Events of ``lines``, ``ec_state`` and ``electrochemistry`` are recorded in
      ``accumulator`` (`RunAccumulator`): the valid lines (the latest attempt of each), the
      potentiostat readbacks that time the map, the potentiostat buffer.

    Parameters
    ----------
    start : mapping
        The run's start document (with ``map_geometry``).
    reader : FrameReader
        Follows the run's resources; reads times (and, for the live analysis, frames).

    Attributes
    ----------
    start_doc : dict
        The start document.
    layout : MapLayout
        Where the frames sit on the (z, x) grid: from the start document's commanded grid
        until the ``stop``, then with the stage's measured x when the run recorded it
        (`RunAccumulator.measured_x_um`).
    x_source : str
        Where ``layout.x_um`` comes from (`MEASURED_X_SOURCE`, with `COMMANDED_LINES_NOTE`
        when some lines had no trusted readback, or `COMMANDED_X_SOURCE`).
    accumulator : RunAccumulator
        Lines, times and cell state recorded so far.
    frame_key : str or None
        Data key of the detector frames, once the ``primary`` descriptor is seen.
    stop_doc : dict or None
        The stop document, once seen.
    """

    def __init__(self, start: Mapping[str, Any], reader: FrameReader) -> None:
        super().__init__()
        self.start_doc = dict(start)
        self.layout = layout_from_start(start)
        self.x_source = COMMANDED_X_SOURCE
        self.accumulator = RunAccumulator(self.layout.n_z, self.layout.n_x)
        self.reader = reader
        self.frame_key: str | None = None
        self.stop_doc: dict[str, Any] | None = None
        self._streams: dict[str, str] = {}

    @property
    def uid(self) -> str:
        """Start uid of the raw run."""
        return str(self.start_doc["uid"])

    def follow(self, documents: Iterable[tuple[str, Any]]) -> Self:
        """Route every ``(name, doc)`` of ``documents`` (e.g. a stored run's); return self."""
        for name, doc in documents:
            self(name, doc)
        return self

    def frames(self, rows: DatumRows) -> None:
        """Handle one batch of detector frames (located and checked, not read).

        The base class does nothing; subclasses read or remember the rows.
        """

    def descriptor(self, doc: Any) -> None:
        self._streams[doc["uid"]] = doc["name"]
        self.reader("descriptor", doc)
        self.frame_key = self.frame_key or detector_frame_key(doc)

    def stream_resource(self, doc: Any) -> None:
        self.reader("stream_resource", doc)

    def stream_datum(self, doc: Any) -> None:
        rows = self.reader.locate(doc)
        if rows is None or self.frame_key is None or rows.stream not in ("", FRAMES_STREAM):
            return
        if rows.data_key == self.frame_key:
            self.frames(rows)
        elif rows.data_key == f"{self.frame_key}-time_s":
            self._frame_times(rows)

    def event_page(self, doc: Any) -> None:
        stream = self._streams.get(doc["descriptor"], "")
        for event in unpack_event_page(doc):
            self._record(stream, event["data"])

    def stop(self, doc: Any) -> None:
        self.stop_doc = dict(doc)
        measured = self.accumulator.measured_x_um()
        if measured is not None:
            x_um, self.x_source = measured
            self.layout = dataclasses.replace(self.layout, x_um=x_um)

    def _record(self, stream: str, data: Mapping[str, Any]) -> None:
        acc = self.accumulator
        if stream == LINES_STREAM:
            acc.add_line(data)
        elif stream == EC_STATE_STREAM and (key := _field(data, "time_s")):
            acc.ec_state_time_s.append(float(data[key]))
        elif stream == EC_STREAM:
            acc.ec_rows.append(electrochemistry_row(data))

    def _frame_times(self, rows: DatumRows) -> None:
        try:
            batch = self.reader.read(rows)
        except FrameReadError as error:
            logger.warning(
                "run %s: frame times not read, map time from ec_state: %s", self.uid, error
            )
            return
        self.accumulator.add_times(batch.frame_indices, batch.values)
