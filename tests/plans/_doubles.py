"""A potentiostat test double with the device API the plans rely on.

It runs a `StepTable` on its own clock: a sample every ``sample_period_s`` of wall time, each
worth ``time_step_s`` of experiment time, numbered so a test can prove the record gapless.
"""

from __future__ import annotations

import asyncio
import time

from event_model import DataKey
from ophyd_async.core import AsyncStatus

from opmap.devices import SafetyWindow, StepTable, Technique

FIELDS = ("potential_v", "current_a", "charge_c", "time_s", "step_index")
UNITS = {"potential_v": "V", "current_a": "A", "charge_c": "C", "time_s": "s", "step_index": ""}


class FakePotentiostat:
    """Readable, Preparable, Flyable, EventPageCollectable, Stoppable."""

    parent = None

    def __init__(
        self,
        name: str = "potentiostat",
        *,
        time_step_s: float = 1.0,
        sample_period_s: float = 0.005,
    ) -> None:
        self.name = name
        self.window = SafetyWindow()
        self.time_step_s = time_step_s
        self.sample_period_s = sample_period_s
        self.protocol: StepTable | None = None
        self.samples: list[dict[str, float]] = []  # every sample ever taken
        self._next_to_collect = 0
        self._task: asyncio.Task | None = None
        self.stopped = False

    # --- protocol -------------------------------------------------------------------
    def prepare(self, protocol: StepTable) -> AsyncStatus:
        protocol.check(self.window)  # raises before anything runs
        self.protocol = protocol

        async def noop() -> None:
            return None

        return AsyncStatus(noop())

    def kickoff(self) -> AsyncStatus:
        assert self.protocol is not None, "prepare first"
        self._task = asyncio.get_running_loop().create_task(self._run())

        async def started() -> None:
            return None

        return AsyncStatus(started())

    def complete(self) -> AsyncStatus:
        assert self._task is not None, "kickoff first"
        task = self._task

        async def wait() -> None:
            await asyncio.shield(task)

        return AsyncStatus(wait())

    def wait_elapsed(self, elapsed_s: float) -> AsyncStatus:
        async def wait() -> None:
            while self._task is not None and not self._task.done():
                if self.samples and self.samples[-1]["time_s"] >= elapsed_s:
                    return
                await asyncio.sleep(self.sample_period_s)

        return AsyncStatus(wait())

    def stop(self, *, success: bool = False) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        assert self.protocol is not None
        ends = []
        total = 0.0
        for step in self.protocol.steps:
            total += step.max_duration_s
            ends.append(total)
        k = 0
        while k * self.time_step_s < total:
            await asyncio.sleep(self.sample_period_s)
            t = k * self.time_step_s
            step_index = next(i for i, end in enumerate(ends) if t < end)
            self.samples.append(self._sample(t, step_index))
            k += 1

    def _sample(self, time_s: float, step_index: int) -> dict[str, float]:
        assert self.protocol is not None
        step = self.protocol.steps[step_index]
        current_a = step.setpoint if step.technique == Technique.CONSTANT_CURRENT else 0.0
        charge = (self.samples[-1]["charge_c"] if self.samples else 0.0) + current_a
        return {
            "potential_v": 3.9,
            "current_a": current_a,
            "charge_c": charge,
            "time_s": time_s,
            "step_index": step_index,
        }

    @property
    def current_step_index(self) -> int:
        return int(self.samples[-1]["step_index"]) if self.samples else 0

    # --- Readable -------------------------------------------------------------------
    def describe(self) -> dict[str, DataKey]:
        return {
            f"{self.name}_{k}": DataKey(source="fake", dtype="number", shape=[], units=UNITS[k])
            for k in FIELDS
        }

    def read(self) -> dict:
        last = self.samples[-1] if self.samples else dict.fromkeys(FIELDS, 0.0)
        now = time.time()
        return {f"{self.name}_{k}": {"value": last[k], "timestamp": now} for k in FIELDS}

    # --- EventPageCollectable -------------------------------------------------------
    def describe_collect(self) -> dict[str, DataKey]:
        return self.describe()

    def collect_pages(self):
        new = self.samples[self._next_to_collect :]
        self._next_to_collect += len(new)
        if not new:
            return
        now = time.time()
        yield {
            "data": {f"{self.name}_{k}": [s[k] for s in new] for k in FIELDS},
            "timestamps": {f"{self.name}_{k}": [now] * len(new) for k in FIELDS},
            "time": [now] * len(new),
        }
