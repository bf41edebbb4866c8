"""The potentiostat over EPICS Channel Access: a `PotentiostatDriver` on a small PV interface.

Vendor potentiostat SDKs (BioLogic EC-Lab, Gamry, Metrohm Autolab) are Windows-only, so
the RunEngine host never talks to the instrument directly: a facility's own IOC does, and
serves the PVs below (``docs/real-hardware.md``, "Potentiostat, stage and beam over EPICS",
is the reference table). ``opmap sim-ioc`` serves the same PVs from the digital twin.
`EpicsPotentiostatDriver` speaks them, so the existing `Potentiostat` device runs over
EPICS unchanged; `epics_potentiostat` builds that device.

Under a prefix ``$(P)`` (e.g. ``OPMAP:EC:``):

- step table, one element per step (at most `MAX_STEPS`): ``STEPS:TECH`` (technique codes,
  `TECHNIQUE_CODES`), ``STEPS:SETPOINT`` (V or A), ``STEPS:DURATION`` (s), ``STEPS:VMIN``,
  ``STEPS:VMAX`` (V), ``STEPS:IMIN`` (A), ``STEPS:QMAX`` (C) (NaN = no limit),
  ``STEPS:LABELS``; safety window ``WIN:VMIN``, ``WIN:VMAX`` (V), ``WIN:IMAX`` (A);
- commands ``LOAD``, ``START``, ``ABORT`` (write 1; the put completes when done, a refused
  command fails the put and says why in ``MSG``);
- readbacks ``STATE``, ``MSG``, ``E`` (V), ``I`` (A), ``Q`` (C), ``TIME`` (s, instrument
  clock), ``ELAPSED`` (s), ``PROTOCOL_START`` (s), ``STEP``, ``STEP_LABEL``, ``TECH``,
  ``DONE``, ``SAMPLE_INTERVAL`` (s);
- the sample buffer: ``BUF:N`` (running sample count), ``BUF:T``, ``BUF:E``, ``BUF:I``,
  ``BUF:Q``, ``BUF:STEP`` (the last ``BUF:SIZE`` samples, oldest first) and ``BUF:SEQ``, a
  sequence lock: odd while the IOC rewrites the buffer, so a reader that sees the same even
  value before and after its reads has one consistent buffer.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from ophyd_async.core import Array1D, Device, wait_for_value
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw, epics_triggerable_command

from ._step_table import ProtocolError, SafetyWindow, StepTable, Technique
from ._unreachable import answered
from .potentiostat import (
    Potentiostat,
    PotentiostatSample,
    PotentiostatState,
    PotentiostatStatus,
)

__all__ = [
    "LABEL_MAX_CHARS",
    "MAX_STEPS",
    "TECHNIQUE_CODES",
    "BufferOverrunError",
    "EpicsPotentiostatDriver",
    "epics_potentiostat",
]

#: ``STEPS:TECH`` codes: the technique of code ``k`` is ``TECHNIQUE_CODES[k]``.
TECHNIQUE_CODES: tuple[Technique, ...] = (
    Technique.OPEN_CIRCUIT,
    Technique.CONSTANT_VOLTAGE,
    Technique.CONSTANT_CURRENT,
)
#: Length of the ``STEPS:*`` waveforms: the longest protocol the interface carries.
MAX_STEPS = 32
#: Longest step label (characters): an EPICS string holds 40 bytes with its terminator.
LABEL_MAX_CHARS = 39
#: Attempts at one consistent buffer read before giving up (the IOC rewrites it each tick).
_BUFFER_READ_ATTEMPTS = 20

_F64 = Array1D[np.float64]
_T = TypeVar("_T")


def _reached(
    what: str,
) -> Callable[[Callable[..., Awaitable[_T]]], Callable[..., Awaitable[_T]]]:
    """A driver operation whose PV timeouts raise `DeviceUnreachableError` naming the
    potentiostat, ``what`` and the PV."""

    def wrap(method: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
        @functools.wraps(method)
        async def call(self: Any, *args: Any, **kwargs: Any) -> _T:
            ioc = "the potentiostat's IOC"
            return await answered(self.device_label, what, method(self, *args, **kwargs), ioc=ioc)

        return call

    return wrap


class BufferOverrunError(RuntimeError):
    """More samples arrived since the previous drain than the IOC's buffer holds."""


