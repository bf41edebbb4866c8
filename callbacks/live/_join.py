"""One map from a failed map run and the runs that resume it (`resume_fly_map`).

A map run that failed keeps every line it completed; `resume_fly_map` flies the missing
lines as a new run whose start names the failed one (``resumes``), and that run may be
resumed in turn. `JoinedMapRun` reads such a chain of routed runs (`MapRunDocuments`: the
live analysis's `LiveMapRun`, the replay's ``MapRunFrames``) as one map: each line's frames,
x (measured where the run recorded it), times and, live, packed reductions come from the
run that measured it (`routed_line_sources`, the rule of `opmap.plans.map_line_sources`).

Each run's frames keep their own indices; the joined map numbers them one run after the
other (run ``k``'s frame ``i`` is ``offset[k] + i``) so that the accumulator of the whole
map (`RunAccumulator`) selects them as for any run. `JoinedMapRun.pieces` gives them back
per run, in map order, for reading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from opmap.plans import LineSource

from ._documents import MapRunDocuments, layout_from_start
from ._run import RunAccumulator

__all__ = ["JoinedMapRun", "routed_line_sources"]


def routed_line_sources(parts: Sequence[MapRunDocuments]) -> dict[int, LineSource]:
    """Where each line of one map is, over routed runs (their ``lines`` events so far).

    Raises
    ------
    ValueError
        The runs are of different maps, a line is held by two runs, or a line is missing.
    """
    geometries = {repr(sorted(part.start_doc["map_geometry"].items())) for part in parts}
    if len(geometries) != 1:
        raise ValueError(f"runs: {len(geometries)} different map geometries, need one map")
    sources: dict[int, LineSource] = {}
    for part in parts:
        for index, line in part.accumulator.lines.items():
            if index in sources:
                raise ValueError(
                    f"line {index} is held twice: runs {sources[index].run_uid} and {part.uid}"
                )
            sources[index] = LineSource(part.uid, line.first_frame, line.n_frames)
    missing = sorted(set(range(parts[0].layout.n_z)) - set(sources))
    if missing:
        raise ValueError(f"runs: lines {missing} of the map are in no run")
    return dict(sorted(sources.items()))


class JoinedMapRun:
    """One map read from the runs of a chain, each line from the run that measured it.

    Offers what the analyses read of a routed run: ``uid``, ``start_doc`` (the chain's
    first run's: its ``map_index`` and ``experiment_id``), ``stop_doc`` (the last run's),
    ``layout`` (x from the lines' own readbacks, `RunAccumulator.measured_x_um`),
    ``x_source``, ``accumulator`` (the lines with their frames renumbered; every run's
    packed reductions, frame times, potentiostat readbacks and buffer, in run order),
    ``frame_key``, ``reduction`` (the last run's, live), `valid_frames` and `pieces`.

    Parameters
    ----------
    parts : sequence of MapRunDocuments
        The chain's runs as routed, first run first.
    sources : mapping of int to LineSource
        The run and frames holding each line (`opmap.plans.map_line_sources` of the
        stored runs, or `routed_line_sources` of ``parts``).

    Raises
    ------
    ValueError
        A source names a run not in ``parts``, or frames other than the run's own record
        of the line.
    """

    def __init__(self, parts: Sequence[Any], sources: Mapping[int, LineSource]) -> None:
        self.parts = list(parts)
        self.start_doc = dict(self.parts[0].start_doc)
        self.stop_doc = self.parts[-1].stop_doc
        self.frame_key = self.parts[0].frame_key
        self.reader = self.parts[0].reader
        self.reduction = getattr(self.parts[-1], "reduction", None)
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
            for frame, packed in part.accumulator.packed.items():
                acc.packed[frame + self.offsets[k]] = packed
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
            A line is missing.
        """
        acc = self.accumulator
        if len(acc.lines) != acc.n_z:
            raise ValueError(f"runs {self.uids}: {len(acc.lines)} of {acc.n_z} lines")
        return acc.valid_frames()


def _offsets(parts: Sequence[Any]) -> list[int]:
    """Where each run's frames start in the joined numbering (after the previous run's
    highest frame index that it announced, timed or recorded in a line)."""
    offsets, next_offset = [], 0
    for part in parts:
        offsets.append(next_offset)
        acc = part.accumulator
        ends = [
            *(index + 1 for index in getattr(part, "locations", ())),
            *(index + 1 for index in acc.packed),
            *(index + 1 for index in acc.frame_time_s),
            *(line.first_frame + line.n_frames for line in acc.lines.values()),
        ]
        next_offset += max(ends, default=0)
    return offsets
