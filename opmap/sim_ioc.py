# caproto's idiom redefines each pvproperty as its putter/startup hook (same name)
# mypy: disable-error-code="no-redef"
"""A simulated beamline IOC: the twin's potentiostat, the map stage and the beam over EPICS CA.

``opmap sim-ioc`` serves, with caproto's asyncio Channel Access server, under a prefix
``$(P)`` (default ``OPMAP:``):

- ``$(P)EC:...``: the potentiostat PV interface of `opmap.devices.epics_potentiostat`
  (step table, safety window, commands, readbacks, a gapless sample buffer), driven by the
  twin's electrochemistry (`opmap.twin.electrochem.CellElectrochemistry`) through the
  simulated potentiostat driver of `opmap.devices.sim`, on a real-time or accelerated clock
  (``speedup`` experiment seconds per wall second);
- ``$(P)STAGE:X`` and ``$(P)STAGE:Z``: motor-record-like PV sets with every field
  ophyd-async's ``Motor`` connects (``.VAL``, ``.RBV``, ``.DMOV``, ``.VELO`` ...); a put to
  ``.VAL`` completes when the trapezoidal move (``.VELO``, ``.ACCL``, in wall time) ends, a
  target outside ``.LLM``/``.HLM`` is refused as the motor record does (``.LVIO`` = 1, no
  motion), ``.STOP`` = 1 stops at once;
- ``$(P)BEAM:CURRENT`` (ring current, mA) and the shutter ``$(P)BEAM:SHUTTER:Cmd`` /
  ``$(P)BEAM:SHUTTER:Pos-Sts`` (``Open`` / ``Closed``), as `opmap.devices.BeamMonitor` reads.

The PV table is in ``docs/real-hardware.md`` ("Potentiostat, stage and beam over EPICS").
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.asyncio.server import Context
from caproto.server import PVGroup, pvproperty

from opmap.devices import ProtocolError, ProtocolStep, SafetyWindow, StepTable
from opmap.devices.epics_potentiostat import LABEL_MAX_CHARS, MAX_STEPS, TECHNIQUE_CODES
from opmap.devices.potentiostat import PotentiostatState
from opmap.devices.sim import (
    ClockMode,
    SamplePosition,
    SimClock,
    SimPotentiostatDriver,
    SimSampleChanger,
    Trajectory,
)
from opmap.twin import TwinConfig
from opmap.twin.electrochem import CellElectrochemistry

__all__ = [
    "BUFFER_SIZE",
    "RBV_PERIOD_S",
    "AxisConfig",
    "BeamPVs",
    "CaServerContext",
    "IocGroups",
    "IocOptions",
    "MotorRecordPVs",
    "PotentiostatPVs",
    "SamplePVs",
    "build_groups",
    "build_pvdb",
    "serve_pvdb",
]

#: Samples held by the ``EC:BUF:*`` waveforms (their NELM; ``EC:BUF:SIZE``).
BUFFER_SIZE = 4096
#: Shortest wall time (s) between two rewrites of the ``EC:BUF:*`` waveforms. Rewritten
#: every tick (50 ms), the five full waveforms (160 kB) changed faster than a client on a
#: loaded machine could read them, and its sequence-locked read never saw one buffer; new
#: samples wait here meanwhile, and go out at once when the protocol ends or is aborted.
BUFFER_PUBLISH_S = 0.5
#: Wall time (s) between two ``.RBV`` updates of a moving simulated motor record (its
#: readback rate); the last update, with ``.DMOV`` = 1, comes when the move ends.
RBV_PERIOD_S = 0.02
logger = logging.getLogger(__name__)
_STATES = [state.value for state in PotentiostatState]
_TECHNIQUES = [technique.value for technique in TECHNIQUE_CODES]


@dataclass(frozen=True)
class IocOptions:
    """What the simulated IOC serves and how fast its electrochemistry runs.

    Parameters
    ----------
    prefix
        PV prefix ``$(P)`` (non-empty, no spaces).
    seed
        Seed of the ring-current noise.
    speedup
        Experiment seconds per wall second of the electrochemistry (> 0; 1 = real time).
    sample_interval_s
        Potentiostat sampling period (s of experiment time, > 0).
    tick_s
        Wall-clock period (s) of the readback and buffer updates.
    twin_config
        A `TwinConfig` TOML/YAML file (its ``electrochem`` section), or the defaults.
    ring_current_ma
        Stored-beam current (mA, > 0).
    """

    prefix: str = "OPMAP:"
    seed: int = 0
    speedup: float = 1.0
    sample_interval_s: float = 1.0
    tick_s: float = 0.05
    twin_config: Path | None = None
    ring_current_ma: float = 200.0

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"prefix={self.prefix!r} must be non-empty, without spaces")
        for name in ("speedup", "sample_interval_s", "tick_s", "ring_current_ma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value} must be a finite number > 0")


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _f64_waveform(name: str, value: float, doc: str, units: str) -> pvproperty:
    return pvproperty(
        value=[value], dtype=ChannelType.DOUBLE, max_length=MAX_STEPS, name=name, doc=doc,
        units=units,
    )  # fmt: skip


def _buffer(name: str, dtype: ChannelType, doc: str, units: str = "") -> pvproperty:
    return pvproperty(
        value=[0], dtype=dtype, max_length=BUFFER_SIZE, name=name, doc=doc, units=units,
        read_only=True,
    )  # fmt: skip


class PotentiostatPVs(PVGroup):
    """The potentiostat PV interface (``$(P)EC:``) on the twin's electrochemistry.

    Parameters
    ----------
    prefix
        Full PV prefix of the group, e.g. ``"OPMAP:EC:"``.
    driver
        The simulated potentiostat driver (model + clock) the PVs drive.
    options
        The IOC options (tick).
    """

    steps_technique = pvproperty(
        value=[0], dtype=ChannelType.LONG, max_length=MAX_STEPS, name="STEPS:TECH",
        doc="technique code per step: " + ", ".join(f"{i} {t}" for i, t in enumerate(_TECHNIQUES)),
    )  # fmt: skip
    steps_setpoint = _f64_waveform(
        "STEPS:SETPOINT", 0.0, "setpoint per step (V for CV, A for CC)", ""
    )
    steps_duration = _f64_waveform("STEPS:DURATION", 1.0, "max duration per step", "s")
    steps_vmin = _f64_waveform("STEPS:VMIN", math.nan, "potential cut-off below, NaN = none", "V")
    steps_vmax = _f64_waveform("STEPS:VMAX", math.nan, "potential cut-off above, NaN = none", "V")
    steps_imin = _f64_waveform(
        "STEPS:IMIN", math.nan, "CV ends when |I| falls below, NaN = none", "A"
    )
    steps_qmax = _f64_waveform(
        "STEPS:QMAX", math.nan, "step ends at |Q| in the step, NaN = none", "C"
    )
    steps_labels = pvproperty(
        value=[""], dtype=ChannelType.STRING, max_length=MAX_STEPS, name="STEPS:LABELS"
    )
    win_vmin = pvproperty(value=2.5, name="WIN:VMIN", units="V", precision=4)
    win_vmax = pvproperty(value=4.4, name="WIN:VMAX", units="V", precision=4)
    win_imax = pvproperty(value=100e-6, name="WIN:IMAX", units="A", precision=9)
    load = pvproperty(value=0, name="LOAD", doc="write 1: validate and load the step table")
    start = pvproperty(value=0, name="START", doc="write 1: start the loaded protocol")
    abort = pvproperty(value=0, name="ABORT", doc="write 1: abort, cell at open circuit")
    state = pvproperty(
        value="idle", enum_strings=_STATES, dtype=ChannelType.ENUM, name="STATE", read_only=True
    )
    message = pvproperty(
        value="", dtype=ChannelType.CHAR, max_length=512, report_as_string=True, name="MSG",
        read_only=True,
    )  # fmt: skip
    potential = pvproperty(value=0.0, name="E", units="V", precision=5, read_only=True)
    current = pvproperty(value=0.0, name="I", units="A", precision=10, read_only=True)
    charge = pvproperty(value=0.0, name="Q", units="C", precision=8, read_only=True)
    time_s = pvproperty(value=0.0, name="TIME", units="s", precision=3, read_only=True)
    elapsed = pvproperty(value=0.0, name="ELAPSED", units="s", precision=3, read_only=True)
    protocol_start = pvproperty(
        value=math.nan, name="PROTOCOL_START", units="s", precision=3, read_only=True
    )
    step = pvproperty(value=-1, name="STEP", read_only=True)
    step_label = pvproperty(value="", dtype=ChannelType.STRING, name="STEP_LABEL", read_only=True)
    technique = pvproperty(
        value=_TECHNIQUES[0], enum_strings=_TECHNIQUES, dtype=ChannelType.ENUM, name="TECH",
        read_only=True,
    )  # fmt: skip
    done = pvproperty(value=False, name="DONE", read_only=True)
    sample_interval = pvproperty(
        value=1.0, name="SAMPLE_INTERVAL", units="s", precision=3, read_only=True
    )
    buffer_size = pvproperty(value=0, name="BUF:SIZE", read_only=True)
    buffer_count = pvproperty(value=0, name="BUF:N", read_only=True)
    buffer_seq = pvproperty(value=0, name="BUF:SEQ", read_only=True)
    buffer_time = _buffer("BUF:T", ChannelType.DOUBLE, "sample times (instrument clock)", "s")
    buffer_potential = _buffer("BUF:E", ChannelType.DOUBLE, "sample potentials", "V")
    buffer_current = _buffer("BUF:I", ChannelType.DOUBLE, "sample currents", "A")
    buffer_charge = _buffer("BUF:Q", ChannelType.DOUBLE, "sample charges", "C")
    buffer_step = _buffer("BUF:STEP", ChannelType.LONG, "sample step indices")

    def __init__(
        self, prefix: str, *, driver: SimPotentiostatDriver, options: IocOptions, **kwargs: Any
    ) -> None:
        self.driver = driver
        self.options = options
        self._columns: tuple[deque, ...] = tuple(deque(maxlen=BUFFER_SIZE) for _ in range(5))
        self._count = 0
        self._seq = 0
        self._unpublished: list = []  # samples waiting for the next rewrite of EC:BUF:*
        self._published_at_s = -math.inf  # time.monotonic() of the last rewrite
        self._running = False
        # one update at a time (the tick and ABORT both update): samples stay in order and
        # the buffer's sequence lock stays odd for the whole rewrite
        self._update_lock = asyncio.Lock()
        super().__init__(prefix, **kwargs)

    @load.putter
    async def load(self, instance: Any, value: int) -> int:
        """Validate the step table against the window, then load it (refused while running)."""
        try:
            if self._running:
                raise ProtocolError("a protocol is running: ABORT it first")
            window = SafetyWindow(self.win_vmin.value, self.win_vmax.value, self.win_imax.value)
            table = self._step_table()
            table.check(window)
        except ProtocolError as err:
            await self.message.write(f"LOAD refused: {err}")
            raise
        await self.driver.load(table, window)
        await self.state.write(PotentiostatState.LOADED.value)
        await self.message.write(f"loaded {len(table.steps)} steps")
        return value

    def _step_table(self) -> StepTable:
        columns = [
            list(prop.value)
            for prop in (
                self.steps_technique, self.steps_setpoint, self.steps_duration, self.steps_vmin,
                self.steps_vmax, self.steps_imin, self.steps_qmax, self.steps_labels,
            )
        ]  # fmt: skip
        if len({len(column) for column in columns}) != 1:
            lengths = ", ".join(str(len(column)) for column in columns)
            raise ProtocolError(f"the STEPS:* waveforms have different lengths ({lengths})")
        steps = []
        for code, setpoint, duration, vmin, vmax, imin, qmax, label in zip(*columns, strict=True):
            if not 0 <= code < len(TECHNIQUE_CODES):
                raise ProtocolError(f"STEPS:TECH code {code} is not one of 0..{len(_TECHNIQUES)}")
            steps.append(
                ProtocolStep(
                    TECHNIQUE_CODES[code],
                    float(duration),
                    setpoint=float(setpoint),
                    min_potential_v=_nan_to_none(vmin),
                    max_potential_v=_nan_to_none(vmax),
                    min_abs_current_a=_nan_to_none(imin),
                    max_abs_charge_c=_nan_to_none(qmax),
                    label=str(label),
                )
            )
        return StepTable(tuple(steps))

    @start.putter
    async def start(self, instance: Any, value: int) -> int:
        """Start the loaded protocol."""
        if self.state.value != PotentiostatState.LOADED.value:
            await self.message.write(f"START refused: state is {self.state.value!r}, not loaded")
            raise ProtocolError(f"START needs a loaded protocol, the state is {self.state.value}")
        await self.driver.start()
        self._running = True
        await self.protocol_start.write(self.driver.clock.now_s())
        await self.state.write(PotentiostatState.RUNNING.value)
        await self.message.write("running")
        return value

    @abort.putter
    async def abort(self, instance: Any, value: int) -> int:
        """Abort any protocol: the cell goes to open circuit."""
        await self.driver.stop()
        self._running = False
        await self.state.write(PotentiostatState.OPEN_CIRCUIT.value)
        await self.message.write("aborted: open circuit")
        await self._update(flush=True)
        return value

    @state.startup
    async def state(self, instance: Any, async_lib: Any) -> None:
        """Publish readbacks and new samples every ``tick_s`` of wall time."""
        await self.sample_interval.write(self.driver.sample_interval_s)
        await self.buffer_size.write(BUFFER_SIZE)
        while True:
            try:
                await self._update()
            except Exception as err:  # keep serving; say so on MSG and in the log
                logger.exception("potentiostat update failed")
                await self.message.write(f"IOC update failed: {err!r}")
            await asyncio.sleep(self.options.tick_s)

    async def _update(self, *, flush: bool = False) -> None:
        async with self._update_lock:
            await self._update_unlocked(flush)

    async def _update_unlocked(self, flush: bool) -> None:
        status = await self.driver.status()
        self._unpublished += await self.driver.drain()
        now_s = time.monotonic()
        ending = status.protocol_done and self._running  # the update that sets DONE
        due = flush or ending or now_s - self._published_at_s >= BUFFER_PUBLISH_S
        if self._unpublished and due:  # before DONE: a client seeing it finds every sample
            samples, self._unpublished = self._unpublished, []
            self._published_at_s = now_s
            await self._publish(samples)
        sample = status.sample
        await self.time_s.write(sample.time_s)
        await self.potential.write(sample.potential_v)
        await self.current.write(sample.current_a)
        await self.charge.write(sample.charge_c)
        await self.step.write(sample.step_index)
        await self.step_label.write(status.step_label[:LABEL_MAX_CHARS])
        await self.technique.write(status.technique.value)
        await self.done.write(status.protocol_done)
        if self._running:
            await self.elapsed.write(status.elapsed_s)
        if self._running and status.protocol_done:
            self._running = False
            await self.state.write(PotentiostatState.DONE.value)
            reason = getattr(self.driver.model, "stop_reason", "")
            await self.message.write(f"done: {reason}" if reason else "done")

    async def _publish(self, samples: list) -> None:
        for sample in samples:
            for column, key in zip(self._columns, _SAMPLE_FIELDS, strict=True):
                column.append(getattr(sample, key))
        self._count += len(samples)
        self._seq += 1  # odd: readers retry
        await self.buffer_seq.write(self._seq)
        for prop, column in zip(self._buffer_props(), self._columns, strict=True):
            await prop.write(list(column))
        await self.buffer_count.write(self._count)
        self._seq += 1
        await self.buffer_seq.write(self._seq)

    def _buffer_props(self) -> tuple[Any, ...]:
        return (
            self.buffer_time, self.buffer_potential, self.buffer_current, self.buffer_charge,
            self.buffer_step,
        )  # fmt: skip


_SAMPLE_FIELDS = ("time_s", "potential_v", "current_a", "charge_c", "step_index")


@dataclass(frozen=True)
class AxisConfig:
    """One simulated motor axis: its ``.DESC``, limits (µm), speeds (µm/s) and ramp (s).

    Parameters
    ----------
    description
        The record's ``.DESC``.
    low_um, high_um
        ``.LLM`` / ``.HLM`` (µm).
    velocity_um_s, max_velocity_um_s
        ``.VELO`` at start-up and ``.VMAX`` (µm/s).
    acceleration_s
        ``.ACCL``: time to reach ``.VELO`` (s).
    """

    description: str
    low_um: float
    high_um: float
    velocity_um_s: float = 2000.0
    max_velocity_um_s: float = 5000.0
    acceleration_s: float = 0.1


def _field(value: Any, name: str, **kwargs: Any) -> pvproperty:
    return pvproperty(value=value, name=name, **kwargs)


class MotorRecordPVs(PVGroup):
    """The motor-record fields ophyd-async's ``Motor`` uses, for one axis (EGU µm, as ``um``).

    Parameters
    ----------
    prefix
        The record name, e.g. ``"OPMAP:STAGE:X"`` (fields are ``.VAL``, ``.RBV`` ...).
    axis
        Limits, speeds and description of the axis.
    clock
        Wall-clock seconds (monotonic) the moves are timed in; `position_at_um` answers in
        the same time base. Default `time.monotonic`.
    """

    #: Moves older than this (s of ``clock``) are forgotten by `position_at_um`.
    HISTORY_S = 3600.0

    val = _field(0.0, ".VAL", units="um", precision=3, doc="user setpoint")
    rbv = _field(0.0, ".RBV", units="um", precision=3, read_only=True, doc="user readback")
    dval = _field(0.0, ".DVAL", units="um", precision=3, read_only=True)
    drbv = _field(0.0, ".DRBV", units="um", precision=3, read_only=True)
    dmov = _field(1, ".DMOV", read_only=True, doc="1 when done moving")
    movn = _field(0, ".MOVN", read_only=True, doc="1 while moving")
    stop = _field(0, ".STOP", doc="write 1 to stop")
    velo = _field(2000.0, ".VELO", units="um/s", precision=3)
    vmax = _field(5000.0, ".VMAX", units="um/s", precision=3, read_only=True)
    accl = _field(0.1, ".ACCL", units="s", precision=3)
    hlm = _field(0.0, ".HLM", units="um", precision=3)
    llm = _field(0.0, ".LLM", units="um", precision=3)
    dhlm = _field(0.0, ".DHLM", units="um", precision=3)
    dllm = _field(0.0, ".DLLM", units="um", precision=3)
    lvio = _field(0, ".LVIO", read_only=True, doc="1 after a target outside the limits")
    hls = _field(0, ".HLS", read_only=True)
    lls = _field(0, ".LLS", read_only=True)
    egu = _field("um", ".EGU", dtype=ChannelType.STRING, read_only=True)
    desc = _field("", ".DESC", dtype=ChannelType.STRING)
    mres = _field(0.001, ".MRES", units="um", precision=4, read_only=True)
    eres = _field(0.001, ".ERES", units="um", precision=4, read_only=True)
    srev = _field(200, ".SREV", read_only=True)
    urev = _field(0.2, ".UREV", units="um", precision=4, read_only=True)
    prec = _field(3, ".PREC", read_only=True)
    rdbd = _field(0.001, ".RDBD", units="um", precision=4, read_only=True)
    off = _field(0.0, ".OFF", units="um", precision=3)
    foff = _field("Variable", ".FOFF", enum_strings=["Variable", "Frozen"], dtype=ChannelType.ENUM)
    set_mode = _field("Use", ".SET", enum_strings=["Use", "Set"], dtype=ChannelType.ENUM)
    out = _field("opmap sim-ioc", ".OUT", dtype=ChannelType.STRING, read_only=True)

    def __init__(
        self,
        prefix: str,
        *,
        axis: AxisConfig,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        self.axis = axis
        self.clock = clock
        self._motion: asyncio.Task | None = None
        # every move since start-up (a hold for a stop), by start time: where the axis was
        # at any past time, for a detector rendering frames after their exposure
        self._moves: list[Trajectory] = [Trajectory(clock(), 0.0, 0.0, 1.0, 0.0)]
        self._move_starts_s: list[float] = [self._moves[0].t0_s]
        super().__init__(prefix, **kwargs)

    def position_at_um(self, time_s: float) -> float:
        """Where the axis was (µm) at ``time_s`` of `clock` (the trajectory ``.RBV`` samples).

        Before the oldest move kept it answers that move's start.
        """
        i = max(bisect.bisect_right(self._move_starts_s, time_s) - 1, 0)
        return self._moves[i].position_at_um(time_s)

    def _remember(self, trajectory: Trajectory) -> None:
        # a move starting now supersedes any later part of the previous one
        self._moves.append(trajectory)
        self._move_starts_s.append(trajectory.t0_s)
        old = bisect.bisect_left(self._move_starts_s, trajectory.t0_s - self.HISTORY_S)
        if old > 1:  # keep the move in force at the cut
            del self._moves[: old - 1], self._move_starts_s[: old - 1]

    @desc.startup
    async def desc(self, instance: Any, async_lib: Any) -> None:
        """Write the axis' configuration at start-up."""
        a = self.axis
        await self.desc.write(a.description)
        for prop, value in (
            (self.hlm, a.high_um), (self.dhlm, a.high_um), (self.llm, a.low_um),
            (self.dllm, a.low_um), (self.velo, a.velocity_um_s),
            (self.vmax, a.max_velocity_um_s), (self.accl, a.acceleration_s),
        ):  # fmt: skip
            await prop.write(value)

    @val.putter
    async def val(self, instance: Any, value: float) -> float:
        """Move to ``value`` (µm); the put completes when the move ends or is stopped."""
        if not self.llm.value <= value <= self.hlm.value:
            await self.lvio.write(1)  # the motor record refuses, VAL keeps its old value
            return self.val.value
        await self.lvio.write(0)
        await self._cancel_motion()
        now_s = self.clock()
        start = self.position_at_um(now_s)
        trajectory = Trajectory.plan(
            now_s, start, value, abs(self.velo.value), max(self.accl.value, 0.0)
        )
        self._remember(trajectory)
        self._motion = motion = asyncio.ensure_future(self._follow(trajectory))
        await self.dval.write(value)
        await asyncio.wait([motion])
        # stopped (or superseded) on the way: VAL shows where the axis stopped
        return self.rbv.value if motion.cancelled() else value

    async def _follow(self, trajectory: Trajectory) -> None:
        await self.dmov.write(0)
        await self.movn.write(1)
        end_s = trajectory.t0_s + trajectory.duration_s
        try:
            while (now := self.clock()) < end_s:
                await self._readback(trajectory.position_at_um(now))
                # RBV every tick while moving; the move ends when its trajectory does, not
                # on the tick after (that made every move up to a tick late)
                await asyncio.sleep(min(RBV_PERIOD_S, end_s - now))
            await self._readback(trajectory.end_um)
        finally:
            await self.movn.write(0)
            await self.dmov.write(1)

    async def _readback(self, position_um: float) -> None:
        await self.rbv.write(position_um)
        await self.drbv.write(position_um)

    async def _cancel_motion(self) -> None:
        motion, self._motion = self._motion, None
        if motion is not None and not motion.done():
            motion.cancel()
            await asyncio.wait([motion])

    @stop.putter
    async def stop(self, instance: Any, value: int) -> int:
        """Writing 1 stops the axis where it is (the pending ``.VAL`` put then completes)."""
        if value:
            await self._cancel_motion()
            now_s = self.clock()
            here_um = self.position_at_um(now_s)
            self._remember(Trajectory(now_s, here_um, here_um, 1.0, 0.0))
            await self._readback(here_um)
            await self.val.write(self.rbv.value, verify_value=False)
            await self.dval.write(self.rbv.value)
        return 0

    @off.putter
    async def off(self, instance: Any, value: float) -> float:
        """User offsets are not simulated (user = dial): only 0 is accepted."""
        if value != 0:
            raise ValueError("opmap sim-ioc: the motor offset .OFF is fixed at 0")
        return value

    @set_mode.putter
    async def set_mode(self, instance: Any, value: str) -> str:
        """Only ``Use`` (moves) is simulated; ``Set`` (redefine position) is refused."""
        if value != "Use":
            raise ValueError("opmap sim-ioc: .SET 'Set' (redefine the position) is not simulated")
        return value


