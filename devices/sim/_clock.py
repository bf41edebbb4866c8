"""The simulation clock shared by every simulated device.

Experiment time ``time_s`` (seconds from the start of the protocol) is the only time base
the simulated devices and the twin use. Three modes:

- ``REAL_TIME``: experiment time follows the wall clock (a dress rehearsal);
- ``ACCELERATED``: it follows the wall clock times ``speedup`` (a 3 h protocol in minutes);
- ``EVENT_DRIVEN``: a discrete-event simulation. Time moves only when a device or a plan
  asks to wait for experiment time (``sleep``, ``sleep_until``) or a caller ``advance``\\ s
  it; never by wall time.

Event-driven rules (they make the experiment a function of the requests alone, whatever the
machine's load):

1. Every waiter registers an absolute deadline (``now + duration``), with a ticket giving
   its registration order.
2. A *foreground* waiter (a motion, an exposure, a plan waiting for the potentiostat's
   elapsed time) may move time. The clock jumps to the earliest foreground deadline only
   when the event loop has nothing else to run: its ready queue is empty, so every task is
   blocked, and no worker-thread job started through `SimClock.run_in_thread` is pending.
   Nothing that could still register an earlier deadline is running, so concurrent waits
   overlap like events of a discrete-event simulation.
3. A *background* waiter (``background=True``, e.g. a potentiostat polling for its
   protocol's end) never moves time: it is released when foreground requests or
   ``advance`` move time to or past its deadline.
4. At a jump every waiter whose deadline is reached is released in (deadline, ticket)
   order; the released tasks run in that order (the loop is first in, first out).
5. Work in worker threads (the Eiger renders frames in a pool) goes through
   `SimClock.run_in_thread`: at an idle point the clock waits for every pending job and
   hands the results back in the order the jobs were started, before any jump. When a
   thread finishes therefore changes neither experiment time nor the order of requests.

Code on the simulated devices' path must wait on this clock (or on other tasks), never on
wall-time timers (``asyncio.sleep(0.1)``): a loop waiting only for a timer looks idle.

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
from concurrent.futures import Executor
from typing import Any, TypeVar

from ophyd_async.core import StrictEnum

__all__ = ["ClockMode", "SharedTime", "SimClock"]

T = TypeVar("T")

#: Yields to the loop per idleness check on loops without a visible ready queue.
_FALLBACK_YIELDS = 64


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
        See `ClockMode` and the module notes for the event-driven rules.
    speedup
        Experiment seconds per wall second in ``ACCELERATED`` mode (> 0; must be 1 in
        ``REAL_TIME``, ignored in ``EVENT_DRIVEN``).
    start_s
        Experiment time at construction (s, >= 0).
    wall_clock
        Monotonic wall clock in seconds, injectable for tests (wall-clock modes only).
    """

    def __init__(
        self,
        mode: ClockMode = ClockMode.EVENT_DRIVEN,
        *,
        speedup: float = 1.0,
        start_s: float = 0.0,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(speedup) and speedup > 0):
            raise ValueError(f"speedup={speedup} must be a finite number > 0")
        if mode == ClockMode.REAL_TIME and speedup != 1.0:
            raise ValueError(f"speedup={speedup} must be 1 in mode {mode.value!r}")
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s={start_s} must be a finite time >= 0 s")
        self.mode = ClockMode(mode)
        self.speedup = 1.0 if self.mode == ClockMode.REAL_TIME else float(speedup)
        self._wall_clock = wall_clock
        self._wall0 = wall_clock()
        self._t0_s = float(start_s)
        # heap of (deadline_s, ticket, background, future)
        self._waiters: list[tuple[float, int, bool, asyncio.Future]] = []
        self._ticket = itertools.count()
        self._jobs: list[tuple[asyncio.Future, asyncio.Future]] = []
        self._driver: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Number of event-driven jumps so far (diagnostics and tests).
        self.jumps = 0

    def now_s(self) -> float:
        """Experiment time now (s)."""
        if self.mode == ClockMode.EVENT_DRIVEN:
            return self._t0_s
        return self._t0_s + (self._wall_clock() - self._wall0) * self.speedup

    def advance(self, duration_s: float) -> None:
        """Move experiment time forward by ``duration_s`` (s) at once (event-driven only).

        Waiters whose deadline is reached are released (from any thread: through the loop
        they wait in).
        """
        _check_duration(duration_s)
        if self.mode != ClockMode.EVENT_DRIVEN:
            raise ValueError(
                f"advance() needs mode 'event driven', the clock is {self.mode.value!r}"
            )
        self._t0_s += duration_s
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._release_due()
        elif loop.is_running():
            loop.call_soon_threadsafe(self._release_due)

    async def sleep(self, duration_s: float, *, background: bool = False) -> None:
        """Wait ``duration_s`` seconds of experiment time (>= 0).

        ``background=True`` marks a waiter that never moves time itself (see the module
        notes); in the wall-clock modes the flag changes nothing.
        """
        _check_duration(duration_s)
        if self.mode != ClockMode.EVENT_DRIVEN:
            await asyncio.sleep(duration_s / self.speedup)
            return
        await self._wait_until(self._t0_s + duration_s, background)

    async def sleep_until(self, time_s: float, *, background: bool = False) -> None:
        """Wait until experiment time ``time_s`` (returns at once if already past)."""
        if not math.isfinite(time_s):
            raise ValueError(f"time_s={time_s} must be finite")
        if self.mode != ClockMode.EVENT_DRIVEN:
            await self.sleep(max(0.0, time_s - self.now_s()), background=background)
            return
        await self._wait_until(time_s, background)

    async def run_in_thread(
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> T:
        """``func(*args)`` in ``executor``'s worker threads, its result delivered in order.

        In ``EVENT_DRIVEN`` mode the result (or exception) is handed back only once the event
        loop is idle and every job started so far has finished, in the order the jobs were
        started (rule 5): when a thread finishes cannot change what the loop does next. In
        the wall-clock modes this is ``loop.run_in_executor``.

        Parameters
        ----------
        executor
            Where to run ``func`` (None: the loop's default executor).
        func, *args
            The work and its arguments.

        Returns
        -------
        object
            What ``func(*args)`` returned (its exception is raised here).
        """
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, func, *args)
        if self.mode != ClockMode.EVENT_DRIVEN:
            return await job
        self._loop = loop
        result = loop.create_future()
        self._jobs.append((job, result))
        self._ensure_driver(loop)
        return await result

    async def _wait_until(self, deadline_s: float, background: bool) -> None:
        if deadline_s <= self._t0_s:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        future = loop.create_future()
        heapq.heappush(self._waiters, (deadline_s, next(self._ticket), background, future))
        if not background:
            self._ensure_driver(loop)
        await future

    def _ensure_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        # one driver task per clock, in the loop its waiters use (a test's loop may have
        # closed with an unfinished driver in it)
        driver = self._driver
        if driver is None or driver.done() or driver.get_loop() is not loop:
            self._driver = loop.create_task(self._drive(), name="sim-clock-driver")

    async def _drive(self) -> None:
        """At each idle point of the loop: deliver thread results, else jump (rules 2, 5)."""
        loop = asyncio.get_running_loop()
        while True:
            await _until_idle(loop)
            if self._jobs:
                await self._deliver_jobs()
                continue
            deadline_s = self._earliest_foreground()
            if deadline_s is None:
                return
            self._t0_s = max(self._t0_s, deadline_s)
            self.jumps += 1
            self._release_due()

    async def _deliver_jobs(self) -> None:
        jobs, self._jobs = self._jobs, []
        await asyncio.wait([job for job, _ in jobs])
        for job, result in jobs:
            if result.done():  # its waiter was cancelled
                continue
            if job.cancelled():
                result.cancel()
            elif job.exception() is not None:
                result.set_exception(job.exception())
            else:
                result.set_result(job.result())

    def _earliest_foreground(self) -> float | None:
        pending = [w[0] for w in self._waiters if not w[2] and not w[3].done()]
        return min(pending, default=None)

    def _release_due(self) -> None:
        """Release, in (deadline, ticket) order, every waiter whose deadline is reached."""
        while self._waiters and self._waiters[0][0] <= self._t0_s:
            future = heapq.heappop(self._waiters)[3]
            if not future.done():
                future.set_result(None)
        self._waiters = [w for w in self._waiters if not w[3].done()]
        heapq.heapify(self._waiters)


