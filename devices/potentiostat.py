"""Potentiostat: one device API over a backend driver (the lab instrument or the twin).

Plans use standard bluesky verbs:

- ``prepare(protocol)`` validates every step against the hard `SafetyWindow` and raises
  `ProtocolError` (a ValueError) *before* anything is sent, then loads the protocol;
- ``kickoff()`` starts it and returns at once; ``complete()`` finishes when the protocol is
  done (it may span several runs); ``stop()`` puts the cell at open circuit;
- ``describe_collect()`` / ``collect_pages()`` give every buffered sample since the previous
  collect (fixed interval of experiment time), keys ``potential_v``, ``current_a``,
  ``charge_c``, ``time_s``, ``step_index``: declare and collect them in the stream
  `STREAM_NAME` so the electrochemistry record has no gaps between maps;
- ``read()`` refreshes and reads potential, current, charge, elapsed time, step, state and
  ``protocol_start``: the instrument's clock (the ``time_s`` of its samples) when the
  protocol started (NaN before), so a resumed control process can place the protocol.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from bluesky.protocols import Flyable, Preparable, Reading, Stoppable
from event_model import DataKey, PartialEventPage
from ophyd_async.core import AsyncStatus, StandardReadable, StrictEnum, soft_signal_r_and_setter
from ophyd_async.core import StandardReadableFormat as Format

from ._step_table import SafetyWindow, StepTable, Technique

__all__ = [
    "STREAM_NAME",
    "Potentiostat",
    "PotentiostatDriver",
    "PotentiostatSample",
    "PotentiostatState",
    "PotentiostatStatus",
]

#: Name of the event stream holding the buffered electrochemistry samples.
STREAM_NAME = "potentiostat"


class PotentiostatState(StrictEnum):
    """What the instrument is doing."""

    IDLE = "idle"
    LOADED = "loaded"
    RUNNING = "running"
    DONE = "done"
    OPEN_CIRCUIT = "open circuit"


@dataclass(frozen=True)
class PotentiostatSample:
    """One buffered sample (experiment time ``time_s`` in s, SI units, + = charge)."""

    time_s: float
    potential_v: float
    current_a: float
    charge_c: float
    step_index: int


@dataclass(frozen=True)
class PotentiostatStatus:
    """The instrument's latest state: a sample plus protocol progress."""

    sample: PotentiostatSample
    elapsed_s: float
    step_label: str
    technique: Technique
    protocol_done: bool


class PotentiostatDriver(Protocol):
    """What a backend must provide (the lab instrument's SDK, or the simulation)."""

    async def load(self, protocol: StepTable, window: SafetyWindow) -> None:
        """Send a validated protocol and the window to the instrument (not started)."""

    async def start(self) -> None:
        """Start the loaded protocol; return at once."""

    async def stop(self) -> None:
        """Abort the protocol and leave the cell at open circuit."""

    async def status(self) -> PotentiostatStatus:
        """The latest state of the instrument."""

    async def drain(self) -> Sequence[PotentiostatSample]:
        """Every sample recorded since the previous call, oldest first."""

    async def wait_done(self) -> None:
        """Return when the running protocol has finished."""

    async def wait_elapsed(self, elapsed_s: float) -> None:
        """Return once ``elapsed_s`` (s since the protocol started) has passed, or it is done."""


_SAMPLE_KEYS: dict[str, tuple[str, str, str]] = {
    # key: (dtype, numpy dtype, units)
    "time_s": ("number", "<f8", "s"),
    "potential_v": ("number", "<f8", "V"),
    "current_a": ("number", "<f8", "A"),
    "charge_c": ("number", "<f8", "C"),
    "step_index": ("integer", "<i8", ""),
}


