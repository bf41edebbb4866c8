"""Resume a map whose run failed: fly only its lines that are not whole, in a new run.

A map run that failed (a server died mid-line, the beam was lost for good ...) keeps every
line it completed: each has its event in the ``lines`` stream, emitted only after the line's
frames were collected. `MapResume.from_run` reads a stored run (a Tiled ``BlueskyRun``, or
anything with its ``metadata["start"]`` and ``["lines"]``) and names the lines still to fly;
`resume_fly_map` flies them as a new `fly_map` run whose start document carries the same
``map_geometry``, the failed run's ``experiment_id`` and ``map_index``, and ``resumes:
<failed run uid>``. A resumed run that fails can be resumed in turn (its start names the
lines it was to fly, ``map_lines``).

`map_line_sources` puts the chain back together: for each line of the map, the run and the
frames that hold it, refusing a line that is missing or held twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bluesky.utils import MsgGenerator

from ._fly_map import fly_map, map_line_indices
from ._geometry import MapGeometry
from ._stubs import LINES_STREAM, FlyAxis, FlyDetector, StepAxis

__all__ = [
    "CARRIED_KEYS",
    "LineSource",
    "MapResume",
    "StoredMapRun",
    "map_line_sources",
    "resume_fly_map",
]


#: Start metadata of a failed map run that its resume carries: what finds it as the same map.
CARRIED_KEYS = ("experiment_id", "map_index")


class StoredMapRun(Protocol):
    """What is read of a stored map run: its documents' metadata and its streams by name."""

    metadata: Mapping[str, Any]

    def __contains__(self, key: object) -> bool: ...

    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class LineSource:
    """Where one line of a map is stored: run uid and ``primary`` frames
    ``[first_frame, first_frame + n_frames)``."""

    run_uid: str
    first_frame: int
    n_frames: int


def _start(run: StoredMapRun) -> Mapping[str, Any]:
    start = run.metadata.get("start")
    if not start or "map_geometry" not in start:
        raise ValueError("run: no start document with a map_geometry (not a fly_map run)")
    return start


def completed_lines(run: StoredMapRun) -> dict[int, LineSource]:
    """The lines ``run`` completed (its ``lines`` stream; the last event of a line wins)."""
    if LINES_STREAM not in run:
        return {}
    table = run[LINES_STREAM].read()
    uid = str(_start(run)["uid"])
    columns = ("line_index", "line_first_frame", "line_n_frames")
    rows = zip(*(table[name].values.tolist() for name in columns), strict=True)
    return {int(i): LineSource(uid, int(first), int(n)) for i, first, n in rows}


@dataclass(frozen=True)
class MapResume:
    """The lines a failed map run left to fly.

    Attributes
    ----------
    resumes
        Uid of the failed run.
    geometry
        Its map.
    lines
        Indices of the lines it was to fly and did not complete, in map order.
    carried
        Start metadata of the failed run the resume carries (`CARRIED_KEYS` it has:
        ``experiment_id``, ``map_index``), so the resume is found as part of the same map.
        Not compared: a resume is its run, geometry and lines.
    """

    resumes: str
    geometry: MapGeometry
    lines: tuple[int, ...]
    carried: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_run(cls, run: StoredMapRun) -> MapResume:
        """What ``run`` (a stored `fly_map` run) left to fly.

        Raises
        ------
        ValueError
            ``run`` is not a map run, or it completed every line it was to fly.
        """
        start = _start(run)
        geometry = MapGeometry(**start["map_geometry"])
        planned = map_line_indices(geometry, start.get("map_lines"))
        done = completed_lines(run)
        missing = tuple(index for index in planned if index not in done)
        if not missing:
            raise ValueError(f"run {start['uid']}: every line was completed; nothing to resume")
        carried = {key: start[key] for key in CARRIED_KEYS if start.get(key) is not None}
        return cls(str(start["uid"]), geometry, missing, carried)


def resume_fly_map(
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    resume: MapResume,
    *,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Fly the lines a failed map run left (a new `fly_map` run that ``resumes`` it).

    Parameters
    ----------
    detector, stage_x, stage_z
        As for `fly_map`.
    resume
        From `MapResume.from_run` of the failed run.
    md
        Extra start-document metadata, on top of what ``resume`` carries of the failed
        run (its ``experiment_id`` and ``map_index``).

    Returns
    -------
    str
        The new run's uid (``None`` in a simulator).
    """
    if not isinstance(resume, MapResume):
        raise TypeError(f"resume must be a MapResume, not {type(resume).__name__}")
    _md = {
        **resume.carried,
        "plan_name": "resume_fly_map",
        "resumes": resume.resumes,
        **(md or {}),
    }
    plan = fly_map(detector, stage_x, stage_z, resume.geometry, lines=resume.lines, md=_md)
    return (yield from plan)


def map_line_sources(runs: Iterable[StoredMapRun]) -> dict[int, LineSource]:
    """Where each line of one map is stored, over a failed run and its resumes.

    Raises
    ------
    ValueError
        The runs are of different maps, a line is held by two runs, or a line is missing.
    """
    sources: dict[int, LineSource] = {}
    geometries = set()
    for run in runs:
        geometries.add(MapGeometry(**_start(run)["map_geometry"]))
        for index, source in completed_lines(run).items():
            if index in sources:
                raise ValueError(
                    f"line {index} is held twice: runs {sources[index].run_uid} "
                    f"and {source.run_uid}"
                )
            sources[index] = source
    if len(geometries) != 1:
        raise ValueError(f"runs: {len(geometries)} different map geometries, need one map")
    (geometry,) = geometries
    missing = sorted(set(range(geometry.z_count)) - set(sources))
    if missing:
        raise ValueError(f"runs: lines {missing} of the map are in no run")
    return dict(sorted(sources.items()))