class SharedTime:
    """Two wall-time clocks: wall (motors, detector) and the cell's, ``speedup`` × wall.

    The time base of ``opmap sim-beamline`` and of the in-process simulation's ``"wall"``
    clock mode (`opmap.beamline.SimConfig`): motor moves and exposures last their real
    time, the electrochemistry runs ``speedup`` times faster.

    Parameters
    ----------
    speedup
        Cell seconds per wall second (> 0).
    """

    def __init__(self, speedup: float) -> None:
        if not (math.isfinite(speedup) and speedup > 0):
            raise ValueError(f"speedup={speedup} must be a finite number > 0")
        self.speedup = float(speedup)
        #: Wall seconds since start-up: motor moves and exposures wait on it.
        self.wall = SimClock(ClockMode.REAL_TIME)
        anchor: list[float] = []

        def wall_s() -> float:
            now_s = self.wall.now_s()
            if not anchor:  # the cell clock reads its origin here, at construction
                anchor.append(now_s)
            return now_s

        mode = ClockMode.REAL_TIME if self.speedup == 1.0 else ClockMode.ACCELERATED
        #: The cell's experiment time: ``speedup × (wall - origin)``.
        self.cell = SimClock(mode, speedup=self.speedup, wall_clock=wall_s)
        self._origin_s = anchor[0]

    def cell_time_s(self, wall_s: float) -> float:
        """Cell time (s) at ``wall_s`` of `wall` (exactly what `cell` reads then)."""
        return (wall_s - self._origin_s) * self.speedup


async def _until_idle(loop: asyncio.AbstractEventLoop) -> None:
    """Return once nothing else is ready to run in ``loop`` (every task blocked)."""
    ready = getattr(loop, "_ready", None)  # asyncio's BaseEventLoop run queue
    if ready is None:
        for _ in range(_FALLBACK_YIELDS):
            await asyncio.sleep(0)
        return
    await asyncio.sleep(0)
    while ready:
        await asyncio.sleep(0)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_duration(duration_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s={duration_s} must be a finite time >= 0 s")
