"""Run one SIMPLON series: arm, trigger (``ints``), wait for idle, disarm, wait for the files.

An internally triggered series is armed when the detector is *prepared* (`SeriesRunner.arm`)
and only triggered at its kickoff (`SeriesRunner.start`): arming opens the file writer's
files and takes 0.1 s to seconds (a real DCU "up to a few seconds"), while a fly line's
frames must start the moment the kickoff returns, with the stage already at speed. Armed at
kickoff, the series of a 0.15 s line started 0.1-0.3 s late on a loaded machine, its frames
in the stage's run-down or after it (measured over SIMPLON with ``opmap sim-beamline``).

The ``trigger`` command of a Dectris detector in ``ints`` returns when the series has been
acquired; in ``exts`` / ``exte`` hardware triggers drive it and the detector returns to
``idle`` after ``ntrigger`` triggers. The file writer then closes its files and its
``status/state`` returns to ``ready``: only then are the frames counted as written. Every
wait has a timeout; a ``status/state`` of ``error`` raises `SimplonError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._simplon_client import SimplonClient, SimplonError
from ._simplon_series import SeriesBook

if TYPE_CHECKING:
    from .simplon import SimplonDriverIO

__all__ = ["SeriesPlan", "SeriesRunner"]

#: A real DCU arms in up to a few seconds (it prepares the file writer and the stream).
ARM_TIMEOUT_S = 60.0
#: Allowance beyond the modelled series duration (network, read-out, file writer).
SLACK_S = 20.0
#: How long the file writer may take to close the files after the series (s).
FILEWRITER_TIMEOUT_S = 120.0
POLL_S = 0.05
#: Poll period while bounding a series' start (s): the bound's width includes it.
START_POLL_S = 0.002
#: Period of re-publishing the frame count while a series runs (observers time out
#: after ``TriggerInfo.exposure_timeout`` without an update).
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class SeriesPlan:
    """What the trigger logic configured: SIMPLON mode, frames, frame period (s)."""

    mode: str
    n_frames: int
    frame_time_s: float

    @property
    def duration_s(self) -> float:
        """Modelled acquisition time of the series (s)."""
        return self.n_frames * self.frame_time_s


class SeriesRunner:
    """Arms series on the DCU and confirms their frames in the `SeriesBook`.

    Parameters
    ----------
    driver
        The detector's SIMPLON signals (and client).
    book
        Where series and confirmed frames are recorded.
    external_timeout_s
        How long an ``exts`` / ``exte`` series may wait for its triggers (s).
    """

    def __init__(
        self, driver: SimplonDriverIO, book: SeriesBook, external_timeout_s: float
    ) -> None:
        self.driver, self.book, self.external_timeout_s = driver, book, external_timeout_s
        self.plan: SeriesPlan | None = None
        self.task: asyncio.Task | None = None
        #: The plan of the series armed and not yet triggered (None: nothing armed).
        self.armed: SeriesPlan | None = None
        #: Bounds (s, `time.time`) of the last ``ints`` series' start (NaN: not known).
        self.start_window_s = (math.nan, math.nan)
        self._trigger_sent_s = math.nan

    @property
    def client(self) -> SimplonClient:
        """The DCU."""
        return self.driver.client

    async def check_usable(self) -> None:
        """Raise `SimplonError` if the detector is in error or not initialized."""
        if await self.state("detector") == "na":
            url = self.client.url("detector", "command", "initialize")
            raise SimplonError(
                f"{self.client.label}: the detector state is 'na' (not initialized): "
                f"PUT {url} first (it takes minutes on a real detector)"
            )

    async def state(self, subsystem: str) -> str:
        """``<subsystem>/status/state``; raises `SimplonError` when it is ``error``."""
        state = str(await self.client.get(subsystem, "status", "state"))
        if state == "error":
            detail = ""
            with contextlib.suppress(SimplonError):
                detail = f": {await self.client.get(subsystem, 'status', 'error')!r}"
            url = self.client.url(subsystem, "status", "state")
            raise SimplonError(f"{self.client.label}: {url} reports 'error'{detail}")
        return state

    async def arm(self) -> None:
        """Name the next series' files and arm it (the slow part of starting a series)."""
        if self.plan is None:
            raise RuntimeError(f"{self.client.label}: arm before prepare")
        await self.driver.fw_name_pattern.set(self.book.next_name())
        reply = await self.client.command("arm", timeout_s=ARM_TIMEOUT_S)
        self.book.start_series(self.plan.n_frames, _series_id(reply))
        self.armed = self.plan

    async def release(self) -> None:
        """Disarm a series armed and never triggered, and forget it (it has no frames)."""
        if self.armed is not None:
            self.armed = None
            self.book.drop_last()
            await self.client.command("disarm")

    async def start(self) -> None:
        """Run the prepared series in the background (arming it first unless armed)."""
        if self.plan is None:
            raise RuntimeError(f"{self.client.label}: start before prepare")
        if self.armed != self.plan:
            await self.release()
            await self.arm()
        self.armed = None
        self.start_window_s = (math.nan, math.nan)
        self._trigger_sent_s = math.nan
        self.task = asyncio.ensure_future(self._run(self.plan))
        if self.plan.mode == "ints":
            self.start_window_s = await self._bound_start(self.task)

    async def _bound_start(self, task: asyncio.Task) -> tuple[float, float]:
        """Wall-clock bounds of an ``ints`` series' start: the ``trigger`` request leaves
        after the first; the DCU is seen past ``ready`` (acquiring, or done) before the
        second. A DCU that answers late widens them; it never moves the start outside."""
        while math.isnan(self._trigger_sent_s) and not task.done():
            await asyncio.sleep(0)  # the task sends the trigger at its first step
        while not task.done() and await self.state("detector") == "ready":
            await asyncio.sleep(START_POLL_S)
        return self._trigger_sent_s, time.time()

    async def wait(self) -> None:
        """Wait for the series to finish; re-raise its error."""
        task, self.task = self.task, None
        if task is not None:
            await task

    async def stop(self) -> None:
        """Cancel a running series (abort) and leave the detector disarmed."""
        if self.armed is not None:
            self.armed = None
            self.book.drop_last()
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SimplonError):
                await task
            await self.client.command("abort")
        await self.client.command("disarm")

    async def _run(self, plan: SeriesPlan) -> None:
        beat = asyncio.ensure_future(self._heartbeat())
        try:
            if plan.mode == "ints":
                timeout_s = plan.duration_s + SLACK_S
                self._trigger_sent_s = time.time()
                await self.client.command("trigger", timeout_s=timeout_s)
                done = {"idle", "ready"}  # all frames taken when trigger returns
            else:
                timeout_s, done = self.external_timeout_s, {"idle"}
            await self._wait_state("detector", done, timeout_s)
            await self.client.command("disarm")
            await self._wait_state("filewriter", {"ready"}, FILEWRITER_TIMEOUT_S)
            self.book.confirm()
        except Exception as err:
            self.book.fail(err)
            raise
        finally:
            beat.cancel()

    async def _wait_state(self, subsystem: str, wanted: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (state := await self.state(subsystem)) not in wanted:
            if time.monotonic() > deadline:
                url = self.client.url(subsystem, "status", "state")
                raise SimplonError(
                    f"{self.client.label}: {url} is still {state!r} after {timeout_s:.1f} s "
                    f"(waiting for {sorted(wanted)})"
                )
            await asyncio.sleep(POLL_S)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.book.heartbeat()


def _series_id(reply: object) -> int | None:
    """The series number an ``arm`` answers (``{"sequence id": n}``), if it gives one."""
    value = reply.get("sequence id") if isinstance(reply, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