class BeamPVs(PVGroup):
    """Ring current (mA) and experiment shutter (``$(P)BEAM:``).

    Parameters
    ----------
    prefix
        Full PV prefix of the group, e.g. ``"OPMAP:BEAM:"``.
    options
        The IOC options (ring current, seed, tick).
    """

    current = pvproperty(value=0.0, name="CURRENT", units="mA", precision=3, read_only=True)
    shutter_cmd = pvproperty(
        value="Closed", enum_strings=["Open", "Closed"], dtype=ChannelType.ENUM,
        name="SHUTTER:Cmd",
    )  # fmt: skip
    shutter_status = pvproperty(
        value="Closed", enum_strings=["Open", "Closed"], dtype=ChannelType.ENUM,
        name="SHUTTER:Pos-Sts", read_only=True,
    )  # fmt: skip

    def __init__(self, prefix: str, *, options: IocOptions, **kwargs: Any) -> None:
        self.options = options
        self._rng = np.random.default_rng(options.seed)
        super().__init__(prefix, **kwargs)

    @current.startup
    async def current(self, instance: Any, async_lib: Any) -> None:
        """Publish the ring current (0.01 % rms noise) every ``tick_s``."""
        while True:
            noise = 1.0 + 1e-4 * self._rng.standard_normal()
            await self.current.write(self.options.ring_current_ma * noise)
            await asyncio.sleep(self.options.tick_s)

    @shutter_cmd.putter
    async def shutter_cmd(self, instance: Any, value: str) -> str:
        """Move the shutter (0.1 s); the put completes when ``Pos-Sts`` shows it."""
        await asyncio.sleep(0.1)
        await self.shutter_status.write(value)
        return value


