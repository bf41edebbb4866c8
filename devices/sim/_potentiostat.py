"""Simulated potentiostat: the twin's electrochemistry sampled on the simulation clock.

Whenever the device is read, collected or polled, the model is first sampled at every
multiple of ``sample_interval_s`` not yet recorded (so the buffer has no gaps), then advanced
to the clock's current time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from opmap.devices import SafetyWindow, StepTable, Technique
from opmap.devices.potentiostat import Potentiostat, PotentiostatSample, PotentiostatStatus
from opmap.twin.electrochem import ElectrochemModel, ElectrochemState, SampledElectrochemistry

from ._clock import SimClock

__all__ = ["SimPotentiostat", "SimPotentiostatDriver"]


class SimPotentiostatDriver:
    """`PotentiostatDriver` over an `ElectrochemModel` and a `SimClock`.

    Parameters
    ----------
    model
        The electrochemistry model.
    clock
        Shared simulation clock.
    sample_interval_s
        Buffer sampling period (s of experiment time, > 0).
    poll_period_s
        Clock step while waiting for the protocol's end (s, > 0).
    """

    def __init__(
        self,
        model: ElectrochemModel,
        clock: SimClock,
        *,
        sample_interval_s: float = 1.0,
        poll_period_s: float = 10.0,
    ) -> None:
        for name, value in (
            ("sample_interval_s", sample_interval_s),
            ("poll_period_s", poll_period_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value} must be a finite time > 0 s")
        if isinstance(model, SampledElectrochemistry):
            if model.sample_interval_s != sample_interval_s:
                raise ValueError(
                    f"sample_interval_s={sample_interval_s} differs from the shared model's "
                    f"{model.sample_interval_s} s"
                )
            self.model = model
        else:
            self.model = SampledElectrochemistry(model, sample_interval_s=sample_interval_s)
        self.clock = clock
        self.sample_interval_s = sample_interval_s
        self.poll_period_s = poll_period_s
        self._protocol: StepTable | None = None
        self._window: SafetyWindow | None = None
        self._start_s = 0.0
        self._running = False
        self._pending: list[PotentiostatSample] = []
        # every sample the shared model takes from now on, whoever advances it (this driver,
        # or the detector rendering a frame), until drained
        self.model.add_observer(lambda state: self._pending.append(_sample(state)))

    async def load(self, protocol: StepTable, window: SafetyWindow) -> None:
        self._protocol, self._window = protocol, window

    async def start(self) -> None:
        if self._protocol is None or self._window is None:
            raise RuntimeError("no protocol loaded")
        self._catch_up()
        self._start_s = self.clock.now_s()
        self.model.start_protocol(self._protocol, self._window)
        self._running = True

    async def stop(self) -> None:
        self._catch_up()
        self.model.stop_protocol()
        self._running = False

    async def status(self) -> PotentiostatStatus:
        self._catch_up()
        state = self.model.state
        return PotentiostatStatus(
            sample=_sample(state),
            elapsed_s=state.time_s - self._start_s if self._running else 0.0,
            step_label=state.step_label,
            technique=Technique(state.technique),
            protocol_done=state.protocol_done,
        )

    async def drain(self) -> Sequence[PotentiostatSample]:
        self._catch_up()
        samples, self._pending = self._pending, []
        return samples

    async def wait_elapsed(self, elapsed_s: float) -> None:
        # a foreground wait: the plan is waiting for experiment time, so the clock may jump
        while self._running and not (await self.status()).protocol_done:
            remaining_s = self._start_s + elapsed_s - self.clock.now_s()
            if remaining_s <= 0:
                return
            await self.clock.sleep(remaining_s)

    async def wait_done(self) -> None:
        # a background wait: on the event-driven clock it never moves time itself (a plan
        # waits for elapsed time instead); it sees the end when others move time past a poll
        while not (await self.status()).protocol_done:
            await self.clock.sleep(self.poll_period_s, background=True)

    def _catch_up(self) -> None:
        # the observer collects the samples up to the clock's time
        self.model.advance_to(self.clock.now_s())


def _sample(state: ElectrochemState) -> PotentiostatSample:
    return PotentiostatSample(
        time_s=state.time_s,
        potential_v=state.potential_v,
        current_a=state.current_a,
        charge_c=state.charge_c,
        step_index=state.step_index,
    )


class SimPotentiostat(Potentiostat):
    """`Potentiostat` on the twin's electrochemistry (see `SimPotentiostatDriver`)."""

    def __init__(
        self,
        model: ElectrochemModel,
        clock: SimClock,
        window: SafetyWindow | None = None,
        *,
        sample_interval_s: float = 1.0,
        name: str = "",
    ) -> None:
        driver = SimPotentiostatDriver(model, clock, sample_interval_s=sample_interval_s)
        super().__init__(driver, window, name=name)
