"""`operando_experiment`: a pristine map, then maps while the potentiostat runs its protocol.

Run structure
-------------
One run per map. Every run carries ``experiment_id`` (shared by all runs of the experiment)
and ``map_index`` (0, 1, ...). Map 0 is the pristine map (``pristine = True``,
``purpose = "pristine map"``): taken before the protocol starts, the potentiostat is kicked off
at its end. Later maps start on a `MapCadence` (protocol time) or back to back. Each map run
holds the streams

- ``primary``: detector frames; ``lines``: one event per completed line (valid frames,
  x centres, z), see `opmap.plans._stubs`;
- ``ec_state``: two events, the potentiostat readback at the start and the end of the map
  (experiment time, potential, current, charge, step);
- ``electrochemistry``: the potentiostat buffer, collected after every line and at the end
  of the map. The buffer is drained by each collect, so the concatenation of this stream over
  the runs of an experiment is the gapless record of the whole protocol, whatever happened
  between runs. The experiment always ends with a run with ``map_index = None``
  (``purpose = "electrochemistry tail"``) that waits for the protocol end and collects the
  samples buffered after the last map. In the pristine run the buffer (the cell at open
  circuit before the protocol) is collected once, after the kickoff.

The potentiostat is prepared (its protocol checked against its safety window) before any
run opens, kicked off at the end of the pristine map (or at the start of the first map
without one), and runs on its own: pauses and suspenders do not stop it. With
``map_during_rest=False`` the first map (the state before the protocol starts: the pristine
map, or the first map without one) is always taken; later maps wait for a step that is not
open circuit. If the plan ends with an error, an abort or a stop, the potentiostat is stopped
(its safe state) before the exception propagates.

Resume
------
With ``resume`` (a `ResumePoint`, see ``opmap resume``) the plan goes on with an experiment
whose control process died: the same ``experiment_id``, map indices from
``ResumePoint.next_map_index``, ``max_maps`` counting the maps already taken. If the
protocol was running, the potentiostat is neither prepared nor kicked off again (it kept
cycling the cell); an interrupted map is re-measured at once, otherwise the next map waits
for the cadence after the last map's start. Runs of the resumed session carry
``resumed: True``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import EventPageCollectable, Flyable, Preparable, Readable, Status
from bluesky.utils import MsgGenerator

from opmap.devices import StepTable, Technique

from ._cadence import MapCadence
from ._fly_map import map_lines, map_metadata
from ._geometry import MapGeometry
from ._stubs import FlyAxis, FlyDetector, StepAxis

EC_STREAM = "electrochemistry"
EC_STATE_STREAM = "ec_state"
PROTOCOL_GROUP = "potentiostat_protocol"
#: A wait for protocol time ends this close to its target (s).
TIME_TOLERANCE_S = 1e-6


@runtime_checkable
class CyclingPotentiostat(Preparable, Flyable, EventPageCollectable, Readable, Protocol):
    """Prepared with a protocol, kicked off, completed when the protocol ends, collected."""

    def stop(self, *, success: bool = False) -> Any:
        """Put the cell in its safe state (open circuit)."""

    def wait_elapsed(self, elapsed_s: float) -> Status:
        """Finish once the protocol has run ``elapsed_s`` (s) or is done."""


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted `operando_experiment` goes on.

    Attributes
    ----------
    experiment_id : str
        The experiment's id (every resumed run carries it).
    next_map_index : int
        ``map_index`` of the first map of the resumed session (after every stored one,
        the interrupted map's included).
    maps_taken : int
        Maps completed before (counted against ``max_maps``).
    protocol_started : bool
        Whether the potentiostat's protocol was kicked off (it is then running now).
    last_map_start_s : float
        Protocol time (s, the potentiostat's elapsed time) at the start of the last map
        run after the kickoff; NaN if none.
    remeasure : bool
        A map was interrupted: take it again at once instead of waiting for the cadence.
    """

    experiment_id: str
    next_map_index: int
    maps_taken: int
    protocol_started: bool
    last_map_start_s: float = math.nan
    remeasure: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.next_map_index, int) and self.next_map_index >= 0):
            raise ValueError(f"next_map_index={self.next_map_index} must be an integer >= 0")
        if not (isinstance(self.maps_taken, int) and self.maps_taken >= 0):
            raise ValueError(f"maps_taken={self.maps_taken} must be an integer >= 0")


class _Progress:
    """What the plan learns while running: the protocol's completion status."""

    def __init__(self) -> None:
        self.protocol_status: Status | None = None
        #: Experiment time (s) recorded at the start of the latest map (``ec_state``).
        self.map_start_time_s = math.nan

    @property
    def started(self) -> bool:
        """Whether the protocol was kicked off."""
        return self.protocol_status is not None

    @property
    def protocol_done(self) -> bool:
        status = self.protocol_status
        return status is None or bool(status.done)


