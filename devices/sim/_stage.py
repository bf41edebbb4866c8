"""Simulated map stage: trapezoidal moves on the simulation clock.

The position of an axis is a pure function of experiment time (`SimAxis.position_at_um`),
so the simulated detector can ask where the beam was during each exposure.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from functools import cached_property

from ophyd_async.core import (
    FlyableLogic,
    FlyMotorInfo,
    MovableLogic,
    StandardFlyable,
    StandardMovable,
    StandardReadable,
    TimeoutCalculator,
    error_if_none,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format

from opmap.devices.stage import SoftLimits

from ._clock import SimClock

__all__ = ["SimAxis", "SimMapStage", "Trajectory"]

#: Readback update period during a move (s of experiment time).
_UPDATE_PERIOD_S = 0.1


@dataclass(frozen=True)
class Trajectory:
    """A symmetric trapezoidal move from ``start_um`` to ``end_um`` starting at ``t0_s``.

    The axis accelerates uniformly for ``ramp_s``, cruises at ``peak_velocity_um_s`` and
    decelerates for ``ramp_s``. When the move is too short to reach the requested speed the
    profile is a triangle: the distance covered in the ramps (v·t_ramp, two triangles of
    area v·t_ramp/2) equals the whole move, so v_peak = sqrt(|d|·v/t_acc), t_ramp = |d|/v_peak.
    """

    t0_s: float
    start_um: float
    end_um: float
    peak_velocity_um_s: float
    ramp_s: float

    @classmethod
    def plan(
        cls, t0_s: float, start_um: float, end_um: float, velocity_um_s: float, accel_s: float
    ) -> Trajectory:
        """Trajectory at cruise speed ``velocity_um_s`` with ramps of ``accel_s``."""
        distance = abs(end_um - start_um)
        if distance == 0 or accel_s == 0:
            return cls(t0_s, start_um, end_um, velocity_um_s, 0.0)
        if velocity_um_s * accel_s >= distance:
            peak = math.sqrt(distance * velocity_um_s / accel_s)
            return cls(t0_s, start_um, end_um, peak, distance / peak)
        return cls(t0_s, start_um, end_um, velocity_um_s, accel_s)

    @property
    def duration_s(self) -> float:
        """Total move time (s): two ramps plus the cruise."""
        distance = abs(self.end_um - self.start_um)
        if distance == 0:
            return 0.0
        cruise_um = distance - self.peak_velocity_um_s * self.ramp_s
        return 2 * self.ramp_s + cruise_um / self.peak_velocity_um_s

    def position_at_um(self, time_s: float) -> float:
        """Position (µm) at experiment time ``time_s``; clamped before and after the move."""
        t = min(max(time_s - self.t0_s, 0.0), self.duration_s)
        sign = math.copysign(1.0, self.end_um - self.start_um)
        v, ramp, total = self.peak_velocity_um_s, self.ramp_s, self.duration_s
        if t >= total:
            return self.end_um
        if t <= ramp:  # accelerating: area of the triangle under v(t)
            return self.start_um + sign * v * t * t / (2 * ramp)
        if t >= total - ramp:  # decelerating, measured back from the end
            left = total - t
            return self.end_um - sign * v * left * left / (2 * ramp)
        return self.start_um + sign * v * (ramp / 2 + (t - ramp))


@dataclass
class _FlyCtx:
    info: FlyMotorInfo
    task: asyncio.Task | None = None


@dataclass
class SimAxisLogic(MovableLogic[float], FlyableLogic[FlyMotorInfo, _FlyCtx]):
    """Move and fly logic of a `SimAxis` on a `SimClock`."""

    axis: SimAxis

    async def check_move(self, new_position: float) -> None:
        self.axis.soft_limits.check(new_position)

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        await self.axis.run_move(new_position)

    async def stop(self) -> None:
        self.axis.halt()

    async def on_prepare(self, value: FlyMotorInfo) -> _FlyCtx:
        await self.axis.check_fly(value)
        accel_s = await self.axis.acceleration_time.get_value()
        max_v = await self.axis.max_velocity.get_value()
        await self.axis.run_move(value.ramp_up_start_pos(accel_s), velocity_um_s=max_v)
        await self.axis.velocity.set(value.speed)
        return _FlyCtx(value)

    async def on_kickoff(self, ctx: _FlyCtx) -> _FlyCtx:
        accel_s = await self.axis.acceleration_time.get_value()
        traj = await self.axis.begin_move(ctx.info.ramp_down_end_pos(accel_s))
        ctx.task = asyncio.ensure_future(self.axis.follow(traj))
        await self.axis.clock.sleep(accel_s)  # return once at constant speed
        return ctx

    async def on_complete(self, ctx: _FlyCtx) -> None:
        await error_if_none(ctx.task, f"{self.axis.name}: kickoff not called")


class SimAxis(StandardMovable[float], StandardFlyable[FlyMotorInfo, _FlyCtx], StandardReadable):
    """A simulated motor axis (µm) with soft limits, speed and acceleration limits.

    Parameters
    ----------
    clock
        The shared simulation clock.
    soft_limits
        Allowed positions (µm).
    initial_um
        Starting position (µm).
    velocity_um_s, max_velocity_um_s
        Default cruise speed and its upper limit (µm/s).
    acceleration_time_s
        Ramp time to full speed (s).
    max_acceleration_um_s2
        Largest allowed acceleration (µm/s²) = speed / acceleration time.
    following_lag_s
        Servo following error as a delay (s, >= 0): the axis is where its trajectory was
        ``following_lag_s`` earlier, and its readback reports that (measured) position, so
        a fly line's frames sit ``velocity * following_lag_s`` behind the commanded grid.
        0 (default) follows the trajectory exactly.
    """

    def __init__(
        self,
        clock: SimClock,
        soft_limits: SoftLimits,
        *,
        initial_um: float = 0.0,
        velocity_um_s: float = 2000.0,
        max_velocity_um_s: float = 5000.0,
        acceleration_time_s: float = 0.1,
        max_acceleration_um_s2: float = 1e5,
        following_lag_s: float = 0.0,
        name: str = "",
    ) -> None:
        soft_limits.check(initial_um, "initial position")
        if not (math.isfinite(following_lag_s) and following_lag_s >= 0):
            raise ValueError(f"following_lag_s={following_lag_s} must be finite and >= 0 s")
        self.following_lag_s = following_lag_s
        self.clock = clock
        self.soft_limits = soft_limits
        self.max_acceleration_um_s2 = max_acceleration_um_s2
        self._trajectory = Trajectory(clock.now_s(), initial_um, initial_um, 1.0, 0.0)
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.user_readback, self._set_readback = soft_signal_r_and_setter(
                float, initial_um, units="µm"
            )
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.velocity = soft_signal_rw(float, velocity_um_s, units="µm/s")
            self.acceleration_time = soft_signal_rw(float, acceleration_time_s, units="s")
            self.max_velocity = soft_signal_rw(float, max_velocity_um_s, units="µm/s")
        self.user_setpoint = soft_signal_rw(float, initial_um, units="µm")
        super().__init__(name=name)

    @cached_property
    def _logic(self) -> SimAxisLogic:
        return SimAxisLogic(setpoint=self.user_setpoint, readback=self.user_readback, axis=self)

    @cached_property
    def movable_logic(self) -> SimAxisLogic:
        return self._logic

    @cached_property
    def flyable_logic(self) -> SimAxisLogic:
        return self._logic

    def now_s(self) -> float:
        """Experiment time now (s): the time base of the readback updates."""
        return self.clock.now_s()

    def position_at_um(self, time_s: float) -> float:
        """Position (µm) at experiment time ``time_s`` along the current/last move (the
        trajectory ``following_lag_s`` earlier)."""
        return self._trajectory.position_at_um(time_s - self.following_lag_s)

    async def check_fly(self, info: FlyMotorInfo) -> None:
        """Raise ValueError if the fly scan exceeds speed, acceleration or soft limits."""
        accel_s, max_v = await asyncio.gather(
            self.acceleration_time.get_value(), self.max_velocity.get_value()
        )
        if info.speed > max_v:
            raise ValueError(
                f"axis {self.soft_limits.axis!r}: fly speed {info.speed:.6g} µm/s exceeds "
                f"max_velocity {max_v} µm/s"
            )
        if accel_s > 0 and info.speed / accel_s > self.max_acceleration_um_s2:
            raise ValueError(
                f"axis {self.soft_limits.axis!r}: acceleration {info.speed / accel_s:.6g} "
                f"µm/s² exceeds {self.max_acceleration_um_s2} µm/s²; lengthen "
                "acceleration_time or fly slower"
            )
        self.soft_limits.check(info.ramp_up_start_pos(accel_s), "fly run-up start")
        self.soft_limits.check(info.ramp_down_end_pos(accel_s), "fly run-down end")

    async def run_move(self, target_um: float, velocity_um_s: float | None = None) -> None:
        """Move to ``target_um`` on the clock (see `begin_move` and `follow`)."""
        await self.follow(await self.begin_move(target_um, velocity_um_s))

    async def begin_move(self, target_um: float, velocity_um_s: float | None = None) -> Trajectory:
        """Check ``target_um``, put the setpoint and start the trajectory now."""
        self.soft_limits.check(target_um)
        velocity = velocity_um_s or await self.velocity.get_value()
        if not velocity > 0:
            raise ValueError(f"axis {self.soft_limits.axis!r}: velocity={velocity} must be > 0")
        accel_s = await self.acceleration_time.get_value()
        await self.user_setpoint.set(target_um)
        now_s = self.clock.now_s()
        start = self.position_at_um(now_s)
        self._trajectory = Trajectory.plan(now_s, start, target_um, velocity, accel_s)
        return self._trajectory

    async def follow(self, traj: Trajectory) -> None:
        """Update the readback every 0.1 s of experiment time until the axis (lagging
        ``following_lag_s`` behind ``traj``) has arrived."""
        duration_s = traj.duration_s + self.following_lag_s
        n_steps = math.ceil(duration_s / _UPDATE_PERIOD_S - 1e-9)
        for k in range(1, n_steps + 1):
            await self.clock.sleep_until(traj.t0_s + min(k * _UPDATE_PERIOD_S, duration_s))
            self._set_readback(self.position_at_um(self.clock.now_s()))
        self._set_readback(traj.end_um)

    def halt(self) -> None:
        """Freeze the trajectory at the current position (stop)."""
        here = self.position_at_um(self.clock.now_s())
        self._trajectory = Trajectory(self.clock.now_s(), here, here, 1.0, 0.0)
        self._set_readback(here)


class SimMapStage(StandardReadable):
    """Simulated `MapStage`: ``x`` fly axis and ``z`` step axis on the simulation clock.

    Parameters
    ----------
    clock
        Shared simulation clock.
    x_limits_um, z_limits_um
        Soft limits (µm).
    x_velocity_um_s
        Default x speed (µm/s); fly scans set their own.
    x_following_lag_s
        Following lag of the x axis (s), see `SimAxis`.
    """

    def __init__(
        self,
        clock: SimClock,
        *,
        x_limits_um: tuple[float, float] = (-200.0, 2200.0),
        z_limits_um: tuple[float, float] = (-20.0, 60.0),
        x_velocity_um_s: float = 2000.0,
        x_following_lag_s: float = 0.0,
        name: str = "",
    ) -> None:
        with self.add_children_as_readables():
            self.x = SimAxis(
                clock,
                SoftLimits("x", *x_limits_um),
                velocity_um_s=x_velocity_um_s,
                following_lag_s=x_following_lag_s,
            )
            self.z = SimAxis(
                clock,
                SoftLimits("z", *z_limits_um),
                velocity_um_s=100.0,
                max_velocity_um_s=500.0,
            )
        super().__init__(name=name)
