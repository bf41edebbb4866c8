"""The simulation clock shared by every simulated device.

Experiment time ``time_s`` (seconds from the start of the protocol) is the only time base
the simulated devices and the twin use. Three modes:

- ``REAL_TIME``: experiment time follows the wall clock (a dress rehearsal);
- ``ACCELERATED``: it follows the wall clock times ``speedup`` (a 3 h protocol in minutes);
- ``EVENT_DRIVEN``: it only moves when a device waits for a modelled duration (a motion, an
  exposure). Concurrent waits overlap like in a discrete-event simulation: every waiter
  registers its deadline and the clock jumps to the earliest one, so a 2 s fly move and 40
  exposures of 0.05 s running together cost 2 s, not 4 s.

In the wall-clock modes time also flows while nobody waits (for example while the
RunEngine is paused), so the potentiostat keeps cycling the cell.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable

from ophyd_async.core import StrictEnum

__all__ = ["ClockMode", "SimClock"]


class ClockMode(StrictEnum):
    """How experiment time advances."""

    REAL_TIME = "real time"
    ACCELERATED = "accelerated"
    EVENT_DRIVEN = "event driven"


class SimClock:
    """Experiment time for the simulated devices.

    Parameters
    ----------
    mode
        See `ClockMode`.
    speedup
        Experiment seconds per wall second in ``ACCELERATED`` mode (> 0; must be 1 in
        ``REAL_TIME``, ignored in ``EVENT_DRIVEN``).
    start_s
        Experiment time at construction (s, >= 0).
    wall_clock
        Monotonic wall clock in seconds, injectable for tests.
    settle_s
        In ``EVENT_DRIVEN`` mode, wall time (s) the earliest waiter must stay the earliest,
        with no other waiter arriving or leaving, before the clock jumps to its deadline
        (like trio's autojump threshold). It lets the RunEngine start every device of a
        fly scan before time moves; each jump costs at least this much wall time.
    idle_s
        In ``EVENT_DRIVEN`` mode, a *background* waiter (``sleep(..., background=True)``,
        e.g. a potentiostat waiting for its protocol to end) moves the clock only while some
        foreground waiter (a motion, an exposure) is also waiting, or once no foreground
        waiter has come or gone for ``idle_s`` of wall time. Without this rule the
        background waiter would jump time forward in every short gap between two device
        operations of the RunEngine, and a fly line would take minutes of experiment time.
    """

    def __init__(
        self,
        mode: ClockMode = ClockMode.EVENT_DRIVEN,
        *,
        speedup: float = 1.0,
        start_s: float = 0.0,
        wall_clock: Callable[[], float] = time.monotonic,
        settle_s: float = 0.002,
        idle_s: float = 1.0,
    ) -> None:
        if not (math.isfinite(speedup) and speedup > 0):
            raise ValueError(f"speedup={speedup} must be a finite number > 0")
        if mode == ClockMode.REAL_TIME and speedup != 1.0:
            raise ValueError(f"speedup={speedup} must be 1 in mode {mode.value!r}")
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s={start_s} must be a finite time >= 0 s")
        if not (math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"settle_s={settle_s} must be a finite time >= 0 s")
        self.mode = ClockMode(mode)
        self.speedup = 1.0 if self.mode == ClockMode.REAL_TIME else float(speedup)
        self._wall_clock = wall_clock
        self._wall0 = wall_clock()
        self._t0_s = float(start_s)
        self._settle_s = settle_s
        if not (math.isfinite(idle_s) and idle_s >= 0):
            raise ValueError(f"idle_s={idle_s} must be a finite time >= 0 s")
        self._idle_s = idle_s
        self._foreground = 0
        self._foreground_wall_s = wall_clock()
        self._version = 0
        self._deadlines: list[tuple[float, int]] = []
        self._ticket = itertools.count()
        self._changed = asyncio.Event()

    def now_s(self) -> float:
        """Experiment time now (s)."""
        if self.mode == ClockMode.EVENT_DRIVEN:
            return self._t0_s
        return self._t0_s + (self._wall_clock() - self._wall0) * self.speedup

    def advance(self, duration_s: float) -> None:
        """Move experiment time forward by ``duration_s`` (s) at once (event-driven only)."""
        _check_duration(duration_s)
        if self.mode != ClockMode.EVENT_DRIVEN:
            raise ValueError(
                f"advance() needs mode 'event driven', the clock is {self.mode.value!r}"
            )
        self._t0_s += duration_s

    async def sleep(self, duration_s: float, *, background: bool = False) -> None:
        """Wait ``duration_s`` seconds of experiment time (>= 0).

        ``background=True`` marks a waiter that should not drive time by itself while the
        RunEngine is busy between device operations (see ``idle_s``).
        """
        _check_duration(duration_s)
        if self.mode != ClockMode.EVENT_DRIVEN:
            await asyncio.sleep(duration_s / self.speedup)
            return
        entry = (self._t0_s + duration_s, next(self._ticket))
        heapq.heappush(self._deadlines, entry)
        self._version += 1
        self._changed.set()
        if not background:
            self._foreground += 1
            self._foreground_wall_s = self._wall_clock()
        try:
            await self._wait_for_turn(entry, background)
        finally:
            if not background:
                self._foreground -= 1
                self._foreground_wall_s = self._wall_clock()
            self._remove(entry)

    async def sleep_until(self, time_s: float) -> None:
        """Wait until experiment time ``time_s`` (returns at once if already past)."""
        await self.sleep(max(0.0, time_s - self.now_s()))

    def _may_jump(self, background: bool) -> bool:
        if not background or self._foreground:
            return True
        return self._wall_clock() - self._foreground_wall_s >= self._idle_s

    async def _wait_for_turn(self, entry: tuple[float, int], background: bool) -> None:
        # Discrete-event rule: only the earliest deadline may move the clock, and only once
        # nothing else has arrived or left for settle_s of wall time.
        while True:
            version = self._version
            await asyncio.sleep(self._settle_s)
            if self._deadlines[0] == entry and version == self._version:
                if not self._may_jump(background):
                    await asyncio.sleep(self._idle_s)
                    continue
                self._t0_s = max(self._t0_s, entry[0])
                return
            if self._deadlines[0] != entry:
                self._changed.clear()
                await self._changed.wait()

    def _remove(self, entry: tuple[float, int]) -> None:
        if entry in self._deadlines:
            self._deadlines.remove(entry)
            heapq.heapify(self._deadlines)
        self._version += 1
        self._changed.set()


def _check_duration(duration_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s={duration_s} must be a finite time >= 0 s")
