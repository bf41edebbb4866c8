"""The map stage: x is the fly axis along the cell, z the step axis across the layers.

Both axes are EPICS motor records whose engineering unit is the micrometre (µm), wrapped so
that opmap's own soft limits (the sample's extent, tighter than the record's) are checked
before any put. `SoftLimits` is shared with the simulated stage.

An IOC that dies mid-move
-------------------------
When the stage's IOC disappears (process killed, network cut), Channel Access completes the
pending put to ``.VAL`` with a *disconnect* status. aioca raises it as ``CANothing``, an
exception that is false in a boolean context, and ophyd-async 0.21's ``SignalW.set`` returns
as if the move had succeeded (its put runs inside stamina 26's ``retry_context``, which
drops an exception that is false: checked with a bare falsy exception): the fly line
"completed" with the motor gone. A `LimitedMotor` therefore trusts a finished move only
once its IOC answers for it (``.DMOV`` read back within the signal timeout), and every
operation that times out on a PV raises `AxisUnreachableError` naming the axis and the PV.

Fields read by every move
-------------------------
ophyd-async 0.21's ``Motor`` reads the record's limits, speeds and units before each move
and fly scan: ten Channel Access round trips a fly line, in series. A `LimitedMotor`
monitors the settings it does not write itself once connected
(`LimitedMotor.monitored_fields`, a Channel Access monitor each, as an operator's display
does), so a move reads them from the last update the IOC sent. ``.RBV`` and ``.DMOV`` are
always read from the IOC: a finished move is trusted only once the IOC answers for it
(above).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from bluesky.protocols import Reading
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    DeviceMock,
    FlyMotorInfo,
    SignalR,
    StandardReadable,
    TimeoutCalculator,
)
from ophyd_async.epics.motor import Motor, MotorFlyableMovableLogic, MotorFlyCtx

from ._unreachable import DeviceUnreachableError
from ._unreachable import answered as _answered

__all__ = ["AxisUnreachableError", "LimitedMotor", "MapStage", "SoftLimitError", "SoftLimits"]

T = TypeVar("T")


class SoftLimitError(ValueError):
    """A target outside an axis' soft limits; raised before anything moves."""


class AxisUnreachableError(DeviceUnreachableError):
    """An axis' IOC stopped answering; the message names the axis, the operation and the PV."""