#: Reading-key suffixes accepted for each electrochemical quantity (first match wins).
EC_KEYS = {"time_s": ("time_s", "elapsed"), "step_index": ("step_index", "step")}


def ec_value(reading: Mapping[str, Any] | None, quantity: str) -> float:
    """The value of ``quantity`` (``"time_s"`` or ``"step_index"``) in a potentiostat reading.

    Reading keys are ``{device}-{suffix}`` or ``{device}_{suffix}`` with a suffix from
    `EC_KEYS`. ``None`` (a simulator's empty reading) gives NaN; a reading without the
    quantity raises ``ValueError``.
    """
    if reading is None:
        return math.nan
    for suffix in EC_KEYS[quantity]:
        for name, entry in reading.items():
            if name == suffix or name.endswith((f"_{suffix}", f"-{suffix}")):
                return float(entry["value"])
    raise ValueError(
        f"potentiostat reading has no {quantity} field {EC_KEYS[quantity]}: {sorted(reading)}"
    )


def _cadence(
    map_interval_s: float | None, map_schedule: MapCadence | Sequence[Sequence[float]] | None
) -> MapCadence | None:
    """The cadence from either option (``ValueError`` naming the bad one; not both)."""
    if map_interval_s is not None and map_schedule is not None:
        raise ValueError("give map_interval_s or map_schedule, not both")
    if map_interval_s is not None:
        if isinstance(map_interval_s, bool) or not (
            isinstance(map_interval_s, (int, float))
            and math.isfinite(map_interval_s)
            and map_interval_s > 0
        ):
            raise ValueError(
                f"map_interval_s={map_interval_s} must be None or a finite time > 0 s"
            )
        return MapCadence.every(float(map_interval_s))
    if map_schedule is None or isinstance(map_schedule, MapCadence):
        return map_schedule
    return MapCadence(tuple(map_schedule))


def _check_options(max_maps: int | None, poll_s: float) -> None:
    if max_maps is not None and not (isinstance(max_maps, int) and max_maps >= 1):
        raise ValueError(f"max_maps={max_maps} must be None or an integer >= 1")
    if not (math.isfinite(poll_s) and poll_s > 0):
        raise ValueError(f"poll_s={poll_s} must be a finite time > 0 s")


def operando_experiment(
    potentiostat: CyclingPotentiostat,
    detector: FlyDetector,
    stage_x: FlyAxis,
    stage_z: StepAxis,
    protocol: StepTable,
    geometry: MapGeometry,
    *,
    map_interval_s: float | None = None,
    map_schedule: MapCadence | Sequence[Sequence[float]] | None = None,
    pristine_map: bool = True,
    map_during_rest: bool = True,
    max_maps: int | None = None,
    poll_s: float = 1.0,
    md: dict[str, Any] | None = None,
    resume: ResumePoint | None = None,
) -> MsgGenerator[list[str]]:
    """Run an electrochemical protocol and fly maps until it completes.

    See the module notes for the run structure. An interruption loses at most the line in
    progress (re-taken on resume), never electrochemistry samples.

    Parameters
    ----------
    potentiostat
        Runs ``protocol`` (e.g. an `opmap.devices.Potentiostat`).
    detector, stage_x, stage_z
        As for `fly_map` (stage axes in µm).
    protocol
        The electrochemical protocol; checked by ``potentiostat.prepare`` before any run.
    geometry
        Every map's geometry.
    map_interval_s
        Start a map every this many seconds of protocol time (the potentiostat's
        ``time_s``); shorthand for ``map_schedule=[(0, map_interval_s)]``.
    map_schedule
        A `MapCadence` or its ``(from_time_s, interval_s)`` pairs: from protocol time
        ``from_time_s`` (s) on, a map starts every ``interval_s`` (s). ``None`` (and no
        ``map_interval_s``) maps back to back.
    pristine_map
        Take map 0 before the protocol starts (``pristine`` in its metadata), then kick off
        the potentiostat; the next map starts at protocol time 0.
    map_during_rest
        If False, no map starts during an open-circuit step.
    max_maps
        Stop mapping after this many maps (the protocol still runs to its end).
    poll_s
        Period (s of the potentiostat's elapsed time, not wall time) of the checks while
        waiting through a rest step and after the last map.
    md
        Extra metadata for every run.
    resume
        Go on with an interrupted experiment (see the module notes); None starts a new one.

    Returns
    -------
    list of str
        The uids of the runs, in order.
    """
    if not isinstance(geometry, MapGeometry):
        raise TypeError(f"geometry must be a MapGeometry, not {type(geometry).__name__}")
    if not isinstance(protocol, StepTable) or not protocol.steps:
        raise ValueError("protocol must be a non-empty opmap StepTable")
    cadence = _cadence(map_interval_s, map_schedule)
    _check_options(max_maps, poll_s)
    if resume is not None and not isinstance(resume, ResumePoint):
        raise TypeError(f"resume must be a ResumePoint or None, not {type(resume).__name__}")
    options = _Options(cadence, bool(pristine_map), bool(map_during_rest), max_maps, poll_s)
    _md = _experiment_md(
        (potentiostat, detector, stage_x, stage_z),
        protocol,
        geometry,
        {
            "map_interval_s": map_interval_s,
            "map_schedule": None if cadence is None else [list(s) for s in cadence.stretches],
            "pristine_map": options.pristine_map,
            "map_during_rest": map_during_rest,
            "max_maps": max_maps,
        },
        md,
    )
    if resume is not None:
        _md.update(experiment_id=resume.experiment_id, resumed=True)
    devices = (potentiostat, detector, stage_x, stage_z)
    body = _experiment(devices, protocol, geometry, options, _md, resume)

    def stop_potentiostat(_: Exception) -> MsgGenerator[None]:
        yield from bps.stop(potentiostat)

    return (yield from bpp.contingency_wrapper(body, except_plan=stop_potentiostat))


