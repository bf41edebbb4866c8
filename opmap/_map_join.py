"""One map from a failed map run and the runs that resume it (`resume_fly_map`).

A map run that failed keeps every line it completed; `resume_fly_map` flies the missing
lines as a new run whose start names the failed one (``resumes``), and that run may be
resumed in turn. `map_chains` groups an experiment's stored map runs into such chains (the
first run, then its resumes in start order); `JoinedMapRun` reads one chain as one map:
each line's frames, x (measured where the run recorded it) and times come from the run
`map_line_sources` names for it.

The join works on the runs as routed by the replay (`opmap.replay.MapRunFrames`): each
run's frames keep their own indices; the joined map numbers them one run after the other
(run ``k``'s frame ``i`` is ``offset[k] + i``) so that the accumulator of the whole map
(`RunAccumulator`) selects them as for any run. `JoinedMapRun.pieces` gives them back per
run, in map order, for reading.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opmap.callbacks.live import RunAccumulator, layout_from_start
from opmap.plans import LineSource

__all__ = ["JoinedMapRun", "MapChain", "map_chains"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapChain:
    """The stored runs of one map: the first run, then the runs resuming it, in start order.

    Attributes
    ----------
    map_index : int
        The first run's ``map_index``.
    runs : list of tiled BlueskyRun
        ``raw[uid]`` of each run of the chain.
    """

    map_index: int
    runs: list[Any]

    @property
    def uids(self) -> list[str]:
        """Start uids of the chain's runs, first run first."""
        return [str(run.metadata["start"]["uid"]) for run in self.runs]

    @property
    def whole_run(self) -> bool:
        """One run that stopped with success: a map as any other (no join)."""
        stop = self.runs[0].metadata.get("stop") or {}
        return len(self.runs) == 1 and stop.get("exit_status") == "success"

    def describe(self) -> str:
        """``map 3 (runs a, b)``: for log lines and reasons."""
        return f"map {self.map_index} (runs {', '.join(self.uids)})"


def _is_map_run(start: Mapping[str, Any]) -> bool:
    return start.get("map_index") is not None and "map_geometry" in start


def _resumes_of(raw: Any, uid: str) -> list[Any]:
    """Map runs whose start ``resumes`` ``uid``, and theirs, in start order."""
    from tiled.queries import Key

    found = []
    for run in raw.search(Key("start.resumes") == uid).values():
        if "map_geometry" in run.metadata.get("start", {}):
            found.append(run)
    found.sort(key=lambda run: float(run.metadata["start"].get("time", 0.0)))
    chain = []
    for run in found:
        chain.append(run)
        chain.extend(_resumes_of(raw, str(run.metadata["start"]["uid"])))
    return chain


def map_chains(raw: Any, experiment_id: str) -> list[MapChain]:
    """The experiment's maps as chains of runs, ordered by ``map_index``.

    A chain starts at each map run of the experiment (start metadata ``experiment_id``, a
    ``map_index`` and a ``map_geometry``) that resumes no other run; the runs resuming it
    (start ``resumes``, found in all of ``raw``, so a resume that lost the experiment's
    metadata still joins) follow. A resume whose first run is not a map run of the
    experiment is logged and left out.

    Parameters
    ----------
    raw : tiled container
        The raw runs catalog.
    experiment_id : str
        The experiment.
    """
    from tiled.queries import Key

    chains, orphans = [], []
    for uid, run in raw.search(Key("start.experiment_id") == experiment_id).items():
        start = run.metadata.get("start", {})
        if not _is_map_run(start):
            continue
        if start.get("resumes"):
            orphans.append((uid, str(start["resumes"])))
            continue
        chains.append(MapChain(int(start["map_index"]), [run, *_resumes_of(raw, uid)]))
    joined = {uid for chain in chains for uid in chain.uids}
    for uid, resumed in orphans:
        if uid not in joined:
            logger.warning(
                "run %s resumes run %s, which is no map run of experiment %s: left out",
                uid,
                resumed,
                experiment_id,
            )
    return sorted(chains, key=lambda chain: chain.map_index)