class SamplePVs(PVGroup):
    """What sits in the beam (``$(P)SAMPLE:POS``): the cell or a calibrant powder.

    Served by ``opmap sim-beamline`` only, where the DCU renders what the changer holds.

    Parameters
    ----------
    prefix
        Full PV prefix of the group, e.g. ``"OPMAP:SAMPLE:"``.
    changer
        The simulated changer whose ``current`` the frame renderer consults.
    """

    position = pvproperty(
        value=SamplePosition.CELL.value, enum_strings=[p.value for p in SamplePosition],
        dtype=ChannelType.ENUM, name="POS", doc="sample in the beam",
    )  # fmt: skip

    def __init__(self, prefix: str, *, changer: SimSampleChanger, **kwargs: Any) -> None:
        self.changer = changer
        super().__init__(prefix, **kwargs)

    @position.putter
    async def position(self, instance: Any, value: str) -> str:
        """Put ``value`` in the beam (at once, as the in-process simulation does)."""
        self.changer.current = SamplePosition(value)
        return value


@dataclass
class IocGroups:
    """The PV groups of one simulated IOC (`build_groups`)."""

    potentiostat: PotentiostatPVs
    x: MotorRecordPVs
    z: MotorRecordPVs
    beam: BeamPVs
    extra: tuple[PVGroup, ...] = ()

    @property
    def pvdb(self) -> dict[str, Any]:
        """The caproto PV database (name -> channel data) of every group."""
        pvdb: dict[str, Any] = {}
        for group in (self.potentiostat, self.x, self.z, self.beam, *self.extra):
            pvdb.update(group.pvdb)
        return pvdb


