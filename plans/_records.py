"""Plan-side readables: values the plan computes, recorded as ordinary event fields.

A fly line's bookkeeping (which detector frames belong to it, where each frame was) and an
alignment result are known to the plan, not to any device. `PlanRecord` lets the plan put
them in the document stream with ``create`` / ``read`` / ``save``, described with units.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from bluesky.protocols import Reading, WritesStreamAssets
from event_model import DataKey

RecordValue = float | int | np.ndarray


class PlanRecord:
    """A readable holding named values set by the plan.

    Parameters
    ----------
    name
        Prefix of every field (``f"{name}_{key}"``).
    units
        Unit of each key; the keys fixed here are the only ones `update` accepts.
    """

    parent = None

    def __init__(self, name: str, units: Mapping[str, str]) -> None:
        self.name = name
        self._units = dict(units)
        self._values: dict[str, RecordValue] = {}

    def update(self, **values: RecordValue) -> None:
        """Set every field at once (all keys given at construction are required)."""
        if set(values) != set(self._units):
            raise ValueError(f"{self.name}: fields {sorted(values)} != {sorted(self._units)}")
        self._values = dict(values)

    def describe(self) -> dict[str, DataKey]:
        """Data keys with dtype, shape and units of the current values."""
        return {f"{self.name}_{key}": self._datakey(key) for key in self._units}

    def _datakey(self, key: str) -> DataKey:
        value = np.asarray(self._values[key])
        dtype = "array" if value.ndim else ("integer" if value.dtype.kind in "iu" else "number")
        return DataKey(
            source=f"plan:{self.name}",
            dtype=dtype,
            shape=list(value.shape),
            dtype_numpy=value.dtype.str,
            units=self._units[key],
        )

    def read(self) -> dict[str, Reading]:
        """Current values, timestamped now."""
        now = time.time()
        return {
            f"{self.name}_{key}": {"value": _plain(value), "timestamp": now}
            for key, value in self._values.items()
        }


def _plain(value: RecordValue) -> RecordValue:
    return value.tolist() if isinstance(value, np.ndarray) else value


class FrameIndex:
    """Readable view of how many frames a stream-writing detector has written.

    Parameters
    ----------
    detector
        Any `WritesStreamAssets` device (``get_index()`` counts written events).
    """

    parent = None

    def __init__(self, detector: WritesStreamAssets) -> None:
        self._detector = detector
        self.name = f"{detector.name}_frames_written"

    async def read(self) -> dict[str, Reading]:
        """The detector's index now."""
        index = await self._detector.get_index()
        return {self.name: {"value": int(index), "timestamp": time.time()}}

    async def describe(self) -> dict[str, DataKey]:
        """An integer count of frames."""
        return {self.name: DataKey(source="plan:get_index", dtype="integer", shape=[])}
