"""`fly_map`: a 2-D map as fly lines in x stepped in z, one run, one checkpoint per line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import MsgGenerator

from ._geometry import MapGeometry, fly_line
from ._stubs import (
    FRAMES_STREAM,
    FlyAxis,
    FlyDetector,
    LineBook,
    StepAxis,
    fly_line_stub,
    prepare_line,
)


def map_lines(
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    geometry: MapGeometry,
    *,
    after_line: Callable[[int], MsgGenerator[None]] | None = None,
    lines: Sequence[int] | None = None,
) -> MsgGenerator[None]:
    """Fly the lines of ``geometry`` inside an open run (a stub: opens no run).

    The detector must be staged. The first line's prepare comes before the ``primary``
    stream is declared (the detector describes its frames only once prepared).

    Parameters
    ----------
    detector, stage_x, stage_z
        Frame detector, fly axis (µm), step axis (µm).
    geometry
        The map.
    after_line
        Called with the line index after each completed line (e.g. to collect the
        potentiostat buffer); part of the line's checkpoint unit.
    lines
        Indices of the lines to fly, in this order (default: every line); see
        `map_line_indices`.
    """
    indices = map_line_indices(geometry, lines)
    book = LineBook(detector, stage_x)
    first = fly_line(geometry, indices[0])
    yield from prepare_line(detector, stage_x, first, geometry.exposure_s)
    yield from bps.declare_stream(detector, name=FRAMES_STREAM, collect=True)
    for index in indices:
        line = fly_line(geometry, index)
        yield from fly_line_stub(detector, stage_x, stage_z, line, geometry.exposure_s, book)
        if after_line is not None:
            yield from after_line(index)


def map_line_indices(geometry: MapGeometry, lines: Sequence[int] | None) -> tuple[int, ...]:
    """The line indices a map flies: every line of ``geometry``, or ``lines`` checked.

    Raises
    ------
    ValueError
        ``lines`` is empty, repeats a line or names one outside ``[0, z_count)``.
    """
    if lines is None:
        return tuple(range(geometry.z_count))
    indices = tuple(int(index) for index in lines)
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"lines={list(indices)} must name at least one line, each once")
    outside = [index for index in indices if not 0 <= index < geometry.z_count]
    if outside:
        raise ValueError(f"lines: {outside} outside the map's lines [0, {geometry.z_count - 1}]")
    return indices


def map_metadata(
    plan_name: str,
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    geometry: MapGeometry,
) -> dict[str, Any]:
    """Standard start-document metadata of a map run, without the user's ``md``."""
    return {
        "plan_name": plan_name,
        "plan_args": {
            "detector": repr(detector),
            "stage_x": repr(stage_x),
            "stage_z": repr(stage_z),
            "geometry": geometry.model_dump(),
        },
        "detectors": [detector.name],
        "motors": [stage_x.name, stage_z.name],
        "map_shape": [geometry.z_count, geometry.x_count],
        "map_geometry": geometry.model_dump(),
        # bluesky's grid-scan keys (as bp.grid_scan writes them), so generic tools such as
        # best-effort plots and databroker viewers can place the frames: slow axis first
        **_grid_keys(geometry),
        "hints": {"dimensions": [([stage_z.name, stage_x.name], FRAMES_STREAM)]},
    }


def _grid_keys(geometry: MapGeometry) -> dict[str, Any]:
    """``shape``, ``extents`` (frame centres, µm), ``snaking``, ``num_points`` and
    ``num_intervals`` of the map, z (slow) then x (fast)."""
    half_bin_um = 0.5 * (geometry.x_stop_um - geometry.x_start_um) / geometry.x_count
    z_last_um = geometry.z_start_um + (geometry.z_count - 1) * geometry.z_step_um
    n_points = geometry.z_count * geometry.x_count
    return {
        "shape": [geometry.z_count, geometry.x_count],
        "extents": [
            [geometry.z_start_um, z_last_um],
            [geometry.x_start_um + half_bin_um, geometry.x_stop_um - half_bin_um],
        ],
        "snaking": [False, geometry.snake],
        "num_points": n_points,
        "num_intervals": n_points - 1,
    }


def fly_map(
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    geometry: MapGeometry,
    *,
    lines: Sequence[int] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Fly a 2-D diffraction map: one continuous x line per z, frames streamed to file.

    One run. Each line is a checkpoint: a pause or a suspender re-takes the interrupted line
    whole. Frames go to the ``primary`` stream; one event per completed line goes to the
    ``lines`` stream and names the valid frames and their x centres, so frames of an
    aborted attempt are marked, never doubled (see `opmap.plans._stubs`).

    Parameters
    ----------
    detector
        Stream-asset detector, prepared per line with ``TriggerInfo(number_of_events=x_count,
        livetime=exposure_s)``.
    stage_x
        Fly axis in µm, prepared with a `FlyMotorInfo` (its run-up comes from its own
        acceleration time).
    stage_z
        Step axis in µm.
    geometry
        The map (validated on construction).
    lines
        Fly only these line indices (e.g. the lines a failed run did not complete, see
        `resume_fly_map`); the start document then lists them as ``map_lines``. The
        geometry (``map_geometry``, ``shape``, ...) stays the whole map's.
    md
        Extra start-document metadata.

    Returns
    -------
    str
        The run uid (``None`` in a simulator).
    """
    if not isinstance(geometry, MapGeometry):
        raise TypeError(f"geometry must be a MapGeometry, not {type(geometry).__name__}")
    indices = map_line_indices(geometry, lines)
    _md = map_metadata("fly_map", detector, stage_x, stage_z, geometry)
    if lines is not None:
        _md["map_lines"] = list(indices)
    _md.update(md or {})

    # staged inside the run: the detector closes its files on unstage, so by the stop
    # document every frame of the run is on disk and readable (validation reads on stop)
    @bpp.run_decorator(md=_md)
    @bpp.stage_decorator([detector])
    def inner() -> MsgGenerator[None]:
        yield from map_lines(detector, stage_x, stage_z, geometry, lines=indices)

    return (yield from inner())
