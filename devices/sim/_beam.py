"""Simulated beam monitor and shutter: a steady ring current that a test can trip."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    LazyMock,
    StandardReadable,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format

from opmap.devices.beam import ShutterState

from ._clock import SimClock

__all__ = ["BeamTrip", "SimBeamMonitor"]


@dataclass(frozen=True)
class BeamTrip:
    """Beam lost from ``start_s`` for ``duration_s`` seconds of experiment time."""

    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"start_s={self.start_s} must be a finite time >= 0 s")
        if not self.duration_s > 0:
            raise ValueError(f"duration_s={self.duration_s} must be > 0 s")

    def active(self, time_s: float) -> bool:
        """True while the beam is down."""
        return self.start_s <= time_s < self.start_s + self.duration_s


class SimBeamMonitor(StandardReadable):
    """`BeamMonitor` on the simulation clock.

    ``beam_current_ma`` is refreshed every ``poll_period_s`` of wall time once connected
    (so suspenders see trips) and on every read.

    Parameters
    ----------
    clock
        Shared simulation clock.
    current_ma
        Ring current with beam (mA, > 0).
    poll_period_s
        Wall-clock refresh period (s).
    """

    def __init__(
        self,
        clock: SimClock,
        *,
        current_ma: float = 200.0,
        poll_period_s: float = 0.02,
        name: str = "",
    ) -> None:
        if not current_ma > 0:
            raise ValueError(f"current_ma={current_ma} must be > 0 mA")
        self.clock = clock
        self.current_ma = current_ma
        self.poll_period_s = poll_period_s
        self.trips: list[BeamTrip] = []
        self._poller: asyncio.Task | None = None
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.beam_current_ma, self._set_current = soft_signal_r_and_setter(
                float, current_ma, units="mA"
            )
        with self.add_children_as_readables():
            self.shutter = soft_signal_rw(ShutterState, ShutterState.CLOSED)
        super().__init__(name=name)

    def trip(self, start_s: float, duration_s: float) -> BeamTrip:
        """Schedule a beam loss at experiment time ``start_s`` for ``duration_s`` s."""
        beam_trip = BeamTrip(start_s, duration_s)
        self.trips.append(beam_trip)
        self.update()
        return beam_trip

    def update(self) -> float:
        """Set ``beam_current_ma`` for the clock's time and return it (mA)."""
        now_s = self.clock.now_s()
        down = any(t.active(now_s) for t in self.trips)
        value = 0.0 if down else self.current_ma
        self._set_current(value)
        return value

    async def read(self):
        self.update()
        return await super().read()

    async def connect(
        self,
        mock: bool | LazyMock = False,
        timeout: float = DEFAULT_TIMEOUT,
        force_reconnect: bool = False,
    ) -> None:
        await super().connect(mock=mock, timeout=timeout, force_reconnect=force_reconnect)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        """Stop the background refresh."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll(self) -> None:
        while True:
            self.update()
            await asyncio.sleep(self.poll_period_s)
