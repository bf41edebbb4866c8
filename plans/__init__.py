"""Bluesky plans for operando micro-XRD maps: fly maps, the operando experiment, alignment."""

from ._align import ALIGN_STREAM, StackAlignment, align_stack, find_stack, propose_map
from ._cadence import MapCadence
from ._calibrate import CALIBRANTS, calibrate
from ._fly_map import fly_map, map_line_indices, map_lines
from ._geometry import LineTrajectory, MapGeometry, fly_line
from ._operando import (
    EC_STATE_STREAM,
    EC_STREAM,
    CyclingPotentiostat,
    ResumePoint,
    ec_value,
    operando_experiment,
)
from ._readback import frame_positions_um
from ._resume_map import LineSource, MapResume, StoredMapRun, map_line_sources, resume_fly_map
from ._stubs import FRAMES_STREAM, LINES_STREAM, fly_line_stub
from ._suspenders import beam_current_suspender, shutter_suspender

__all__ = [
    "ALIGN_STREAM",
    "CALIBRANTS",
    "EC_STATE_STREAM",
    "EC_STREAM",
    "FRAMES_STREAM",
    "LINES_STREAM",
    "CyclingPotentiostat",
    "LineSource",
    "LineTrajectory",
    "MapCadence",
    "MapGeometry",
    "MapResume",
    "ResumePoint",
    "StackAlignment",
    "StoredMapRun",
    "align_stack",
    "beam_current_suspender",
    "calibrate",
    "ec_value",
    "find_stack",
    "fly_line",
    "fly_line_stub",
    "fly_map",
    "frame_positions_um",
    "map_line_indices",
    "map_line_sources",
    "map_lines",
    "operando_experiment",
    "propose_map",
    "resume_fly_map",
    "shutter_suspender",
]
