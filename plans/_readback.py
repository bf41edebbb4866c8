"""The fly axis's measured x during a line: readback samples, interpolated to the frames.

A fly line's frames are taken while the stage moves; where each frame was is what the stage
*measured*, not what the plan commanded (a lagging servo, a slow ramp or a late detector
start all move the frames off the commanded grid). `ReadbackRecorder` subscribes to the
fly axis's readback signal for the duration of the line (kicked off before the axis,
completed after the detector) and keeps every update as ``(time, x)`` samples; the plan
notes the time the detector starts, and `frame_positions_um` interpolates the samples at
each frame's mid-exposure time, ``t_start + k * frame_period + live_time / 2``.

Time base: the samples and the detector start are timed by the same clock, the axis's own
(`TimedAxis.now_s`: a simulated axis's experiment time), else the wall clock. An EPICS
motor's samples carry the timestamp of its readback (``.RBV``: when the motor record
processed it, on the IOC's clock, synchronised with this host's by NTP/PTP at a beamline),
not the time the Channel Access monitor update reached this process: on a loaded machine
that arrives tens of ms late, and a late-stamped sample put the frames up to 20 µm behind
where the detector took them (the network rehearsal, 660 µm/s).

The detector's start is when its kickoff returned, or, for a detector that bounds its start
(`TimedStart`: a SIMPLON Eiger, whose DCU starts the series when the ``trigger`` request
arrives, once 0.14 s after the kickoff returned on a loaded machine), the earliest bound,
trusted when the bounds are within `START_UNCERTAINTY_FRACTION` of an exposure.

A frame's measured x is trusted only where the samples cover its exposure: a line whose
exposures start before the first sample or end after the last gets NaN for every frame, and
the analysis places that line on the commanded grid (`opmap.callbacks.live`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ophyd_async.core import AsyncStatus

__all__ = [
    "START_UNCERTAINTY_FRACTION",
    "ReadbackRecorder",
    "TimedAxis",
    "TimedStart",
    "axis_clock",
    "detector_start_s",
    "frame_positions_um",
]

#: Widest bound on a detector's start (`TimedStart`) trusted, as a fraction of the frame
#: exposure: a quarter exposure is a quarter frame of travel on the fly axis.
START_UNCERTAINTY_FRACTION = 0.25


@runtime_checkable
class TimedAxis(Protocol):
    """An axis that tells the time base of its readback updates (a simulated axis)."""

    def now_s(self) -> float:
        """Time now on the axis's clock (s)."""


@runtime_checkable
class TimedStart(Protocol):
    """A detector that bounds when its last series started (wall clock, `time.time`)."""

    def series_start_window_s(self) -> tuple[float, float]:
        """Earliest and latest time (s) the last series' first exposure can have started."""


def detector_start_s(
    detector: Any, kickoff_returned_s: float, exposure_s: float, *, wall_clock: bool
) -> float:
    """When a line's first exposure started, on the readback's clock (s); NaN if unknown.

    A `TimedStart` detector read on the wall clock gives the earliest bound of its start,
    trusted only when its bounds are at most `START_UNCERTAINTY_FRACTION` of
    ``exposure_s`` apart (NaN otherwise: the line's frames then have no measured x).
    Any other detector (an in-process simulated one, on the axis's clock) starts when its
    kickoff returned, ``kickoff_returned_s``.
    """
    if not (wall_clock and isinstance(detector, TimedStart)):
        return kickoff_returned_s
    earliest_s, latest_s = detector.series_start_window_s()
    if latest_s - earliest_s <= START_UNCERTAINTY_FRACTION * exposure_s:
        return float(earliest_s)
    return math.nan


def axis_clock(axis: Any) -> Callable[[], float]:
    """The clock that times ``axis``'s readback updates: its own, else the wall clock."""
    return axis.now_s if isinstance(axis, TimedAxis) else time.time


def frame_positions_um(
    samples: np.ndarray, start_s: float, n_frames: int, period_s: float, live_time_s: float
) -> np.ndarray:
    """x (µm) of each frame at mid-exposure, interpolated from readback ``samples``.

    Parameters
    ----------
    samples
        ``(n, 2)`` readback samples ``(time_s, x_um)`` in time order.
    start_s
        Start of the first exposure, on the samples' clock (s).
    n_frames
        Frames of the line.
    period_s, live_time_s
        Frame period and exposure (s); frame ``k`` is centred on
        ``start_s + k * period_s + live_time_s / 2``.

    Returns
    -------
    numpy.ndarray
        ``(n_frames,)`` float64; NaN everywhere when no sample was recorded, or when the
        exposures (``[start, start + live_time]`` of each frame) are not all inside the
        sampled interval (the axis did not report over the whole line).

    Examples
    --------
    >>> s = np.array([[0.0, 0.0], [1.0, 100.0], [2.0, 200.0]])
    >>> frame_positions_um(s, 0.25, 3, 0.5, 0.5).tolist()
    [50.0, 100.0, 150.0]
    """
    start_k_s = start_s + period_s * np.arange(n_frames)
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    if (
        len(samples) == 0
        or not np.all(np.isfinite(start_k_s))
        or start_k_s[0] < samples[0, 0]
        or start_k_s[-1] + live_time_s > samples[-1, 0]
    ):
        return np.full(n_frames, np.nan)
    return np.interp(start_k_s + 0.5 * live_time_s, samples[:, 0], samples[:, 1])


class ReadbackRecorder:
    """Flyable that records the readback of a fly axis between its kickoff and complete.

    Parameters
    ----------
    axis
        The fly axis; its ``user_readback`` signal is recorded (an ophyd-async ``Motor``, a
        simulated ``SimAxis``). An axis without one records nothing: frames then have no
        measured x (NaN) and the analysis uses the commanded grid.
    """

    parent = None

    def __init__(self, axis: Any) -> None:
        self.name = f"{getattr(axis, 'name', 'axis')}_readback"
        self.clock = axis_clock(axis)
        #: Samples are timed by the readings' own timestamps (not the axis's clock).
        self.stamped = not isinstance(axis, TimedAxis)
        self._signal = getattr(axis, "user_readback", None)
        self._samples: list[tuple[float, float]] = []

    @property
    def samples(self) -> np.ndarray:
        """``(n, 2)`` samples ``(time_s, x_um)`` of the last recording, in time order."""
        return np.asarray(self._samples, dtype=np.float64).reshape(-1, 2)

    def _on_reading(self, reading: dict[str, Any]) -> None:
        ((value, stamp_s),) = ((r["value"], r["timestamp"]) for r in reading.values())
        time_s = float(stamp_s) if self.stamped else self.clock()
        if math.isfinite(float(value)) and math.isfinite(time_s):
            self._samples.append((time_s, float(value)))

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Start recording (the current readback is the first sample)."""
        self._samples = []
        if self._signal is not None:
            self._signal.subscribe_reading(self._on_reading)

    @AsyncStatus.wrap
    async def complete(self) -> None:
        """Stop recording; the last readback, now, is the last sample."""
        if self._signal is not None:
            self._signal.clear_sub(self._on_reading)
            # the axis has stopped there (its fly move is complete) and is there now
            latest_s = self._samples[-1][0] if self._samples else -math.inf
            value = float(await self._signal.get_value())
            self._samples.append((max(self.clock(), latest_s), value))
