"""What a resumed rehearsal needs: the stored experiment, its interrupted runs closed.

``opmap resume EXPERIMENT_ID`` goes on with an experiment whose control process died
(`opmap.rehearse.resume_rehearsal`). Before anything moves:

1. every spooled run of the experiment without a ``stop`` (the process died in it) gets
   an abort ``stop`` document with its reason, appended to its spool file, and the spool is
   re-sent (`opmap.callbacks.spool.recover_spool`): the documents Tiled missed are stored
   and the run is closed in Tiled; a run Tiled holds without ``stop`` and without spool
   file is closed there directly. Every run so completed is validated and sealed
   (`opmap.callbacks.sealing`), as the live writer seals the runs it stores;
2. the stored runs are read back (`read_stored_experiment`): the rehearsal's options,
   the potentiostat's protocol start and elapsed time at the last map, and the time of the
   last electrochemistry sample Tiled holds;
3. the rebuilt simulated cell is brought to that time (`fast_forward`): the protocol is
   started at the instrument time it started before, and the samples Tiled already holds
   are dropped from the potentiostat's buffer, so the record goes on without gap or double.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.utils import MsgGenerator

from opmap.callbacks.sealing import seal_run
from opmap.callbacks.spool import RecoveredRun, RunSpool, recover_spool
from opmap.callbacks.tiled_writer import validate_run
from opmap.plans import EC_STATE_STREAM, EC_STREAM, ResumePoint

__all__ = [
    "REHEARSAL_OPTIONS_KEY",
    "ResumeError",
    "StoredExperiment",
    "StoredRun",
    "close_interrupted",
    "fast_forward",
    "read_stored_experiment",
]

logger = logging.getLogger(__name__)

#: Start-document key of a rehearsal's options (what ``opmap resume`` rebuilds it from).
REHEARSAL_OPTIONS_KEY = "rehearsal_options"
#: The reason written into the abort ``stop`` of an interrupted run.
ABORT_REASON = "the control process died during this run; closed by opmap resume"
_PROTOCOL_START = "potentiostat-protocol_start"
_ELAPSED = "potentiostat-elapsed"


class ResumeError(ValueError):
    """The experiment cannot be resumed (the message says why); nothing was changed."""


@dataclass(frozen=True)
class StoredRun:
    """One run of the experiment as Tiled holds it."""

    uid: str
    start: Mapping[str, Any]
    stop: Mapping[str, Any] | None

    @property
    def map_index(self) -> int | None:
        index = self.start.get("map_index")
        return None if index is None else int(index)

    @property
    def complete_map(self) -> bool:
        """A map run that stopped with success."""
        return self.map_index is not None and (self.stop or {}).get("exit_status") == "success"


@dataclass
class StoredExperiment:
    """The stored runs of one experiment and where its record ends.

    Attributes
    ----------
    experiment_id : str
    runs : list of StoredRun
        In start order.
    protocol_start_s : float
        The potentiostat's clock when its protocol started (s); NaN if it never did.
    last_sample_s : float
        ``time_s`` of the last electrochemistry sample stored (s); NaN if none.
    last_map_start_s : float
        Protocol time (elapsed, s) at the start of the last map after the kickoff; NaN.
    """

    experiment_id: str
    runs: list[StoredRun]
    protocol_start_s: float = math.nan
    last_sample_s: float = math.nan
    last_map_start_s: float = math.nan
    closed: list[str] = field(default_factory=list)

    @property
    def first_start(self) -> Mapping[str, Any]:
        return self.runs[0].start

    @property
    def options(self) -> dict[str, Any]:
        """The rehearsal's options as recorded in its start documents."""
        return dict(self.first_start[REHEARSAL_OPTIONS_KEY])

    @property
    def complete_maps(self) -> list[StoredRun]:
        """Map runs that stopped with success, in map order."""
        return sorted((r for r in self.runs if r.complete_map), key=lambda r: r.map_index)

    def resume_point(self) -> ResumePoint:
        """Where the plan goes on: the next map index, re-measuring a cut map."""
        indices = [r.map_index for r in self.runs if r.map_index is not None]
        interrupted = [r for r in self.runs if r.uid in self.closed and r.map_index is not None]
        return ResumePoint(
            experiment_id=self.experiment_id,
            next_map_index=max(indices, default=-1) + 1,
            maps_taken=len(self.complete_maps),
            protocol_started=math.isfinite(self.protocol_start_s),
            last_map_start_s=self.last_map_start_s,
            remeasure=bool(interrupted),
        )


def close_interrupted(runs: Any, spool: RunSpool, experiment_id: str) -> list[RecoveredRun]:
    """Close the experiment's runs left without ``stop`` (spool first), then re-send the spool.

    Returns the spool's recovery per run (`recover_spool`); raises `ResumeError` when a
    spooled run could not be stored (it stays in the spool).
    """
    closed = [uid for uid in spool.pending() if _close_spooled(spool, uid, experiment_id)]
    results = recover_spool(runs, spool)
    failed = [r.line() for r in results if not r.stored]
    if failed:
        raise ResumeError("runs of the spool could not be stored: " + "; ".join(failed))
    for uid in closed:
        logger.info("closed the interrupted run %s with an abort stop", uid)
    return results


