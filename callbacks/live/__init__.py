"""The parts of the live analysis (`opmap.callbacks.live_analysis.LiveAnalysis`).

- `MapRunDocuments`: one map run's documents → frames, valid lines, time and cell state;
  the live analysis and the replay (`opmap.replay`) both read runs through it.
- `LiveMapRun`: the live reading, frames reduced as they are announced.
- `JoinedMapRun`: a failed map run and the runs resuming it read as one map (live and
  replay); `routed_line_sources`: which run holds each line.
- `RunAccumulator`: what is kept of one run (packed frames, lines, times, potentiostat).
- `emit_map_run` / `map_summary`: the derived document stream of each analysed map.
- `ProductPublisher`: products grown in Tiled map by map, committed once the raw run is
  complete in Tiled (`raw_run_problem`).
- `serialize` / `deserialize`: msgpack documents for bluesky's 0MQ publisher and worker.
"""

from ._derived import DERIVED_STREAM, emit_map_run, map_summary
from ._documents import (
    MapRunDocuments,
    detector_frame_key,
    electrochemistry_row,
    layout_from_start,
)
from ._join import JoinedMapRun, routed_line_sources
from ._map import LiveMapRun, MapOwner
from ._products import ProductPublisher, truth_from_start
from ._raw import raw_run_problem
from ._run import (
    COMMANDED_LINES_NOTE,
    COMMANDED_X_SOURCE,
    MEASURED_X_SOURCE,
    LineRecord,
    RunAccumulator,
)
from ._wire import deserialize, serialize

__all__ = [
    "COMMANDED_LINES_NOTE",
    "COMMANDED_X_SOURCE",
    "DERIVED_STREAM",
    "MEASURED_X_SOURCE",
    "JoinedMapRun",
    "LineRecord",
    "LiveMapRun",
    "MapOwner",
    "MapRunDocuments",
    "ProductPublisher",
    "RunAccumulator",
    "deserialize",
    "detector_frame_key",
    "electrochemistry_row",
    "emit_map_run",
    "layout_from_start",
    "map_summary",
    "raw_run_problem",
    "routed_line_sources",
    "serialize",
    "truth_from_start",
]