def build_groups(
    options: IocOptions,
    driver: SimPotentiostatDriver,
    *,
    motor_clock: Callable[[], float] = time.monotonic,
    extra: tuple[PVGroup, ...] = (),
) -> IocGroups:
    """The IOC's PV groups around a potentiostat ``driver``; stage moves timed by ``motor_clock``.

    Parameters
    ----------
    options
        Prefix, tick, ring current, seed.
    driver
        The simulated potentiostat driver (model + clock) behind ``$(P)EC:``.
    motor_clock
        Wall-clock seconds the motor records time their moves in.
    extra
        More PV groups to serve (e.g. `SamplePVs`).
    """
    p = options.prefix
    x_axis = AxisConfig("map stage x (fly)", -200.0, 2200.0)
    # the in-process simulated stage's speeds (opmap.devices.sim.SimMapStage), so a map
    # over the network moves as it does in process
    z_axis = AxisConfig("map stage z (step)", -20.0, 60.0, 100.0, 500.0)
    return IocGroups(
        potentiostat=PotentiostatPVs(f"{p}EC:", driver=driver, options=options),
        x=MotorRecordPVs(f"{p}STAGE:X", axis=x_axis, clock=motor_clock),
        z=MotorRecordPVs(f"{p}STAGE:Z", axis=z_axis, clock=motor_clock),
        beam=BeamPVs(f"{p}BEAM:", options=options),
        extra=extra,
    )


