"""What the live analysis keeps of one map run: reduced frames, valid lines, time, cell state.

Frames are reduced as soon as a ``stream_datum`` announces them and kept only as their packed
reduction (a few kB per frame). Which frames make the map is known only from the ``lines``
stream: one event per completed line names its frames (``line_first_frame``,
``line_n_frames``, 0-based frame indices of the ``primary`` stream), their commanded x
centres (``line_x_um``) and, in runs that recorded it, where the stage measured each frame
(``line_x_measured_um``: the x readback at mid-exposure). A line
re-taken after a pause has a later event with the same ``line_index``; the last one wins, so
frames of an aborted attempt never enter the map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opmap.analysis.pipeline import MapLayout

__all__ = [
    "COMMANDED_LINES_NOTE",
    "COMMANDED_X_SOURCE",
    "MEASURED_X_SOURCE",
    "LineRecord",
    "RunAccumulator",
]

#: ``x_source`` of a map whose x coordinate is the stage's measured position.
MEASURED_X_SOURCE = "stage x readback at each frame's mid-exposure, mean of the map's lines"
#: ``x_source`` of a map whose x coordinate is the commanded grid (no usable readback).
COMMANDED_X_SOURCE = "commanded grid (the run has no usable stage x readback)"
#: Appended to `MEASURED_X_SOURCE` when some lines had no trusted readback (`format` it
#: with their indices): those lines count with their commanded grid.
COMMANDED_LINES_NOTE = "; commanded grid for lines {lines} (no trusted stage x readback)"


@dataclass(frozen=True)
class LineRecord:
    """One completed line: frames ``[first_frame, first_frame + n_frames)``, at height z.

    ``x_um`` are the commanded frame centres, ``x_measured_um`` the stage's measured x of
    each frame (None for a run that did not record it, NaN where the plan could not trust
    the readback), both in acquisition order.
    """

    index: int
    first_frame: int
    n_frames: int
    z_um: float
    x_um: tuple[float, ...]
    x_measured_um: tuple[float, ...] | None = None

    @property
    def measured_trusted(self) -> bool:
        """The measured x is usable: one finite value per frame, in the order of flight
        (strictly monotonic as the commanded centres are)."""
        if self.x_measured_um is None or len(self.x_measured_um) != len(self.x_um):
            return False
        measured = np.asarray(self.x_measured_um, dtype=float)
        if not np.all(np.isfinite(measured)):
            return False
        flight = np.sign(np.diff(np.asarray(self.x_um, dtype=float)))
        return bool(np.all(np.diff(measured) * flight > 0))


@dataclass
class RunAccumulator:
    """Per-run store of packed reduced frames and the bookkeeping that selects valid ones.

    Parameters
    ----------
    n_z, n_x
        Lines and frames per line of the map (from the start document's ``map_geometry``).
    """

    n_z: int
    n_x: int
    packed: dict[int, np.ndarray] = field(default_factory=dict)
    frame_time_s: dict[int, float] = field(default_factory=dict)
    lines: dict[int, LineRecord] = field(default_factory=dict)
    ec_rows: list[dict[str, float]] = field(default_factory=list)
    ec_state_time_s: list[float] = field(default_factory=list)

    def add_packed(self, frame_indices: np.ndarray, packed: np.ndarray) -> None:
        """Store reduced rows (n, n_outputs) of 0-based stream frames ``frame_indices``."""
        for index, row in zip(frame_indices, packed, strict=True):
            self.packed[int(index)] = row

    def add_times(self, frame_indices: np.ndarray, time_s: np.ndarray) -> None:
        """Store the experiment time (s) at mid-exposure of each frame."""
        for index, value in zip(frame_indices, time_s, strict=True):
            self.frame_time_s[int(index)] = float(value)

    def add_line(self, data: Mapping[str, Any]) -> LineRecord:
        """Record a ``lines`` event (its ``data``); a re-taken line replaces the earlier one."""
        record = LineRecord(
            index=int(data["line_index"]),
            first_frame=int(data["line_first_frame"]),
            n_frames=int(data["line_n_frames"]),
            z_um=float(data["line_z_um"]),
            x_um=tuple(float(x) for x in np.ravel(data["line_x_um"])),
            x_measured_um=(
                tuple(float(x) for x in np.ravel(data["line_x_measured_um"]))
                if "line_x_measured_um" in data
                else None
            ),
        )
        if not 0 <= record.index < self.n_z:
            raise ValueError(f"line_index={record.index} outside the map's [0, {self.n_z - 1}]")
        if record.n_frames != self.n_x:
            raise ValueError(
                f"line {record.index}: {record.n_frames} frames != x_count {self.n_x}"
            )
        self.lines[record.index] = record
        return record

    def measured_x_um(self) -> tuple[np.ndarray, str] | None:
        """Column x (µm, increasing, ``(n_x,)``) from the measured x, and its ``x_source``.

        Each column's x is the mean over the lines of each line's measured x; a line without
        a trusted one (`LineRecord.measured_trusted`) counts with its commanded x, and the
        source names it (`COMMANDED_LINES_NOTE`). None when no line has a trusted measured
        x, or the columns would not increase (the analysis then keeps the commanded grid).
        """
        columns, commanded = [], []
        for index, line in sorted(self.lines.items()):
            order = np.argsort(line.x_um)  # acquisition order -> increasing commanded x
            if line.measured_trusted:
                columns.append(np.asarray(line.x_measured_um, dtype=float)[order])
            else:
                columns.append(np.asarray(line.x_um, dtype=float)[order])
                commanded.append(index)
        if len(commanded) == len(columns):
            return None
        x_um = np.mean(columns, axis=0)
        if x_um.shape != (self.n_x,) or not np.all(np.diff(x_um) > 0):
            return None
        note = COMMANDED_LINES_NOTE.format(lines=commanded) if commanded else ""
        return x_um, MEASURED_X_SOURCE + note

    @property
    def complete(self) -> bool:
        """Every line recorded and every one of its frames reduced."""
        return len(self.lines) == self.n_z and not self.missing_frames()

    def valid_frames(self) -> list[int]:
        """Frame indices of the map in line order, acquisition order within a line."""
        return [
            line.first_frame + i
            for _, line in sorted(self.lines.items())
            for i in range(line.n_frames)
        ]

    def missing_frames(self) -> list[int]:
        """Valid frames that have not been reduced (not announced or not readable)."""
        return [i for i in self.valid_frames() if i not in self.packed]

    def invalid_frames(self) -> list[int]:
        """Reduced frames that belong to no recorded line (aborted attempts)."""
        valid = set(self.valid_frames())
        return sorted(i for i in self.packed if i not in valid)

    def valid_packed(self) -> np.ndarray:
        """Packed reductions of the valid frames, float32 (n_lines * n_x, n_outputs)."""
        missing = self.missing_frames()
        if missing:
            raise ValueError(f"{len(missing)} valid frame(s) were never reduced: {missing[:10]}")
        return np.stack([self.packed[i] for i in self.valid_frames()])

    def map_time_s(self) -> float:
        """Experiment time of the map (s): mean of the potentiostat readbacks at its start and
        end when recorded, else the mean mid-exposure time of its valid frames, else NaN."""
        times = [t for t in self.ec_state_time_s if math.isfinite(t)]
        if times:
            return float(np.mean(times))
        frame_times = [self.frame_time_s[i] for i in self.valid_frames() if i in self.frame_time_s]
        return float(np.mean(frame_times)) if frame_times else math.nan

    def row_time_s(self, layout: MapLayout) -> np.ndarray | None:
        """Scan time of each line (s, (n_z,)) from the valid frames' mid-exposure times
        (`MapLayout.row_time_s`); None when no frame has a time (a real Eiger records none)."""
        times = np.array([self.frame_time_s.get(i, np.nan) for i in self.valid_frames()])
        if times.size != layout.n_frames or not np.isfinite(times).any():
            return None
        return layout.row_time_s(times)

    def cell_state(self) -> dict[str, float]:
        """Cell state during the map: mean potential (V) and current (A), charge (C) at its end.

        Only finite values of columns the buffer holds; empty without an ``electrochemistry``
        stream.
        """
        columns = self.electrochemistry()
        state: dict[str, float] = {}
        for key in ("potential_v", "current_a"):
            if key in columns and len(columns[key]):
                state[key] = float(np.mean(columns[key]))
        if "charge_c" in columns and len(columns["charge_c"]):
            state["charge_c"] = float(columns["charge_c"][-1])
        return {k: v for k, v in state.items() if math.isfinite(v)}

    def electrochemistry(self) -> dict[str, np.ndarray]:
        """The run's potentiostat buffer as columns (device prefix removed), e.g. ``time_s``."""
        if not self.ec_rows:
            return {}
        keys = list(self.ec_rows[0])
        return {key: np.asarray([row.get(key, math.nan) for row in self.ec_rows]) for key in keys}
