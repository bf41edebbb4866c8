"""`LiveMapRun`: the live analysis's reading of one map run, frames reduced as announced.

It routes the run's documents with `MapRunDocuments`, reduces each batch of frames a
``stream_datum`` announces at once with the compiled reduction (keeping only the packed
result), and at ``stop`` hands the run to its owner (`LiveAnalysis`), which analyses the
completed map.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol

from opmap.analysis.reduction import CompiledReduction

from ..frames import DatumRows, FrameReader
from ..stream_frames import StreamFrameSource, reduce_datum_rows
from ._documents import MapRunDocuments

__all__ = ["LiveMapRun", "MapOwner"]


class MapOwner(Protocol):
    """What a `LiveMapRun` needs from the analysis that created it."""

    def reduction_for(self, start: Mapping[str, Any]) -> CompiledReduction: ...

    def frame_reader(self, start: Mapping[str, Any]) -> FrameReader: ...

    @property
    def frame_stream(self) -> StreamFrameSource | None: ...

    def map_completed(self, run: LiveMapRun) -> None: ...


class LiveMapRun(MapRunDocuments):
    """Follow the documents of one map run and reduce its frames as they are announced.

    Parameters
    ----------
    start : mapping
        The run's start document (with ``map_geometry``).
    owner : MapOwner
        Provides the compiled reduction and the frame reader; told when the map is done.
    """

    def __init__(self, start: Mapping[str, Any], owner: MapOwner) -> None:
        super().__init__(start, owner.frame_reader(start))
        self.owner = owner
        self.reduction = owner.reduction_for(start)
        self.stream = owner.frame_stream
        if self.stream is not None:  # stream images are reduced as they arrive
            self.stream.reduce_with(functools.partial(self.reduction.reduce_packed, threads=1))

    def frames(self, rows: DatumRows) -> None:
        """Keep the packed reduction of the announced frames: from the detector's stream
        when it delivered them (and the resource names its series), else from the files."""
        if self.stream is not None and rows.series_id is not None:
            indices, packed = reduce_datum_rows(
                rows, self.reader, self.stream, self.reduction.reduce_packed
            )
            self.accumulator.add_packed(indices, packed)
            return
        batch = self.reader.read(rows)
        packed = self.reduction.reduce_packed(batch.values)
        self.accumulator.add_packed(batch.frame_indices, packed)

    def stop(self, doc: Any) -> None:
        super().stop(doc)
        self.owner.map_completed(self)