def _close_spooled(spool: RunSpool, run_uid: str, experiment_id: str) -> bool:
    """Append an abort stop to a spooled run of the experiment that has none."""
    documents = spool.read(run_uid)  # a torn last line is dropped here
    if not documents or documents[0][0] != "start":
        return False
    start = documents[0][1]
    if start.get("experiment_id") != experiment_id or any(n == "stop" for n, _ in documents):
        return False
    documents.append(("stop", abort_stop(start["uid"], _event_counts(documents))))
    path = spool.path(run_uid)
    partial = path.with_suffix(".resume-tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(json.dumps({"name": n, "doc": d}) + "\n" for n, d in documents)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)  # atomic: the spool file is whole before and after
    return True


def abort_stop(run_uid: str, num_events: Mapping[str, int]) -> dict[str, Any]:
    """The ``stop`` document closing an interrupted run (event-model RunStop)."""
    return {
        "uid": str(uuid.uuid4()),
        "run_start": run_uid,
        "time": time.time(),
        "exit_status": "abort",
        "reason": ABORT_REASON,
        "num_events": dict(num_events),
    }


def _event_counts(documents: list[tuple[str, Mapping[str, Any]]]) -> Counter:
    streams = {d["uid"]: d.get("name", "primary") for n, d in documents if n == "descriptor"}
    counts: Counter = Counter({name: 0 for name in streams.values()})
    for name, doc in documents:
        if name == "event":
            counts[streams[doc["descriptor"]]] += 1
        elif name == "event_page":
            counts[streams[doc["descriptor"]]] += len(doc["seq_num"])
    return counts


def read_stored_experiment(runs: Any, experiment_id: str) -> StoredExperiment:
    """The experiment's runs in Tiled; runs still without ``stop`` are closed there.

    Raises
    ------
    ResumeError
        No run of the experiment is stored, it was not a rehearsal, or it finished.
    """
    from tiled.queries import Key

    found = runs.search(Key("start.experiment_id") == experiment_id)
    stored = [
        StoredRun(uid, node.metadata["start"], node.metadata.get("stop"))
        for uid, node in found.items()
    ]
    if not stored:
        raise ResumeError(f"no run of experiment {experiment_id!r} is stored in this data dir")
    stored.sort(key=lambda r: float(r.start.get("time", 0.0)))
    experiment = StoredExperiment(experiment_id, stored)
    _check_resumable(experiment)
    for run in stored:
        if run.stop is None:  # stored without spool file: close it in Tiled directly
            _close_in_tiled(runs, run)
    experiment.runs = [StoredRun(r.uid, r.start, runs[r.uid].metadata.get("stop")) for r in stored]
    experiment.closed = [
        r.uid for r in experiment.runs if (r.stop or {}).get("reason") == ABORT_REASON
    ]
    _read_record(runs, experiment)
    return experiment


def _check_resumable(experiment: StoredExperiment) -> None:
    name = experiment.experiment_id
    if REHEARSAL_OPTIONS_KEY not in experiment.first_start:
        raise ResumeError(
            f"experiment {name!r} was not started by `opmap rehearse` (no "
            f"{REHEARSAL_OPTIONS_KEY!r} in its start document): only rehearsals resume"
        )
    tails = [r for r in experiment.runs if r.map_index is None]
    if any((r.stop or {}).get("exit_status") == "success" for r in tails):
        raise ResumeError(f"experiment {name!r} finished (its tail run stopped): nothing to do")


def _close_in_tiled(runs: Any, run: StoredRun) -> None:
    """Close a run Tiled holds without ``stop`` (and without spool file), then validate
    and seal it: what Tiled holds of it is all there is."""
    node = runs[run.uid]
    stop = abort_stop(run.uid, {})
    node.update_metadata(metadata={"stop": stop, **dict(node.metadata)}, drop_revision=True)
    validate_run(runs, run.uid)
    seal_run(runs, run.uid)


def _read_record(runs: Any, experiment: StoredExperiment) -> None:
    """Protocol start, last sample and last map start from the stored streams."""
    samples: list[float] = []
    for run in experiment.runs:
        node = runs[run.uid]
        states = list(_stream_rows(node, EC_STATE_STREAM))
        started = [row for row in states if math.isfinite(row.get(_PROTOCOL_START, math.nan))]
        if started:
            experiment.protocol_start_s = started[-1][_PROTOCOL_START]
        if run.map_index is not None and states and states[0] in started:
            experiment.last_map_start_s = states[0][_ELAPSED]
        samples.extend(row["time_s"] for row in _stream_rows(node, EC_STREAM))
    experiment.last_sample_s = max(samples, default=math.nan)


def _stream_rows(node: Any, stream: str) -> Iterator[dict[str, float]]:
    """The rows of one stream of a stored run (none if the run has no such stream)."""
    try:
        table = node[stream].read()
    except KeyError:
        return
    columns = {name: np.asarray(table[name]) for name in table.keys()}  # noqa: SIM118
    n_rows = len(next(iter(columns.values()))) if columns else 0
    numbers = {name: v for name, v in columns.items() if v.dtype.kind in "fiu"}
    for i in range(n_rows):
        yield {name: float(values[i]) for name, values in numbers.items()}


def fast_forward(beamline: Any, protocol: Any, experiment: StoredExperiment) -> MsgGenerator[None]:
    """Bring a rebuilt simulated cell to the end of the stored record (a plan, no run).

    The protocol (if it had started) is started at the instrument time it started before,
    the clock moves to the last stored sample, and the potentiostat's buffer up to there
    (samples Tiled already holds) is dropped.
    """
    clock, potentiostat = beamline.clock, beamline.potentiostat
    if math.isfinite(experiment.protocol_start_s):
        yield from bps.prepare(potentiostat, protocol, wait=True)
        clock.advance(max(0.0, experiment.protocol_start_s - clock.now_s()))
        # outside a run (bluesky's kickoff message needs one): the device's own verb
        yield from bps.wait_for([potentiostat.kickoff])
    if math.isfinite(experiment.last_sample_s):
        clock.advance(max(0.0, experiment.last_sample_s - clock.now_s()))
    yield from bps.wait_for([potentiostat.driver.drain])