def build_pvdb(options: IocOptions) -> tuple[dict[str, Any], PotentiostatPVs]:
    """Every PV of the simulated IOC, and its potentiostat group.

    Parameters
    ----------
    options
        What to serve (see `IocOptions`).

    Returns
    -------
    pvdb, potentiostat
        The caproto PV database (name -> channel data) and the potentiostat PV group.
    """
    twin = (
        TwinConfig() if options.twin_config is None else TwinConfig.from_file(options.twin_config)
    )
    mode = ClockMode.REAL_TIME if options.speedup == 1.0 else ClockMode.ACCELERATED
    clock = SimClock(mode, speedup=options.speedup)
    driver = SimPotentiostatDriver(
        CellElectrochemistry(twin.electrochem), clock, sample_interval_s=options.sample_interval_s
    )
    groups = build_groups(options, driver)
    return groups.pvdb, groups.potentiostat


class CaServerContext(Context):
    """caproto's asyncio Channel Access server with Nagle's algorithm off on every client
    circuit (``TCP_NODELAY``), as an EPICS IOC's server (rsrv) sets it.

    caproto accepts clients on a socket created with protocol 0, on whose connections
    asyncio does not set ``TCP_NODELAY``. A reply written while an earlier segment is
    unacknowledged (a monitor update, then a get's answer) then waits for the client's
    delayed ACK: 25-45 ms per round trip on Linux, measured on the map stage's moves.
    """

    async def tcp_handler(self, client: Any, addr: Any) -> None:
        """Serve one client circuit, its socket without Nagle's algorithm."""
        sock = client.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await super().tcp_handler(client, addr)


def serve_pvdb(
    pvdb: dict[str, Any], interfaces: list[str], startup_hook: Callable[[Any], Any] | None = None
) -> None:
    """Serve ``pvdb`` over Channel Access on ``interfaces`` until interrupted (a
    `CaServerContext`; caproto's ``run`` with Nagle's algorithm off).

    Parameters
    ----------
    pvdb
        The caproto PV database (name -> channel data).
    interfaces
        Addresses to serve on, e.g. ``["127.0.0.1"]``.
    startup_hook
        Awaited with caproto's async library shim once the sockets are bound.
    """

    async def serve() -> None:
        await CaServerContext(pvdb, interfaces).run(startup_hook=startup_hook)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:  # Ctrl-C is how an operator stops the IOC: a normal exit
        return
