"""Map geometry and the fly-line trajectory: frozen value objects and pure functions.

Nothing here talks to a device: `fly_line` turns a `MapGeometry` and a line index into the
numbers a fly line needs (the constant-velocity segment, the run-up, the centre of every
frame), so plans stay thin and the maths is testable on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ophyd_async.core import FlyMotorInfo
from pydantic import BaseModel, ConfigDict, Field, model_validator


class MapGeometry(BaseModel):
    """A 2-D fly map: x lines flown continuously, stepped in z.

    All lengths are in µm in sample coordinates (``z_um`` upward from the bottom of the
    cathode, ``x_um`` along the cell), the exposure in s. The default is the paper's map:
    49 lines of 1 µm in z, 49 frames of 33 µm in x, 0.05 s per frame.

    Parameters
    ----------
    z_start_um
        Height of the first line (µm).
    z_step_um
        Distance between lines (µm), > 0.
    z_count
        Number of lines, >= 1.
    x_start_um, x_stop_um
        Edges of the mapped x range (µm); frames tile ``[x_start_um, x_stop_um]``.
    x_count
        Frames per line, >= 1.
    exposure_s
        Live time of one frame (s), > 0; the beam averages one pixel of travel.
    snake
        Fly odd lines backwards (saves the return move).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    z_start_um: float = Field(default=0.0, allow_inf_nan=False)
    z_step_um: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    z_count: int = Field(default=49, ge=1)
    x_start_um: float = Field(default=0.0, allow_inf_nan=False)
    x_stop_um: float = Field(default=49 * 33.0, allow_inf_nan=False)
    x_count: int = Field(default=49, ge=1)
    exposure_s: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    snake: bool = False

    @model_validator(mode="after")
    def _x_range_increases(self) -> MapGeometry:
        if not self.x_stop_um > self.x_start_um:
            raise ValueError(
                f"x_stop_um={self.x_stop_um} must be greater than x_start_um={self.x_start_um}"
            )
        return self

    @property
    def x_pixel_um(self) -> float:
        """Width of one frame along x (µm)."""
        return (self.x_stop_um - self.x_start_um) / self.x_count

    @property
    def x_velocity_um_per_s(self) -> float:
        """Fly speed (µm/s): one pixel per exposure, so each frame averages one pixel."""
        return self.x_pixel_um / self.exposure_s

    @property
    def line_time_s(self) -> float:
        """Counting time of one line (s), excluding run-up and run-down."""
        return self.x_count * self.exposure_s

    def z_positions_um(self) -> np.ndarray:
        """Heights of the lines (µm), shape ``(z_count,)``."""
        return self.z_start_um + self.z_step_um * np.arange(self.z_count)

    def x_centres_um(self) -> np.ndarray:
        """Centres of the frames in increasing x (µm), shape ``(x_count,)``."""
        return self.x_start_um + self.x_pixel_um * (np.arange(self.x_count) + 0.5)


@dataclass(frozen=True)
class LineTrajectory:
    """Everything one fly line needs, in stage coordinates (µm, s).

    Parameters
    ----------
    line_index
        Index of the line in the map (0 = first ``z``).
    z_um
        Height of the line (µm).
    x_from_um, x_to_um
        Start and end of the constant-velocity segment (µm), in flight order.
    velocity_um_per_s
        Speed over the segment (µm/s, positive).
    run_up_um
        Distance needed to reach that speed (µm), before ``x_from_um`` and after ``x_to_um``.
    frame_x_um
        Centre of every frame in acquisition order (µm), length ``x_count``.
    """

    line_index: int
    z_um: float
    x_from_um: float
    x_to_um: float
    velocity_um_per_s: float
    run_up_um: float
    frame_x_um: tuple[float, ...]

    @property
    def time_for_move_s(self) -> float:
        """Duration of the constant-velocity segment (s)."""
        return abs(self.x_to_um - self.x_from_um) / self.velocity_um_per_s

    @property
    def run_up_start_um(self) -> float:
        """Where the stage starts accelerating (µm)."""
        return self.x_from_um - math.copysign(self.run_up_um, self.x_to_um - self.x_from_um)

    def fly_motor_info(self) -> FlyMotorInfo:
        """The ophyd-async description of this line for ``stage_x.prepare``."""
        return FlyMotorInfo(
            start_position=self.x_from_um,
            end_position=self.x_to_um,
            time_for_move=self.time_for_move_s,
        )


def fly_line(
    geometry: MapGeometry, line_index: int, *, acceleration_time_s: float = 0.0
) -> LineTrajectory:
    """Trajectory of line ``line_index`` of ``geometry``.

    Parameters
    ----------
    geometry
        The map.
    line_index
        0 <= line_index < geometry.z_count.
    acceleration_time_s
        Time the x axis takes to reach the fly speed (s), >= 0.

    Returns
    -------
    LineTrajectory
        Odd lines run backwards when ``geometry.snake``.

    Examples
    --------
    >>> line = fly_line(MapGeometry(), 0, acceleration_time_s=0.1)
    >>> round(line.velocity_um_per_s, 6), round(line.run_up_um, 6)
    (660.0, 33.0)
    """
    if not 0 <= line_index < geometry.z_count:
        raise ValueError(f"line_index={line_index} must be in [0, {geometry.z_count - 1}]")
    if not (math.isfinite(acceleration_time_s) and acceleration_time_s >= 0):
        raise ValueError(f"acceleration_time_s={acceleration_time_s} must be finite and >= 0")
    velocity = geometry.x_velocity_um_per_s
    # Linear ramp from rest to v in t_acc: the distance is the triangle's area, v * t_acc / 2.
    run_up_um = velocity * acceleration_time_s / 2
    frames = geometry.x_centres_um()
    x_from, x_to = geometry.x_start_um, geometry.x_stop_um
    if geometry.snake and line_index % 2 == 1:
        x_from, x_to, frames = x_to, x_from, frames[::-1]
    return LineTrajectory(
        line_index=line_index,
        z_um=float(geometry.z_positions_um()[line_index]),
        x_from_um=x_from,
        x_to_um=x_to,
        velocity_um_per_s=velocity,
        run_up_um=run_up_um,
        frame_x_um=tuple(float(x) for x in frames),
    )