def _experiment_md(
    devices: tuple[CyclingPotentiostat, FlyDetector, FlyAxis, StepAxis],
    protocol: StepTable,
    geometry: MapGeometry,
    options: dict[str, Any],
    md: dict[str, Any] | None,
) -> dict[str, Any]:
    """Start-document metadata shared by every run of one experiment (a new experiment id)."""
    potentiostat, detector, stage_x, stage_z = devices
    _md = map_metadata("operando_experiment", detector, stage_x, stage_z, geometry)
    _md["plan_args"].update(potentiostat=repr(potentiostat), protocol=repr(protocol), **options)
    _md["detectors"].append(potentiostat.name)
    _md["experiment_id"] = str(uuid.uuid4())
    _md.update(md or {})
    return _md


@dataclass(frozen=True)
class _Options:
    """The checked mapping options of one experiment."""

    cadence: MapCadence | None
    pristine_map: bool
    map_during_rest: bool
    max_maps: int | None
    poll_s: float

    def more_maps(self, n_maps: int) -> bool:
        return self.max_maps is None or n_maps < self.max_maps


def _experiment(
    devices: tuple[CyclingPotentiostat, FlyDetector, FlyAxis, StepAxis],
    protocol: StepTable,
    geometry: MapGeometry,
    options: _Options,
    md: dict[str, Any],
    resume: ResumePoint | None = None,
) -> MsgGenerator[list[str]]:
    potentiostat = devices[0]
    progress = _Progress()
    poll_s = options.poll_s
    begin = _begin(potentiostat, protocol, options, progress, resume)
    first_index, taken, pristine = yield from begin
    uids: list[str] = []

    def more_maps() -> bool:
        return options.more_maps(taken + len(uids))

    if pristine and more_maps():
        run = _map_run(devices, geometry, progress, first_index, md, pristine=True)
        uids.append((yield from run))
    while more_maps():
        if progress.started and progress.protocol_done:
            break
        if progress.started and not options.map_during_rest:
            yield from _wait_while_resting(potentiostat, protocol, progress, poll_s)
            if progress.protocol_done:
                break
        index = first_index + len(uids)
        uids.append((yield from _map_run(devices, geometry, progress, index, md)))
        if options.cadence is not None:
            until_s = options.cadence.next_start_s(progress.map_start_time_s)
            yield from _wait_for_time(potentiostat, until_s, progress, poll_s)
    # Always: samples buffered after the last map's final collect belong to the record.
    uids.append((yield from _tail_run(potentiostat, progress, poll_s, md)))
    return uids


def _begin(
    potentiostat: CyclingPotentiostat,
    protocol: StepTable,
    options: _Options,
    progress: _Progress,
    resume: ResumePoint | None,
) -> MsgGenerator[tuple[int, int, bool]]:
    """Prepare a new experiment, or pick a resumed one up: (first map index, maps taken
    before, whether the first map is the pristine one)."""
    if resume is None or not resume.protocol_started:
        yield from bps.prepare(potentiostat, protocol, wait=True)
        if resume is None:
            return 0, 0, options.pristine_map
        return resume.next_map_index, resume.maps_taken, options.pristine_map
    # the protocol kept running while the control process was down
    progress.protocol_status = yield from bps.complete(potentiostat, group=PROTOCOL_GROUP)
    cadence, last_start_s = options.cadence, resume.last_map_start_s
    if not resume.remeasure and cadence is not None and math.isfinite(last_start_s):
        until_s = cadence.next_start_s(last_start_s)
        yield from _wait_for_time(potentiostat, until_s, progress, options.poll_s)
    return resume.next_map_index, resume.maps_taken, False