class Potentiostat(StandardReadable, Preparable, Flyable, Stoppable):
    """A potentiostat cycling the cell on its own clock, driven through ``driver``.

    Parameters
    ----------
    driver
        The backend (see `PotentiostatDriver`).
    window
        Hard safety limits, checked before any command.
    name
        Device name.
    """

    def __init__(
        self, driver: PotentiostatDriver, window: SafetyWindow | None = None, name: str = ""
    ) -> None:
        self.driver = driver
        self.window = window or SafetyWindow()
        self._protocol: StepTable | None = None
        self._epoch_unix: float = 0.0
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.potential, self._set_potential = soft_signal_r_and_setter(float, units="V")
            self.current, self._set_current = soft_signal_r_and_setter(float, units="A")
        with self.add_children_as_readables():
            self.charge, self._set_charge = soft_signal_r_and_setter(float, units="C")
            self.elapsed, self._set_elapsed = soft_signal_r_and_setter(float, units="s")
            # the instrument's clock when the protocol started: sample time_s - elapsed
            self.protocol_start, self._set_protocol_start = soft_signal_r_and_setter(
                float, math.nan, units="s"
            )
            self.step, self._set_step = soft_signal_r_and_setter(int)
            self.step_label, self._set_step_label = soft_signal_r_and_setter(str)
            self.state, self._set_state = soft_signal_r_and_setter(
                PotentiostatState, PotentiostatState.IDLE
            )
        super().__init__(name=name)

    async def refresh(self) -> PotentiostatStatus:
        """Poll the driver and update the readback signals."""
        status = await self.driver.status()
        self._set_potential(status.sample.potential_v)
        self._set_current(status.sample.current_a)
        self._set_charge(status.sample.charge_c)
        self._set_elapsed(status.elapsed_s)
        self._set_step(status.sample.step_index)
        self._set_step_label(status.step_label)
        state = await self.state.get_value()
        if state in (PotentiostatState.RUNNING, PotentiostatState.DONE):
            self._set_protocol_start(status.sample.time_s - status.elapsed_s)
        if status.protocol_done and state == PotentiostatState.RUNNING:
            self._set_state(PotentiostatState.DONE)
        return status

    async def read(self) -> dict[str, Reading]:
        await self.refresh()
        return await super().read()

    @AsyncStatus.wrap
    async def prepare(self, value: StepTable) -> None:
        """Validate ``value`` against the safety window, then load it (not started)."""
        if not isinstance(value, StepTable):
            raise TypeError(f"prepare() needs a StepTable, got {type(value).__name__}")
        value.check(self.window)
        await self.driver.load(value, self.window)
        self._protocol = value
        self._set_state(PotentiostatState.LOADED)

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Start the prepared protocol and return at once."""
        if self._protocol is None:
            raise RuntimeError(f"{self.name}: prepare(protocol) must be called before kickoff()")
        await self.driver.start()
        self._epoch_unix = _unix_now()
        self._set_state(PotentiostatState.RUNNING)

    @AsyncStatus.wrap
    async def complete(self) -> None:
        """Finish when the running protocol is done."""
        if await self.state.get_value() not in (PotentiostatState.RUNNING, PotentiostatState.DONE):
            raise RuntimeError(f"{self.name}: kickoff() must be called before complete()")
        await self.driver.wait_done()
        await self.refresh()
        self._set_state(PotentiostatState.DONE)

    def wait_elapsed(self, elapsed_s: float) -> AsyncStatus:
        """A status that finishes once the protocol has run for ``elapsed_s`` (s) or is done.

        Plans wait on it between maps (``bps.wait_for``) instead of sleeping in wall time,
        so a simulated clock can jump straight to the next map's start.
        """
        if not math.isfinite(elapsed_s):
            raise ValueError(f"elapsed_s={elapsed_s} must be finite")
        return AsyncStatus(self.driver.wait_elapsed(elapsed_s))

    async def stop(self, success: bool = True) -> None:
        """Abort the protocol: the cell goes to open circuit."""
        await self.driver.stop()
        self._set_state(PotentiostatState.OPEN_CIRCUIT)

    async def describe_collect(self) -> dict[str, DataKey]:
        """Data keys of the buffered samples (collect them in stream `STREAM_NAME`)."""
        return {
            key: DataKey(
                source=f"{self.name}:buffer",
                dtype=dtype,  # type: ignore[typeddict-item]
                dtype_numpy=np_dtype,
                shape=[],
                units=units,
            )
            for key, (dtype, np_dtype, units) in _SAMPLE_KEYS.items()
        }

    async def collect_pages(self) -> AsyncIterator[PartialEventPage]:
        """One event page with every sample since the previous collect (none if empty)."""
        samples = list(await self.driver.drain())
        if not samples:
            return
        # Event 'time' is a Unix timestamp placed at protocol start + experiment time;
        # analysis uses the 'time_s' data, never this.
        times = [self._epoch_unix + s.time_s for s in samples]
        data = {key: [getattr(s, key) for s in samples] for key in _SAMPLE_KEYS}
        yield PartialEventPage(
            time=times, data=data, timestamps={key: times for key in _SAMPLE_KEYS}
        )


def _unix_now() -> float:
    return time.time()