class JoinedMapRun:
    """One map read from the runs of a chain, each line from the run that measured it.

    Offers what the replay reads of a routed run (`opmap.replay.MapRunFrames`): ``uid``,
    ``start_doc`` (the chain's first run's: its ``map_index`` and ``experiment_id``),
    ``layout`` (x from the lines' own readbacks, `RunAccumulator.measured_x_um`),
    ``x_source``, ``accumulator`` (the lines with their frames renumbered, every run's frame
    times, potentiostat readbacks and buffer in run order), ``frame_key``, `valid_frames`
    and `pieces`.

    Parameters
    ----------
    parts : sequence of MapRunFrames
        The chain's runs as routed, first run first.
    sources : mapping of int to LineSource
        `map_line_sources` of the same runs: the run and frames holding each line.

    Raises
    ------
    ValueError
        A source names a run not in ``parts``, or frames other than the run's own record
        of the line.
    """

    def __init__(self, parts: Sequence[Any], sources: Mapping[int, LineSource]) -> None:
        self.parts = list(parts)
        self.start_doc = dict(self.parts[0].start_doc)
        self.frame_key = self.parts[0].frame_key
        self.reader = self.parts[0].reader
        self.offsets = _offsets(self.parts)
        self.accumulator = self._accumulate(sources)
        self.layout = layout_from_start(self.start_doc)
        self.x_source = self.parts[0].x_source
        measured = self.accumulator.measured_x_um()
        if measured is not None:
            x_um, self.x_source = measured
            self.layout = dataclasses.replace(self.layout, x_um=x_um)

    @property
    def uid(self) -> str:
        """Start uid of the chain's first run (the map's run)."""
        return str(self.start_doc["uid"])

    @property
    def uids(self) -> list[str]:
        """Start uids of every run of the chain."""
        return [part.uid for part in self.parts]

    def _accumulate(self, sources: Mapping[int, LineSource]) -> RunAccumulator:
        n_z, n_x = self.parts[0].accumulator.n_z, self.parts[0].accumulator.n_x
        acc = RunAccumulator(n_z, n_x)
        by_uid = {part.uid: k for k, part in enumerate(self.parts)}
        for index, source in sorted(sources.items()):
            if source.run_uid not in by_uid:
                raise ValueError(f"line {index}: run {source.run_uid} is not in the chain")
            k = by_uid[source.run_uid]
            line = self.parts[k].accumulator.lines.get(index)
            if line is None or (line.first_frame, line.n_frames) != (
                source.first_frame,
                source.n_frames,
            ):
                raise ValueError(
                    f"line {index}: run {source.run_uid} records {line} for it, not the "
                    f"frames {source.first_frame} + {source.n_frames} of its lines stream"
                )
            acc.lines[index] = dataclasses.replace(
                line, first_frame=line.first_frame + self.offsets[k]
            )
        for k, part in enumerate(self.parts):
            for frame, time_s in part.accumulator.frame_time_s.items():
                acc.frame_time_s[frame + self.offsets[k]] = time_s
            acc.ec_rows.extend(part.accumulator.ec_rows)
            acc.ec_state_time_s.extend(part.accumulator.ec_state_time_s)
        return acc

    def _owner(self, frame: int) -> tuple[int, int]:
        """``(run position in the chain, the run's own frame index)`` of a joined frame."""
        k = max(i for i, offset in enumerate(self.offsets) if offset <= frame)
        return k, frame - self.offsets[k]

    def pieces(self) -> list[tuple[Any, list[int]]]:
        """The map's frames in line order as ``(run, its own frame indices)``, consecutive
        frames of one run together."""
        out: list[tuple[Any, list[int]]] = []
        for frame in self.valid_frames():
            k, own = self._owner(frame)
            if out and out[-1][0] is self.parts[k]:
                out[-1][1].append(own)
            else:
                out.append((self.parts[k], [own]))
        return out

    def valid_frames(self) -> list[int]:
        """The map's frames (joined numbering) in line order.

        Raises
        ------
        ValueError
            A line is missing, or a frame was never announced by its run.
        """
        acc = self.accumulator
        if len(acc.lines) != acc.n_z:
            raise ValueError(f"runs {self.uids}: {len(acc.lines)} of {acc.n_z} lines")
        frames = acc.valid_frames()
        for frame in frames:
            k, own = self._owner(frame)
            if own not in self.parts[k].locations:
                raise ValueError(
                    f"run {self.parts[k].uid}: valid frame {own} was never announced by a "
                    "stream_datum"
                )
        return frames


def _offsets(parts: Sequence[Any]) -> list[int]:
    """Where each run's frames start in the joined numbering (after the previous run's
    highest frame index that it announced, timed or recorded in a line)."""
    offsets, next_offset = [], 0
    for part in parts:
        offsets.append(next_offset)
        acc = part.accumulator
        ends = [
            *(index + 1 for index in part.locations),
            *(index + 1 for index in acc.frame_time_s),
            *(line.first_frame + line.n_frames for line in acc.lines.values()),
        ]
        next_offset += max(ends, default=0)
    return offsets