def _kickoff(potentiostat: CyclingPotentiostat, progress: _Progress) -> MsgGenerator[None]:
    yield from bps.kickoff(potentiostat, wait=True)
    progress.protocol_status = yield from bps.complete(potentiostat, group=PROTOCOL_GROUP)


def _map_run(
    devices: tuple[CyclingPotentiostat, FlyDetector, FlyAxis, StepAxis],
    geometry: MapGeometry,
    progress: _Progress,
    map_index: int,
    md: dict[str, Any],
    *,
    pristine: bool = False,
) -> MsgGenerator[str]:
    potentiostat, detector, stage_x, stage_z = devices

    def collect_ec(_: int = 0) -> MsgGenerator[None]:
        yield from bps.collect(potentiostat, name=EC_STREAM)

    run_md = {**md, "map_index": map_index, "pristine": pristine}
    if pristine:
        run_md["purpose"] = "pristine map"

    @bpp.run_decorator(md=run_md)  # staged inside: files closed by the stop (see fly_map)
    @bpp.stage_decorator([detector])
    def run() -> MsgGenerator[None]:
        if not pristine and not progress.started:
            yield from _kickoff(potentiostat, progress)
        yield from bps.declare_stream(potentiostat, name=EC_STREAM, collect=True)
        yield from bps.checkpoint()
        start = yield from bps.trigger_and_read([potentiostat], name=EC_STATE_STREAM)
        progress.map_start_time_s = ec_value(start, "time_s")
        # before the protocol the potentiostat is idle: its buffer is collected once, below
        after_line = None if pristine else collect_ec
        yield from map_lines(detector, stage_x, stage_z, geometry, after_line=after_line)
        yield from bps.trigger_and_read([potentiostat], name=EC_STATE_STREAM)
        if pristine:
            yield from _kickoff(potentiostat, progress)
        yield from collect_ec()

    return (yield from run())


def _tail_run(
    potentiostat: CyclingPotentiostat, progress: _Progress, poll_s: float, md: dict[str, Any]
) -> MsgGenerator[str]:
    tail_md = {**md, "map_index": None, "purpose": "electrochemistry tail"}

    @bpp.run_decorator(md=tail_md)
    def run() -> MsgGenerator[None]:
        yield from bps.declare_stream(potentiostat, name=EC_STREAM, collect=True)
        while not progress.protocol_done:
            yield from bps.checkpoint()
            yield from _wait_elapsed(potentiostat, poll_s)
            yield from bps.collect(potentiostat, name=EC_STREAM)
        yield from bps.collect(potentiostat, name=EC_STREAM)

    return (yield from run())


def _wait_while_resting(
    potentiostat: CyclingPotentiostat, protocol: StepTable, progress: _Progress, poll_s: float
) -> MsgGenerator[None]:
    while not progress.protocol_done:
        reading = yield from bps.read(potentiostat)
        step = ec_value(reading, "step_index")
        if math.isnan(step) or protocol.steps[int(step)].technique != Technique.OPEN_CIRCUIT:
            return
        yield from _wait_elapsed(potentiostat, poll_s, reading)


def _wait_for_time(
    potentiostat: CyclingPotentiostat, until_s: float, progress: _Progress, poll_s: float
) -> MsgGenerator[None]:
    while not progress.protocol_done:
        reading = yield from bps.read(potentiostat)
        elapsed_s = ec_value(reading, "time_s")
        # within rounding of the target: a protocol started at a fractional clock time reads
        # its elapsed time back as t - start, which may fall 1e-13 s short forever
        if not elapsed_s < until_s - TIME_TOLERANCE_S:
            return
        yield from _wait_elapsed(potentiostat, until_s - elapsed_s, reading)


def _wait_elapsed(
    potentiostat: CyclingPotentiostat,
    duration_s: float,
    reading: Mapping[str, Any] | None = None,
) -> MsgGenerator[None]:
    """Wait ``duration_s`` of the potentiostat's own (experiment) time, not wall time.

    On a simulated beamline the clock then jumps straight there; on the real one the
    status finishes when the instrument's elapsed time has passed.
    """
    if reading is None:
        reading = yield from bps.read(potentiostat)
    until_s = ec_value(reading, "time_s") + duration_s
    if math.isnan(until_s):  # a simulator's empty reading
        return
    yield from bps.wait_for([lambda: potentiostat.wait_elapsed(until_s)])