def _limit(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class _StepArrays:
    """The ``STEPS:*`` waveforms of one protocol."""

    technique: Array1D[np.int32]
    setpoint: Array1D[np.float64]
    duration: Array1D[np.float64]
    min_potential: Array1D[np.float64]
    max_potential: Array1D[np.float64]
    min_abs_current: Array1D[np.float64]
    max_abs_charge: Array1D[np.float64]
    labels: list[str]


def _f64(values: list[float]) -> Array1D[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _encode_steps(protocol: StepTable) -> _StepArrays:
    """The ``STEPS:*`` arrays of ``protocol`` (raises `ProtocolError` if it does not fit)."""
    steps = protocol.steps
    if not 0 < len(steps) <= MAX_STEPS:
        raise ProtocolError(
            f"the EPICS interface carries 1 to {MAX_STEPS} steps, not {len(steps)}"
        )
    for step in steps:
        if len(step.label.encode()) > LABEL_MAX_CHARS:
            raise ProtocolError(
                f"step label {step.label!r} is longer than {LABEL_MAX_CHARS} bytes (EPICS string)"
            )
    return _StepArrays(
        technique=np.asarray([TECHNIQUE_CODES.index(s.technique) for s in steps], np.int32),
        setpoint=_f64([s.setpoint for s in steps]),
        duration=_f64([s.max_duration_s for s in steps]),
        min_potential=_f64([_limit(s.min_potential_v) for s in steps]),
        max_potential=_f64([_limit(s.max_potential_v) for s in steps]),
        min_abs_current=_f64([_limit(s.min_abs_current_a) for s in steps]),
        max_abs_charge=_f64([_limit(s.max_abs_charge_c) for s in steps]),
        labels=[s.label for s in steps],
    )


class EpicsPotentiostatDriver(Device):
    """`PotentiostatDriver` over the opmap potentiostat PVs (Channel Access).

    Parameters
    ----------
    prefix
        PV prefix ``$(P)``, e.g. ``"OPMAP:EC:"``.
    poll_period_s
        Wall-clock period (s, > 0) of `wait_elapsed`'s polling of ``ELAPSED``.
    name
        Device name.

    Notes
    -----
    `drain` returns the samples recorded since the previous drain (the first call, or
    `load`, sets the starting point); it raises `BufferOverrunError` rather than return a
    record with a gap when more samples arrived than ``BUF:SIZE``.
    """

    def __init__(self, prefix: str, *, poll_period_s: float = 0.2, name: str = "") -> None:
        if not (math.isfinite(poll_period_s) and poll_period_s > 0):
            raise ValueError(f"poll_period_s={poll_period_s} must be a finite time > 0 s")
        self.poll_period_s = poll_period_s
        self.prefix = prefix
        self._cursor: int | None = None
        self._make_step_table_signals(prefix)
        self._make_readback_signals(prefix)
        self._make_buffer_signals(prefix)
        super().__init__(name=name)

    @property
    def device_label(self) -> str:
        """How errors name this potentiostat: its device name, else its PV prefix."""
        name = self.name.removesuffix("-driver")  # the child of a `Potentiostat` named name
        return name or f"potentiostat {self.prefix}"

    def _make_step_table_signals(self, p: str) -> None:
        self.steps_technique = epics_signal_rw(Array1D[np.int32], f"{p}STEPS:TECH")
        self.steps_setpoint = epics_signal_rw(_F64, f"{p}STEPS:SETPOINT")
        self.steps_duration = epics_signal_rw(_F64, f"{p}STEPS:DURATION")
        self.steps_min_potential = epics_signal_rw(_F64, f"{p}STEPS:VMIN")
        self.steps_max_potential = epics_signal_rw(_F64, f"{p}STEPS:VMAX")
        self.steps_min_abs_current = epics_signal_rw(_F64, f"{p}STEPS:IMIN")
        self.steps_max_abs_charge = epics_signal_rw(_F64, f"{p}STEPS:QMAX")
        labels: type[Sequence[str]] = Sequence[str]  # type: ignore[type-abstract]
        self.steps_labels = epics_signal_rw(labels, f"{p}STEPS:LABELS")
        self.window_min_potential = epics_signal_rw(float, f"{p}WIN:VMIN")
        self.window_max_potential = epics_signal_rw(float, f"{p}WIN:VMAX")
        self.window_max_abs_current = epics_signal_rw(float, f"{p}WIN:IMAX")
        self.load_command = epics_triggerable_command(f"{p}LOAD")
        self.start_command = epics_triggerable_command(f"{p}START")
        self.abort_command = epics_triggerable_command(f"{p}ABORT")

    def _make_readback_signals(self, p: str) -> None:
        self.state = epics_signal_r(PotentiostatState, f"{p}STATE")
        self.message = epics_signal_r(str, f"{p}MSG")
        self.potential = epics_signal_r(float, f"{p}E")
        self.current = epics_signal_r(float, f"{p}I")
        self.charge = epics_signal_r(float, f"{p}Q")
        self.time = epics_signal_r(float, f"{p}TIME")
        self.elapsed = epics_signal_r(float, f"{p}ELAPSED")
        self.protocol_start = epics_signal_r(float, f"{p}PROTOCOL_START")
        self.step = epics_signal_r(int, f"{p}STEP")
        self.step_label = epics_signal_r(str, f"{p}STEP_LABEL")
        self.technique = epics_signal_r(Technique, f"{p}TECH")
        self.done = epics_signal_r(bool, f"{p}DONE")
        self.sample_interval = epics_signal_r(float, f"{p}SAMPLE_INTERVAL")

    def _make_buffer_signals(self, p: str) -> None:
        self.buffer_size = epics_signal_r(int, f"{p}BUF:SIZE")
        self.buffer_count = epics_signal_r(int, f"{p}BUF:N")
        self.buffer_seq = epics_signal_r(int, f"{p}BUF:SEQ")
        self.buffer_time = epics_signal_r(_F64, f"{p}BUF:T")
        self.buffer_potential = epics_signal_r(_F64, f"{p}BUF:E")
        self.buffer_current = epics_signal_r(_F64, f"{p}BUF:I")
        self.buffer_charge = epics_signal_r(_F64, f"{p}BUF:Q")
        self.buffer_step = epics_signal_r(Array1D[np.int32], f"{p}BUF:STEP")

    @_reached("step table load")
    async def load(self, protocol: StepTable, window: SafetyWindow) -> None:
        """Write the window and the step table, then ``LOAD``; raise if the IOC refuses."""
        arrays = _encode_steps(protocol)
        await asyncio.gather(
            self.window_min_potential.set(window.min_potential_v),
            self.window_max_potential.set(window.max_potential_v),
            self.window_max_abs_current.set(window.max_abs_current_a),
            self.steps_technique.set(arrays.technique),
            self.steps_setpoint.set(arrays.setpoint),
            self.steps_duration.set(arrays.duration),
            self.steps_min_potential.set(arrays.min_potential),
            self.steps_max_potential.set(arrays.max_potential),
            self.steps_min_abs_current.set(arrays.min_abs_current),
            self.steps_max_abs_charge.set(arrays.max_abs_charge),
            self.steps_labels.set(arrays.labels),
        )
        await self._command(self.load_command, "LOAD")
        self._cursor = await self._consistent_count()

    @_reached("START")
    async def start(self) -> None:
        """``START`` the loaded protocol (the put returns once it runs)."""
        await self._command(self.start_command, "START")

    @_reached("ABORT")
    async def stop(self) -> None:
        """``ABORT``: the IOC leaves the cell at open circuit."""
        await self._command(self.abort_command, "ABORT")

    async def _command(self, command, what: str) -> None:
        try:
            await command.trigger()
        except Exception as err:
            reason = await self.message.get_value()
            raise RuntimeError(f"{self.name}: {what} refused by the IOC: {reason}") from err

    @_reached("status read")
    async def status(self) -> PotentiostatStatus:
        """Read the latest sample and the protocol's progress."""
        values = await asyncio.gather(
            self.time.get_value(),
            self.potential.get_value(),
            self.current.get_value(),
            self.charge.get_value(),
            self.step.get_value(),
            self.elapsed.get_value(),
            self.step_label.get_value(),
            self.technique.get_value(),
            self.done.get_value(),
        )
        time_s, e_v, i_a, q_c, step, elapsed_s, label, technique, done = values
        return PotentiostatStatus(
            sample=PotentiostatSample(time_s, e_v, i_a, q_c, step),
            elapsed_s=elapsed_s,
            step_label=label,
            technique=Technique(technique),
            protocol_done=bool(done),
        )

    @_reached("sample buffer read")
    async def drain(self) -> Sequence[PotentiostatSample]:
        """Every sample the IOC recorded since the previous drain (or `load`), oldest first."""
        count, columns = await self._read_buffer()
        if self._cursor is None:
            self._cursor = count
        new = count - self._cursor
        if new > len(columns[0]):
            raise BufferOverrunError(
                f"{self.name}: {new} samples arrived since the last drain but the IOC buffer "
                f"holds {len(columns[0])}; drain more often or enlarge BUF:SIZE"
            )
        self._cursor = count
        if new <= 0:
            return []
        t, e, i, q, step = (column[len(column) - new :] for column in columns)
        return [
            PotentiostatSample(float(a), float(b), float(c), float(d), int(k))
            for a, b, c, d, k in zip(t, e, i, q, step, strict=True)
        ]

    async def _read_buffer(self) -> tuple[int, list[np.ndarray]]:
        # A sequence lock: the same even BUF:SEQ before and after means one consistent buffer.
        for _ in range(_BUFFER_READ_ATTEMPTS):
            seq = await self.buffer_seq.get_value()
            if seq % 2 == 0:
                # all six at once: one round trip between the two BUF:SEQ reads, not six
                # (the IOC republishes every tick while samples arrive; six sequential reads
                # on a loaded machine outlasted a tick, and no read was ever consistent)
                count, *columns = await asyncio.gather(
                    self.buffer_count.get_value(),
                    self.buffer_time.get_value(),
                    self.buffer_potential.get_value(),
                    self.buffer_current.get_value(),
                    self.buffer_charge.get_value(),
                    self.buffer_step.get_value(),
                )
                if await self.buffer_seq.get_value() == seq:
                    return count, columns
            await asyncio.sleep(self.poll_period_s / 10)
        raise RuntimeError(
            f"{self.name}: no consistent read of the sample buffer in "
            f"{_BUFFER_READ_ATTEMPTS} attempts (the IOC rewrites it too often)"
        )

    async def _consistent_count(self) -> int:
        count, _ = await self._read_buffer()
        return count

    @_reached("wait for DONE")
    async def wait_done(self) -> None:
        """Return when ``DONE`` is set (or at once if no protocol runs)."""
        if await self.state.get_value() != PotentiostatState.RUNNING:
            return
        await wait_for_value(self.done, True, timeout=None)

    @_reached("wait for ELAPSED")
    async def wait_elapsed(self, elapsed_s: float) -> None:
        """Return once ``ELAPSED`` reaches ``elapsed_s`` (s), or the protocol is not running."""
        while await self.state.get_value() == PotentiostatState.RUNNING:
            if await self.done.get_value() or await self.elapsed.get_value() >= elapsed_s:
                return
            await asyncio.sleep(self.poll_period_s)


def epics_potentiostat(
    prefix: str, window: SafetyWindow | None = None, *, name: str = ""
) -> Potentiostat:
    """A `Potentiostat` on the EPICS PV interface under ``prefix`` (e.g. ``"OPMAP:EC:"``).

    Parameters
    ----------
    prefix
        PV prefix ``$(P)`` of the potentiostat IOC.
    window
        Hard safety window checked before any command (and sent to the IOC with the table).
    name
        Device name.
    """
    return Potentiostat(EpicsPotentiostatDriver(prefix), window, name=name)
