"""The map stage: x is the fly axis along the cell, z the step axis across the layers.

Both axes are EPICS motor records whose engineering unit is the micrometre (µm), wrapped so
that opmap's own soft limits (the sample's extent, tighter than the record's) are checked
before any put. `SoftLimits` is shared with the simulated stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ophyd_async.core import StandardReadable
from ophyd_async.epics.motor import Motor, MotorFlyableMovableLogic

__all__ = ["LimitedMotor", "MapStage", "SoftLimitError", "SoftLimits"]


class SoftLimitError(ValueError):
    """A target outside an axis' soft limits; raised before anything moves."""


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

    async def check_move(self, new_position: float) -> None:
        # opmap's limits first (clear ValueError), then the motor record's own.
        if self.soft_limits is not None:
            self.soft_limits.check(new_position)
        await super().check_move(new_position)


class LimitedMotor(Motor):
    """An EPICS motor record (EGU µm) that refuses targets outside `soft_limits`.

    Fly scans check their run-up start and run-down end too (through `check_move`).
    """

    def __init__(self, prefix: str, soft_limits: SoftLimits, name: str = "") -> None:
        self.soft_limits = soft_limits
        super().__init__(prefix, name=name)

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
        )


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
