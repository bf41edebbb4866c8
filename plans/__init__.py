"""Bluesky plans for operando micro-XRD maps: fly maps, the operando experiment, alignment."""

from ._fly_map import fly_map, map_lines
from ._geometry import LineTrajectory, MapGeometry, fly_line

__all__ = ["LineTrajectory", "MapGeometry", "fly_line", "fly_map", "map_lines"]
