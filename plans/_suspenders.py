"""Suspenders on the beam: current below a floor, shutter closed.

Install them once, in the profile (``RE.install_suspender``). A trip mid-line suspends the
RunEngine; the potentiostat keeps cycling (it is never stopped by a suspension); on resume
the RunEngine rewinds to the line's checkpoint and the line is re-taken whole.

bluesky suspenders subscribe with ophyd's ``subscribe(cb, event_type=, run=)`` and expect
the bare value; `_ValueSubscription` adapts an ophyd-async signal to that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bluesky.run_engine import call_in_bluesky_event_loop, in_bluesky_event_loop
from bluesky.suspenders import SuspendBoolLow, SuspenderBase, SuspendFloor
from ophyd_async.core import SignalR

from opmap.devices.beam import ShutterState


class _ValueSubscription:
    """An ophyd-async signal seen through ophyd's value-callback subscription API."""

    def __init__(self, signal: SignalR, transform: Callable[[Any], Any] = lambda v: v) -> None:
        self._signal = signal
        self._transform = transform
        self.name = signal.name
        self._wrappers: dict[Callable[..., Any], Callable[[dict], None]] = {}
        self._last_value: Any = None

    def get(self) -> Any:
        """The last value seen (suspenders quote it in their justification)."""
        return self._last_value

    def subscribe(self, callback: Callable[..., Any], event_type: Any = None, run: bool = True):
        def on_reading(reading: dict) -> None:
            self._last_value = self._transform(reading[self._signal.name]["value"])
            callback(value=self._last_value)

        self._wrappers[callback] = on_reading
        _in_loop(lambda: self._signal.subscribe_reading(on_reading))

    def clear_sub(self, callback: Callable[..., Any]) -> None:
        wrapper = self._wrappers.pop(callback, None)
        if wrapper is not None:
            _in_loop(lambda: self._signal.clear_sub(wrapper))


def _in_loop(action: Callable[[], None]) -> None:
    """Run ``action`` in the bluesky event loop (ophyd-async subscribes only there)."""
    if in_bluesky_event_loop():
        action()
        return

    async def run() -> None:
        action()

    call_in_bluesky_event_loop(run())


def beam_current_suspender(
    beam_current_ma: SignalR[float],
    *,
    min_current_ma: float,
    resume_current_ma: float | None = None,
    sleep_s: float = 0.0,
) -> SuspenderBase:
    """Suspend when the ring current falls below ``min_current_ma`` (mA).

    Parameters
    ----------
    beam_current_ma
        Ring (or beam monitor) current signal, mA.
    min_current_ma
        Suspend below this (mA), > 0.
    resume_current_ma
        Resume at or above this (mA); default ``min_current_ma``; must be >= it.
    sleep_s
        Wait this long (s) after the current recovers before resuming (beam settling).
    """
    resume = min_current_ma if resume_current_ma is None else resume_current_ma
    if not (math.isfinite(min_current_ma) and min_current_ma > 0):
        raise ValueError(f"min_current_ma={min_current_ma} must be a finite current > 0 mA")
    if not (math.isfinite(resume) and resume >= min_current_ma):
        raise ValueError(
            f"resume_current_ma={resume_current_ma} must be >= min_current_ma={min_current_ma}"
        )
    if not (math.isfinite(sleep_s) and sleep_s >= 0):
        raise ValueError(f"sleep_s={sleep_s} must be a finite time >= 0 s")
    return SuspendFloor(
        _ValueSubscription(beam_current_ma),
        min_current_ma,
        resume_thresh=resume,
        sleep=sleep_s,
        tripped_message=f"beam current below {min_current_ma} mA",
    )


def _shutter_is_open(value: Any) -> bool:
    """True for an open shutter: a bool signal, or the `ShutterState` of a beam monitor."""
    if isinstance(value, bool):
        return value
    return ShutterState(value) == ShutterState.OPEN


def shutter_suspender(
    shutter: SignalR[ShutterState] | SignalR[bool], *, sleep_s: float = 0.0
) -> SuspenderBase:
    """Suspend while the shutter is closed; resume ``sleep_s`` (s) after it opens.

    ``shutter`` is the beam monitor's `ShutterState` signal or any bool "is open" signal.
    """
    if not (math.isfinite(sleep_s) and sleep_s >= 0):
        raise ValueError(f"sleep_s={sleep_s} must be a finite time >= 0 s")
    return SuspendBoolLow(
        _ValueSubscription(shutter, _shutter_is_open),
        sleep=sleep_s,
        tripped_message="shutter closed",
    )