async def axis_answered(axis: str, what: str, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; a PV timeout becomes an `AxisUnreachableError` naming ``axis``
    (`opmap.devices._unreachable.answered` for the stage)."""
    return await _answered(
        axis, what, awaitable, ioc="the stage's IOC", error=AxisUnreachableError
    )


@dataclass(frozen=True)
class SoftLimits:
    """Allowed range of one axis (µm, inclusive).

    Parameters
    ----------
    axis
        The axis name used in error messages, e.g. ``"x"``.
    low_um, high_um
        Lowest and highest allowed position (µm), ``low_um < high_um``.
    """

    axis: str
    low_um: float
    high_um: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low_um) and math.isfinite(self.high_um)):
            raise ValueError(f"axis {self.axis!r}: soft limits must be finite")
        if not self.low_um < self.high_um:
            raise ValueError(
                f"axis {self.axis!r}: low_um={self.low_um} must be below high_um={self.high_um}"
            )

    def check(self, target_um: float, what: str = "target") -> None:
        """Raise `SoftLimitError` naming the axis, target and limits if outside."""
        if not (math.isfinite(target_um) and self.low_um <= target_um <= self.high_um):
            raise SoftLimitError(
                f"axis {self.axis!r}: {what} {target_um} µm is outside the soft limits "
                f"[{self.low_um}, {self.high_um}] µm"
            )


@dataclass
class _LimitedMotorLogic(MotorFlyableMovableLogic):
    soft_limits: SoftLimits | None = None
    precision: SignalR[int] | None = None

    async def get_units_precision(self) -> tuple[str | None, int | None]:
        # .EGU and .PREC (monitored, see LimitedMotor) instead of a describe of .RBV: the
        # same record fields, without a Channel Access round trip per move
        if self.precision is None:
            return await super().get_units_precision()
        units, precision = await asyncio.gather(
            self.motor_egu.get_value(), self.precision.get_value()
        )
        return units, precision

    async def check_move(self, new_position: float) -> None:
        # opmap's limits first (clear ValueError), then the motor record's own.
        if self.soft_limits is not None:
            self.soft_limits.check(new_position)
        await axis_answered(self.readback.name, "limit check", super().check_move(new_position))

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        # a put completed by a disconnect looks like success (module notes): the move is
        # only done once the IOC answers .DMOV
        axis = self.readback.name
        await axis_answered(axis, f"move to {new_position}", super().move(new_position, timeout))
        await axis_answered(axis, f"move to {new_position}", self.motor_done_move.get_value())

    async def on_prepare(self, value: FlyMotorInfo) -> MotorFlyCtx:
        return await axis_answered(self.readback.name, "fly prepare", super().on_prepare(value))

    async def on_kickoff(self, ctx: MotorFlyCtx) -> MotorFlyCtx:
        return await axis_answered(self.readback.name, "fly kickoff", super().on_kickoff(ctx))

    async def on_complete(self, ctx: MotorFlyCtx) -> None:
        await axis_answered(self.readback.name, "fly line", super().on_complete(ctx))


class LimitedMotor(Motor):
    """An EPICS motor record (EGU µm) that refuses targets outside `soft_limits`.

    Fly scans check their run-up start and run-down end too (through `check_move`).
    """

    def __init__(self, prefix: str, soft_limits: SoftLimits, name: str = "") -> None:
        self.soft_limits = soft_limits
        super().__init__(prefix, name=name)

    def monitored_fields(self) -> tuple[SignalR, ...]:
        """The record's settings a move reads (limits, ramp, top speed, units): monitored
        once connected (see the module notes). Not ``.RBV``, ``.DMOV`` nor ``.VELO``: a
        fly scan writes ``.VELO`` and reads it back at once, and a monitor's update of a
        put may come after the put's completion (the timeout of the line then assumed
        the speed before)."""
        return (
            self.low_limit_travel, self.high_limit_travel, self.dial_low_limit_travel,
            self.dial_high_limit_travel, self.acceleration_time, self.max_velocity,
            self.motor_egu, self.precision,
        )  # fmt: skip

    async def connect(
        self,
        mock: bool | DeviceMock = False,
        timeout: float = DEFAULT_TIMEOUT,
        force_reconnect: bool = False,
    ) -> None:
        """Connect, then monitor `monitored_fields` (reads of them use the monitor's value)."""
        await super().connect(mock=mock, timeout=timeout, force_reconnect=force_reconnect)
        await asyncio.gather(*(field.stage() for field in self.monitored_fields()))

    @cached_property
    def _logic(self) -> _LimitedMotorLogic:
        return _LimitedMotorLogic(
            readback=self.user_readback,
            setpoint=self.user_setpoint,
            motor_stop=self.motor_stop,
            low_limit_travel=self.low_limit_travel,
            high_limit_travel=self.high_limit_travel,
            dial_low_limit_travel=self.dial_low_limit_travel,
            dial_high_limit_travel=self.dial_high_limit_travel,
            velocity=self.velocity,
            acceleration_time=self.acceleration_time,
            motor_done_move=self.motor_done_move,
            max_velocity=self.max_velocity,
            motor_egu=self.motor_egu,
            soft_limits=self.soft_limits,
            precision=self.precision,
        )

    async def read(self) -> dict[str, Reading]:
        """The readback (and hinted signals); `AxisUnreachableError` if the IOC is gone."""
        return await axis_answered(self.name, "read", super().read())


class MapStage(StandardReadable):
    """Sample stage of the mapping: ``x`` flies along the cell, ``z`` steps in height.

    Parameters
    ----------
    prefix
        PV prefix; the axes are ``{prefix}X`` and ``{prefix}Z``.
    x_limits_um, z_limits_um
        Soft limits (µm) of each axis, sample coordinates.
    name
        Device name.
    """

    def __init__(
        self,
        prefix: str,
        *,
        x_limits_um: tuple[float, float] = (-200.0, 2200.0),
        z_limits_um: tuple[float, float] = (-20.0, 60.0),
        name: str = "",
    ) -> None:
        with self.add_children_as_readables():
            self.x = LimitedMotor(f"{prefix}X", SoftLimits("x", *x_limits_um))
            self.z = LimitedMotor(f"{prefix}Z", SoftLimits("z", *z_limits_um))
        super().__init__(name=name)
