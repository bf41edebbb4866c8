"""The stored runs of each map: a failed map run and the runs that resume it.

A map run that failed keeps every line it completed; `resume_fly_map` flies the missing
lines as a new run whose start names the failed one (``resumes``), and that run may be
resumed in turn. `map_chains` groups an experiment's stored map runs into such chains (the
first run, then its resumes in start order); the replay reads a chain as one map with
`opmap.callbacks.live.JoinedMapRun`, each line from the run `map_line_sources` names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MapChain", "map_chains"]

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
