"""``opmap rehearse``: the paper's operando experiment on the digital twin, end to end.

Steps: create the data directory; start the embedded Tiled server (SQLite + DuckDB, API
key); build the simulated beamline; calibrate the detector on a simulated CeO2 frame from a
deliberately wrong design geometry; run the paper's protocol (4.3 V charge, rest, 2 µA
discharge to 3.0 V, rest) with maps throughout on the event-driven clock, every document into
Tiled, the live analysis (guarded) writing products and the twin's ground truth into Tiled
and figures into the data directory; print where everything is and how to read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bluesky import RunEngine
from ophyd_async.core import init_devices

from opmap.analysis.geometry import DetectorGeometry, analysis_geometry, save_poni
from opmap.analysis.nexus import next_free_path
from opmap.analysis.products import LabelledArray, Products
from opmap.beamline import BeamlineConfig, SimConfig, build_beamline
from opmap.callbacks.calibration import CalibrationCallback
from opmap.callbacks.guard import GuardedCallback
from opmap.callbacks.live_analysis import LiveAnalysis
from opmap.callbacks.plots import LiveFigures
from opmap.callbacks.report import format_table, report_table, write_report
from opmap.callbacks.spool import RunSpool, RunTally
from opmap.callbacks.tiled_products import read_latest, versions
from opmap.callbacks.tiled_writer import ValidatedTiledWriter, ensure_layout
from opmap.devices import paper_protocol
from opmap.heap import release_free_heap
from opmap.plans import (
    EC_STATE_STREAM,
    MapCadence,
    MapGeometry,
    ResumePoint,
    calibrate,
    operando_experiment,
)
from opmap.service import start_server_subprocess
from opmap.settings import OpmapSettings
from opmap.twin import TwinConfig
from opmap.twin.forward import DetectorMask
from opmap.twin_truth import RemoteTruthSource, TruthChannelError, TwinTruthSource

from ._network_control import NetworkStartError, sim_beamline_process
from ._rehearsal_params import analysis_parameters_for_twin
from ._rehearsal_progress import RehearsalProgress
from ._resume import (
    ABORT_REASON,
    REHEARSAL_OPTIONS_KEY,
    ResumeError,
    StoredExperiment,
    close_interrupted,
    fast_forward,
    read_stored_experiment,
)

__all__ = [
    "ABORT_REASON",
    "PAPER_MAP_SCHEDULE",
    "NetworkStartError",
    "RehearsalOptions",
    "RehearsalResult",
    "ResumeError",
    "analysis_parameters_for_twin",
    "map_cadence",
    "read_stored_experiment",
    "rehearse",
    "resume_rehearsal",
    "sim_beamline_process",
]

logger = logging.getLogger(__name__)

#: Longest wait for the embedded Tiled server to answer (s): minutes on a loaded machine.
SERVER_STARTUP_S = 600.0
#: Longest wait, after the last run, for the spool to reach Tiled (s).
SPOOL_DRAIN_S = 300.0


#: How the rehearsal drives its devices (`RehearsalOptions.control`).
CONTROLS = ("sim", "network")
#: The in-process simulation's time base (`RehearsalOptions.clock`).
CLOCKS = ("event", "wall")
#: Network control: cell seconds per wall second of ``opmap sim-beamline`` by default.
NETWORK_SPEEDUP = 20.0
#: Network control's small default experiment: 9 × 9 maps of a protocol 20 × shorter
#: (18 min of cell time, 54 s of wall time at `NETWORK_SPEEDUP`; a map takes 15-20 s of
#: wall time, 5-6 min of cell time: the pristine map and about three more).
NETWORK_MAP_SHAPE = (9, 9)
NETWORK_TIME_SCALE = 0.05


#: The rehearsal's map cadence, (from protocol time s, interval s). With the twin's default
#: electrochemistry the biphasic front enters the 20 µm cathode at the start of the 4.3 V
#: charge and reaches its bottom at ~2050 s (~10 nm/s): maps every 300 s (a map lasts
#: ~155 s) put the front in 7 maps (starts 0-1800 s); then one map every 30 min.
PAPER_MAP_SCHEDULE: tuple[tuple[float, float], ...] = ((0.0, 300.0), (2100.0, 1800.0))


@dataclass(frozen=True)
class RehearsalOptions:
    """What to rehearse.

    Attributes
    ----------
    data_dir : Path
        Everything goes here (server catalog, detector files, PONI, figures).
    binning : int
        Eiger readout binning: 4 (default, fast) or 1 (full 4M).
    map_shape : (int, int)
        Map pixels (n_z, n_x); the paper's 49 × 49.
    map_interval_s : float or None
        Protocol time between map starts (s, as given: not scaled); overrides
        ``map_schedule`` when given.
    map_schedule : tuple of (from_time_s, interval_s), or None
        The cadence in protocol time (s), see `opmap.plans.MapCadence`; None (and no
        ``map_interval_s``) maps back to back. Default `PAPER_MAP_SCHEDULE`: every 5 min
        while the twin's biphasic front crosses the cathode, every 30 min after.
        Its times are multiplied by ``time_scale``.
    pristine_map : bool
        Take map 0 before the protocol starts.
    time_scale : float
        Multiplies every protocol duration (1 = the paper's timeline).
    max_maps : int or None
        Stop mapping after this many maps (the protocol still runs to its end).
    live_analysis : bool
        Run the live analysis in process.
    design_distance_error_m : float
        Error of the design detector distance the calibration starts from (m).
    seed : int
        The one seed of every random draw (detector noise, the twin's grains and family
        modulation). Same seed, same commit: the same experiment, whatever the machine's
        load (see docs/devices.md); recorded as ``seed`` in every run's start document and
        in the products' metadata.
    control : {"sim", "network"}
        ``"sim"`` (default): the simulated devices in this process, on the clock named by
        ``clock``. ``"network"``: ``opmap sim-beamline`` in a child process and the real
        devices (`MapStage`, the EPICS potentiostat, `BeamMonitor`, `SimplonEiger`) over
        Channel Access and HTTP, in wall time (see `opmap._network_control`); the truth
        table's truth comes from the child's twin (`opmap.twin_truth.RemoteTruthSource`).
    speedup : float
        Network control, or ``clock="wall"``: cell (electrochemistry) seconds per wall
        second; motors and exposures run in wall time.
    clock : {"event", "wall"} or None
        The in-process simulation's time base. ``"event"`` (default in process): the
        event-driven clock, exposures and moves cost no wall time. ``"wall"``: the time
        base of ``opmap sim-beamline`` in process (motors and exposures in wall time, the
        cell at ``speedup`` × wall), the like-for-like reference of network control, which
        is always ``"wall"``. None = ``"event"`` in process, ``"wall"`` over the network.
        A wall-clock rehearsal cannot be resumed (``opmap resume`` fast-forwards an
        event-driven cell).
    analysis_overrides : mapping of str to JSON value
        `AnalysisParameters` of the live analysis other than its defaults (e.g.
        ``{"sector_background": "between_spots"}``); checked here, before anything runs,
        and recorded with the options (a resumed rehearsal keeps them). Empty: the
        analysis's defaults, the paper's methods.
    """

    data_dir: Path = Path("opmap-data")
    binning: int = 4
    map_shape: tuple[int, int] = (49, 49)
    map_interval_s: float | None = None
    map_schedule: tuple[tuple[float, float], ...] | None = PAPER_MAP_SCHEDULE
    pristine_map: bool = True
    time_scale: float = 1.0
    max_maps: int | None = None
    live_analysis: bool = True
    design_distance_error_m: float = 0.0008
    seed: int = 0
    control: str = "sim"
    speedup: float = NETWORK_SPEEDUP
    clock: str | None = None
    analysis_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.control not in CONTROLS:
            raise ValueError(f"control={self.control!r} must be one of {CONTROLS}")
        if self.clock is not None and self.clock not in CLOCKS:
            raise ValueError(f"clock={self.clock!r} must be one of {CLOCKS} or None")
        if self.control == "network" and self.clock == "event":
            raise ValueError("clock='event' needs control='sim': the network runs in wall time")
        if not (np.isfinite(self.speedup) and self.speedup > 0):
            raise ValueError(f"speedup={self.speedup} must be a finite number > 0")
        if self.binning not in (1, 2, 4):
            raise ValueError(f"binning={self.binning} must be 1, 2 or 4")
        if min(self.map_shape) < 2:
            raise ValueError(f"map_shape={self.map_shape} needs at least 2 × 2 pixels")
        if self.map_interval_s is not None and not self.map_interval_s > 0:
            raise ValueError(f"map_interval_s={self.map_interval_s} must be > 0 s or None")
        if self.map_schedule is not None:
            MapCadence(self.map_schedule)  # a bad stretch is named here, before any run
        if not self.time_scale > 0:
            raise ValueError(f"time_scale={self.time_scale} must be > 0")
        if self.max_maps is not None and self.max_maps < 1:
            raise ValueError(f"max_maps={self.max_maps} must be >= 1 or None")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed={self.seed} must be an integer >= 0")
        try:  # every key and value checked before anything runs (the twin's families)
            analysis_parameters_for_twin(TwinConfig(seed=self.seed), **self.analysis_overrides)
        except ValueError as error:  # pydantic names the parameter and what it allows
            raise ValueError(f"analysis_overrides: {error}") from None

    @property
    def wall_clock(self) -> bool:
        """Motors and exposures last their wall time (network control, or ``clock="wall"``)."""
        return self.control == "network" or self.clock == "wall"


@dataclass
class RehearsalResult:
    """Where everything is, and the figures of the run."""

    data_dir: Path
    url: str
    api_key_file: Path
    experiment_id: str
    map_uids: list[str]
    poni: Path | None
    wall_s: float
    figures: list[Path] = field(default_factory=list)
    analysis_failures: int = 0
    truth_table: list[dict[str, Any]] = field(default_factory=list)
    live_lag_maps: int = 0
    #: Maps the live analysis wrote with a later map's products while behind (no figure).
    live_coalesced_maps: int = 0
    #: The experiment's products as read back from Tiled (None without live analysis).
    products: Products | None = None
    #: Per run, raw documents emitted against stored in Tiled (`opmap.callbacks.spool`).
    raw_tallies: list[RunTally] = field(default_factory=list)
    #: Network control: the process id of ``opmap sim-beamline`` (stopped by now).
    control_pid: int | None = None

    @property
    def runs_not_landed(self) -> list[RunTally]:
        """Runs of which Tiled does not hold every document exactly once."""
        return [tally for tally in self.raw_tallies if not tally.complete]


def map_geometry(options: RehearsalOptions) -> MapGeometry:
    """The map of the paper: 1 µm z steps from below the cathode, 33 µm x pixels."""
    n_z, n_x = options.map_shape
    return MapGeometry(
        z_start_um=-3.0,
        z_step_um=1.0,
        z_count=n_z,
        x_start_um=200.0,
        x_stop_um=200.0 + 33.0 * n_x,
        x_count=n_x,
    )


def map_cadence(options: RehearsalOptions) -> MapCadence | None:
    """The cadence of ``options`` in the time-scaled protocol's time; None = back to back."""
    if options.map_interval_s is not None:
        return MapCadence.every(options.map_interval_s)
    if options.map_schedule is None:
        return None
    return MapCadence(options.map_schedule).scaled(options.time_scale)


def _scaled_protocol(time_scale: float):
    hour = 3600.0 * time_scale
    return paper_protocol(
        charge_duration_s=2.3 * hour,
        first_rest_s=600.0 * time_scale,
        max_discharge_s=3 * hour,
        final_rest_s=1800.0 * time_scale,
    )


class _TwinTruth:
    """Ground truth of the twin for each map, at the map's mid time, as one-map arrays.

    It notes each map's cell times and asks a truth source (`opmap.twin_truth`) for the
    map's truth: the twin of this process (`TwinTruthSource`) on the beamline's clock, read
    at the run's start and stop documents; or, in network control (``at_ec_state=True``),
    the twin ``opmap sim-beamline`` renders from and its cell clock (`RemoteTruthSource` as
    both ``source`` and ``clock``), read when the map's two ``ec_state`` events arrive:
    right before its first line and right after its last, as the start and stop documents
    are on the event-driven clock (over the network the pristine map's kickoff and the last
    collect, between the last line and the stop document, take seconds of cell time).

    It also keeps the twin's memory flat: once no map still waits for its truth, the twin
    forgets the snapshots before the latest map (`CellTwin.forget_before`). With
    ``truths_wanted=False`` (no live analysis asks for truths) it only does that.
    """

    #: kept before the earliest map still waiting for its truth (s): the front speed looks
    #: back 30 s from a map's mid time
    HISTORY_MARGIN_S = 120.0

    def __init__(
        self,
        beamline: Any,
        *,
        truths_wanted: bool = True,
        source: Any = None,
        clock: Any = None,
        at_ec_state: bool = False,
    ) -> None:
        self.beamline = beamline
        self.truths_wanted = truths_wanted
        self.source = TwinTruthSource(beamline.twin) if source is None else source
        self.clock = beamline.clock if clock is None else clock
        self.at_ec_state = at_ec_state
        self._start_s: dict[str, float] = {}
        self._stop_s: dict[str, float] = {}
        self._mid_s: dict[int, float] = {}  # per map index: new/deceased grains since the last
        self._waiting: dict[str, float] = {}  # run uid -> start (s) of maps without truth yet
        self._ec_state: dict[str, str] = {}  # ec_state descriptor uid -> run uid
        self._maps: set[str] = set()  # map runs (at_ec_state: their times still to come)
        self._untimed: set[str] = set()  # at_ec_state: runs whose cell time could not be read
        # the RunEngine thread (documents) and the live analysis thread (truths) both use
        # the times above and decide what the twin forgets: one at a time
        self._lock = threading.Lock()

    def remember(self, run_uid: str, position: int, start_s: float, stop_s: float) -> None:
        """Experiment times of a stored map analysed again (``opmap resume``), the
        ``position``-th of the products: its truth, and the next map's new grains."""
        with self._lock:
            self._start_s[run_uid], self._stop_s[run_uid] = start_s, stop_s
            self._mid_s[position] = 0.5 * (start_s + stop_s)
            self._waiting[run_uid] = start_s
            self._forget()

    def on_document(self, name: str, doc: dict[str, Any]) -> None:
        """Note a map's cell times (in the RunEngine's thread)."""
        if self.at_ec_state:
            self._at_ec_state(name, doc)
        elif name == "start":
            self._started(doc["uid"], "map_geometry" in doc, self.clock.now_s())
        elif name == "stop":
            self._stopped(doc["run_start"], self.clock.now_s())

    def _at_ec_state(self, name: str, doc: dict[str, Any]) -> None:
        """The cell time when each of the map's two ``ec_state`` events arrives."""
        if name == "start" and "map_geometry" in doc:
            self._maps.add(doc["uid"])
        elif name == "descriptor" and doc.get("name") == EC_STATE_STREAM:
            self._ec_state[doc["uid"]] = doc["run_start"]
        elif name == "event" and doc["descriptor"] in self._ec_state:
            run_uid = self._ec_state[doc["descriptor"]]
            try:  # a child that does not answer must not abort the run: only its truth
                now_s = self.clock.now_s()
            except TruthChannelError as err:
                logger.warning("run %s: no cell time, so no truth for this map: %s", run_uid, err)
                self._untimed.add(run_uid)
                return
            if run_uid not in self._start_s:
                self._started(run_uid, run_uid in self._maps, now_s)
            elif run_uid not in self._stop_s:
                self._stopped(run_uid, now_s)

    def _started(self, uid: str, is_map: bool, now_s: float) -> None:
        with self._lock:
            self._start_s[uid] = now_s
            if self.truths_wanted and is_map:
                self._waiting[uid] = now_s

    def _stopped(self, run_uid: str, now_s: float) -> None:
        with self._lock:
            self._stop_s[run_uid] = now_s
            self._forget()

    def _forget(self) -> None:
        """Let the twin drop what neither a waiting truth nor the next frames need (call
        with ``_lock`` held)."""
        if self._waiting:  # the earliest map whose truth is still to come
            keep_from_s = min(self._waiting.values())
        elif self._start_s:  # later truths and frames belong to this run or later ones
            keep_from_s = max(self._start_s.values())
        else:
            return
        try:
            self.source.forget_before(keep_from_s - self.HISTORY_MARGIN_S)
        except TruthChannelError as err:  # memory only: the run goes on (network control)
            logger.warning("the twin's history was not trimmed: %s", err)

    def __call__(self, start: Mapping[str, Any], map_index: int) -> dict[str, LabelledArray]:
        uid = start["uid"]
        if self.at_ec_state and (uid in self._untimed or uid not in self._stop_s):
            raise RuntimeError(f"run {uid}: its cell times were not noted, so it has no truth")
        now_s = self.clock.now_s()
        with self._lock:
            start_s = self._start_s.get(uid, 0.0)
            stop_s = self._stop_s.get(uid, now_s)
            self._mid_s[map_index] = 0.5 * (start_s + stop_s)
            previous_s = self._mid_s.get(map_index - 1)
        out = self.source.map_truth(start["map_geometry"], start_s, stop_s, previous_s)
        with self._lock:
            self._waiting.pop(uid, None)
            self._forget()
        return out


def _design_poni(beamline: Any, folder: Path, distance_error_m: float) -> Path:
    """A design geometry off by ``distance_error_m``: what the beamline drawings give."""
    ai = beamline.integrator
    design = ai.__class__(
        dist=ai.dist + distance_error_m,
        poni1=ai.poni1,
        poni2=ai.poni2,
        detector=ai.detector,
        wavelength=ai.wavelength,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "design.poni"
    path.unlink(missing_ok=True)  # the design geometry is regenerated, never user data
    return save_poni(design, path)


def _analysis_geometry(poni: Path, beamline: Any) -> DetectorGeometry:
    ai = beamline.integrator
    mask = DetectorMask().analysis_mask(ai)
    return analysis_geometry(poni, mask=mask, expected_shape=ai.detector.shape)


def rehearse(
    options: RehearsalOptions,
    *,
    callbacks: Sequence[Callable[[str, Any], Any]] = (),
    msg_hook: Callable[[Any], None] | None = None,
) -> RehearsalResult:
    """Run the rehearsal described by ``options``; see the module docstring.

    Parameters
    ----------
    options
        What to rehearse.
    callbacks
        Extra document callbacks of the RunEngine (e.g. to capture the documents).
    msg_hook
        Called with every RunEngine message before it is processed (the RunEngine's
        ``msg_hook``): when each step of a plan starts, for profiling
        (``benchmarks/bench_network_rehearsal.py``).

    Returns
    -------
    RehearsalResult
        Where everything is, the runs, the products read back and the truth table.
    """
    wall0 = time.monotonic()
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = OpmapSettings(data_dir=data_dir)
    print(f"opmap rehearsal in {data_dir} (seed {options.seed})")
    print("starting the Tiled server (SQLite catalog, DuckDB tables, API key) ...")
    with (
        start_server_subprocess(settings, startup_timeout_s=SERVER_STARTUP_S) as server,
        _control(options, settings) as endpoint,
    ):
        session = _Session.begin(options, settings, server, callbacks, endpoint)
        session.RE.msg_hook = msg_hook
        poni = _calibrate(session.RE, session.beamline, session.layout, data_dir, options)
        session.subscribe_analysis(poni)
        print("running the paper's protocol with maps throughout ...")
        result = session.run(_experiment_plan(session.beamline, options, poni), poni, wall0)
    if endpoint is not None:
        result.control_pid = endpoint.pid
        print(f"opmap sim-beamline (pid {endpoint.pid}) stopped; its log: {endpoint.log}")
    return result


@contextlib.contextmanager
def _control(options: RehearsalOptions, settings: OpmapSettings) -> Iterator[Any]:
    """Nothing in simulation; ``opmap sim-beamline`` in a child process in network control."""
    if options.control == "sim":
        yield None
        return
    detector_dir = settings.detector_dir  # the Tiled server's readable storage
    detector_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting opmap sim-beamline (cell at {options.speedup:g}x wall time) ...")
    with sim_beamline_process(
        detector_dir,
        settings.data_dir / "logs",
        speedup=options.speedup,
        binning=options.binning,
        seed=options.seed,
    ) as endpoint:
        print(
            f"  pid {endpoint.pid}: Channel Access on 127.0.0.1:{endpoint.ca_port} under "
            f"{endpoint.prefix}, SIMPLON on {endpoint.http_url}"
        )
        yield endpoint


def resume_rehearsal(
    experiment_id: str, data_dir: Path, *, callbacks: Sequence[Callable[[str, Any], Any]] = ()
) -> RehearsalResult:
    """Go on with a rehearsal whose control process died (``opmap resume``).

    The interrupted run is closed in Tiled with an abort ``stop`` and its reason (its
    spooled documents stored first); the beamline is rebuilt from the options in the start
    documents, the simulated cell brought to the last stored electrochemistry sample; the
    interrupted map is measured again and the schedule goes on, with the same
    ``experiment_id``, the next ``map_index``, the live analysis growing the same product
    version. See `opmap._resume` and docs/operations.md.

    Raises
    ------
    ResumeError
        Before anything moves: unknown, finished or non-rehearsal experiment.
    """
    wall0 = time.monotonic()
    data_dir = Path(data_dir).resolve()
    settings = OpmapSettings(data_dir=data_dir)
    if not settings.api_key_file.is_file():
        raise ResumeError(f"data_dir {data_dir} is not an opmap data directory (no api-key)")
    print(f"resuming experiment {experiment_id} in {data_dir}")
    with start_server_subprocess(settings, startup_timeout_s=SERVER_STARTUP_S) as server:
        raw = ensure_layout(server.client())["raw"]
        for line in close_interrupted(raw, RunSpool(settings.backup_dir), experiment_id):
            print(f"  spool: {line.line()}")
        stored = read_stored_experiment(raw, experiment_id)
        if stored.options.get("control", "sim") != "sim":
            raise ResumeError(
                f"experiment {experiment_id} ran with control={stored.options['control']!r}: "
                "only in-process rehearsals can be resumed"
            )
        if stored.options.get("clock") == "wall":
            raise ResumeError(
                f"experiment {experiment_id} ran with clock='wall': only rehearsals on the "
                "event-driven clock can be resumed"
            )
        for uid in stored.closed:
            print(f"  closed the interrupted run {uid} (stop: abort, reason recorded)")
        options = _stored_options(stored, data_dir)
        session = _Session.begin(options, settings, server, callbacks)
        poni = data_dir / "poni" / str(stored.first_start["poni_file"])
        session.subscribe_analysis(poni, resume=stored)
        point = stored.resume_point()
        protocol = _scaled_protocol(options.time_scale)
        session.RE(fast_forward(session.beamline, protocol, stored))
        how = "re-measuring the cut map" if point.remeasure else "on schedule"
        print(
            f"going on at experiment time {session.beamline.clock.now_s():.0f} s with map "
            f"{point.next_map_index} ({how})"
        )
        plan = _experiment_plan(session.beamline, options, poni, resume=point)
        return session.run(plan, poni, wall0)


def _stored_options(stored: StoredExperiment, data_dir: Path) -> RehearsalOptions:
    recorded = stored.options
    schedule = recorded.get("map_schedule")
    recorded["map_shape"] = tuple(recorded["map_shape"])
    recorded["map_schedule"] = None if schedule is None else tuple(map(tuple, schedule))
    return RehearsalOptions(data_dir=data_dir, **recorded)


@dataclass
class _Session:
    """One control session of a rehearsal: server client, RunEngine, beamline, writers."""

    options: RehearsalOptions
    settings: OpmapSettings
    server: Any
    layout: Any
    RE: RunEngine
    beamline: Any
    writer: ValidatedTiledWriter
    live: LiveAnalysis | None = None
    guard: GuardedCallback | None = None
    #: Network control: the truth of the twin ``opmap sim-beamline`` renders from.
    remote_truth: RemoteTruthSource | None = None

    @classmethod
    def begin(cls, options, settings, server, callbacks, endpoint=None) -> _Session:
        layout = ensure_layout(server.client())
        RE, beamline = _engine_and_beamline(options, settings.data_dir, endpoint)
        remote = None if endpoint is None else RemoteTruthSource(endpoint.http_url)
        # Structure only: the server reading one element of the Eiger's virtual dataset
        # decompresses the whole map (a third of the CPU in a profile); the live analysis
        # reads every frame of every map anyway.
        writer = ValidatedTiledWriter(
            layout["raw"],
            spool_directory=settings.backup_dir,
            background=True,
            try_reading=not options.live_analysis,
        )
        for callback in (writer, *callbacks):
            RE.subscribe(callback)
        return cls(options, settings, server, layout, RE, beamline, writer, remote_truth=remote)

    def subscribe_analysis(self, poni: Path, resume: StoredExperiment | None = None) -> None:
        """The live analysis (if asked for) and the progress line, subscribed to the RE."""
        if self.options.live_analysis:
            figures_dir = self.settings.data_dir / "figures"
            self.live, self.guard = _subscribe_live_analysis(
                self.RE,
                self.beamline,
                self.layout,
                poni,
                figures_dir,
                self.remote_truth,
                at_ec_state=self.options.wall_clock,
                analysis_overrides=self.options.analysis_overrides,
            )
            if resume is not None:
                _resume_products(self.live, self.layout, resume)
        elif self.beamline.twin is not None:  # no truths asked for: keeps the twin's memory flat
            self.RE.subscribe(_TwinTruth(self.beamline, truths_wanted=False).on_document)
        resumable = not self.options.wall_clock
        self.RE.subscribe(RehearsalProgress(self.options.max_maps, resumable=resumable))

    def run(self, plan: Any, poni: Path, wall0: float) -> RehearsalResult:
        """Run the experiment plan, wait for every document and product, report."""
        settings, live, writer = self.settings, self.live, self.writer
        result = RehearsalResult(
            settings.data_dir, self.server.url, settings.api_key_file, "", [], poni, 0.0
        )
        result.map_uids = list(self.RE(plan) or [])
        if result.map_uids:  # from the documents: Tiled may be down right now
            start = writer.digests[result.map_uids[0]].start
            result.experiment_id = str(start.get("experiment_id", ""))
        result.live_lag_maps = live.maps_pending if live is not None else 0
        writer.wait(SPOOL_DRAIN_S)  # spooled runs are re-sent once the server is back
        result.raw_tallies = writer.tallies()
        if live is not None and self.guard is not None:
            live.finish()
            result.analysis_failures = self.guard.total_failures + live.failures
            result.live_coalesced_maps = live.maps_coalesced
        figures_dir = settings.data_dir / "figures"
        result.figures = sorted(figures_dir.glob("*.png")) if figures_dir.exists() else []
        result.wall_s = time.monotonic() - wall0
        _print_summary(result, settings)
        if live is not None and result.experiment_id:
            result.products = read_latest(self.layout["processed"], result.experiment_id)
            result.truth_table = _report(result, self.beamline)
        return result


def _resume_products(live: LiveAnalysis, layout: Any, stored: StoredExperiment) -> None:
    """Grow the experiment's latest product version: its stored maps analysed again."""
    processed, raw = layout["processed"], layout["raw"]
    stored_versions = versions(processed, stored.experiment_id)
    version = stored_versions[-1] if stored_versions else None  # None: the first map makes v1
    truth = live.truth_provider
    if isinstance(truth, _TwinTruth):  # maps not committed yet are written with their truth
        for position, run in enumerate(stored.complete_maps):
            frame_times_s = np.asarray(raw[run.uid]["primary"]["eiger-time_s"].read())
            first_s, last_s = float(frame_times_s.min()), float(frame_times_s.max())
            truth.remember(run.uid, position, first_s, last_s)
    runs = (raw[run.uid].documents() for run in stored.complete_maps)
    committed = live.resume_products(stored.experiment_id, version, runs)
    print(
        f"  products: {stored.experiment_id}/{version or 'v1'} holds {len(committed)} "
        f"map(s); {len(stored.complete_maps)} stored map(s) analysed again"
    )


def _engine_and_beamline(
    options: RehearsalOptions, data_dir: Path, endpoint: Any = None
) -> tuple[RunEngine, Any]:
    """The RunEngine (the seed in every start document) and the beamline: simulated, or the
    real devices pointing at ``endpoint`` (network control)."""
    RE = RunEngine({"seed": options.seed})
    sim = SimConfig(
        binning=options.binning,
        clock_mode="wall" if options.wall_clock else "event-driven",
        speedup=options.speedup,
        seed=options.seed,
    )
    config = BeamlineConfig(data_dir=data_dir, sim=sim)
    if endpoint is not None:
        from ._network_control import connect_all, network_beamline

        beamline = network_beamline(endpoint, config)
        connect_all(beamline)  # after the RunEngine: the devices connect in its event loop
        return RE, beamline
    with init_devices():  # after the RunEngine: the devices connect in its event loop
        beamline = build_beamline(config)
    return RE, beamline


def _twin_config(beamline: Any) -> Any:
    """The twin's configuration: this process's twin, or the one the network child serves."""
    if beamline.twin is not None:
        return beamline.twin.config
    from . import _beamline_sim

    return _beamline_sim.twin_config(beamline.config)


def _subscribe_live_analysis(
    RE: RunEngine,
    beamline: Any,
    layout: Any,
    poni: Path,
    figures_dir: Path,
    remote_truth: RemoteTruthSource | None = None,
    *,
    at_ec_state: bool = False,
    analysis_overrides: Mapping[str, Any] | None = None,
) -> tuple[LiveAnalysis, GuardedCallback]:
    """The live analysis (guarded) and the twin's truth, subscribed: this process's twin,
    or ``remote_truth`` (the network child's twin). ``at_ec_state``: the maps' cell times
    are read at their ``ec_state`` events (wall time: the cell moves on between the start
    document and the first line)."""
    truth = None
    if beamline.twin is not None or remote_truth is not None:
        truth = _TwinTruth(
            beamline, source=remote_truth, clock=remote_truth, at_ec_state=at_ec_state
        )
    if truth is not None:
        RE.subscribe(truth.on_document)
    live = LiveAnalysis(
        analysis_parameters_for_twin(_twin_config(beamline), **(analysis_overrides or {})),
        _analysis_geometry(poni, beamline),
        processed=layout["processed"],
        raw_runs=layout["raw"],  # products claim only maps whose raw run fully landed
        truth_provider=truth,
        # after each map, the heap pages its frames and figures freed go back to the system
        on_map=[LiveFigures(figures_dir, show=False), release_free_heap],
        # no (003) sampling correction: it models rings with the renderer's own formula
        # (opt-in: sampling_options, see docs/analysis-products.md)
        sampling_options=None,
        background=True,
    )
    guard = GuardedCallback(live)
    RE.subscribe(guard)
    return live, guard


def _experiment_plan(
    beamline: Any, options: RehearsalOptions, poni: Path, resume: ResumePoint | None = None
) -> Any:
    """The paper's protocol on the simulated cell, with maps throughout."""
    return operando_experiment(
        beamline.potentiostat,
        beamline.eiger,
        beamline.stage.x,
        beamline.stage.z,
        _scaled_protocol(options.time_scale),
        map_geometry(options),
        map_schedule=map_cadence(options),
        pristine_map=options.pristine_map,
        max_maps=options.max_maps,
        poll_s=60.0,
        md={
            "rehearsal": True,
            "seed": beamline.seed,
            REHEARSAL_OPTIONS_KEY: _options_md(options),
            "poni_file": poni.name,
        },
        resume=resume,
    )


def _options_md(options: RehearsalOptions) -> dict[str, Any]:
    """The options a resumed rehearsal is rebuilt from (all but the data dir)."""
    recorded = dataclasses.asdict(options)
    del recorded["data_dir"]
    recorded["analysis_overrides"] = dict(options.analysis_overrides)
    recorded["map_shape"] = list(options.map_shape)
    schedule = options.map_schedule
    recorded["map_schedule"] = None if schedule is None else [list(s) for s in schedule]
    return recorded


def _report(result: RehearsalResult, beamline: Any) -> list[dict[str, Any]]:
    """Paper-style figures and the recovered-versus-truth table, from the served products."""
    products = result.products
    out_dir = next_free_path(result.data_dir / "report")
    area_cm2 = _twin_config(beamline).electrochem.area_cm2
    files = write_report(products, out_dir, formats=("png",), cell_area_cm2=area_cm2)
    rows = report_table(products)
    print(f"paper-style figures: {len(files)} files in {out_dir}")
    if not rows:
        print("no recovered-versus-truth table: the products hold no truth")
        return rows
    where = "" if beamline.twin is not None else " (served by opmap sim-beamline)"
    print(f"recovered versus the twin's ground truth{where} (targets of the analysis):")
    print(format_table(rows))
    return rows


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for a while, then put its state back.

    pyFAI's automatic calibration (``SingleGeometry.extract_cp``: the massif peak search)
    shuffles its control-point seeds with ``numpy.random``; unseeded, two rehearsals of the
    same frame refined slightly different geometries, hence different products.
    """
    state = np.random.get_state()  # noqa: NPY002 (pyFAI draws from the legacy global one)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _calibrate(RE: RunEngine, beamline: Any, layout: Any, data_dir: Path, options) -> Path:
    poni_dir = data_dir / "poni"
    design = _design_poni(beamline, poni_dir, options.design_distance_error_m)
    callback = CalibrationCallback(poni_dir, run_node=lambda uid: layout["raw"][uid])
    token = RE.subscribe(callback)
    print(f"calibrating on simulated CeO2 from {design.name} ...")
    with _global_numpy_seed(options.seed):
        RE(calibrate(beamline.eiger, beamline.sample_changer, design, calibrant="CeO2"))
    RE.unsubscribe(token)
    record = callback.latest
    if record is None or record.poni_path is None:
        summary = callback.records[-1].summary() if callback.records else {}
        raise RuntimeError(f"calibration rejected: {summary.get('reason', 'no frame')}")
    summary = record.summary()
    print(
        f"calibrated: distance {summary['distance_m'] * 1e3:.3f} mm, residual "
        f"{summary['residual_2theta_deg']:.4f} deg, {len(summary['rings_used'])} rings "
        f"-> {record.poni_path}"
    )
    return record.poni_path


def _print_summary(result: RehearsalResult, settings: OpmapSettings) -> None:
    print()
    print(f"rehearsal finished in {result.wall_s / 60:.1f} min wall time")
    print(f"  maps:            {len(result.map_uids)} runs, experiment {result.experiment_id}")
    print(f"  data:            {result.data_dir}")
    print(f"  detector files:  {settings.detector_dir}")
    print(f"  PONI:            {result.poni}")
    print(f"  figures:         {len(result.figures)} PNG in {result.data_dir / 'figures'}")
    print(f"  analysis errors: {result.analysis_failures}")
    print(f"  live analysis:   {result.live_lag_maps} map(s) behind when acquisition ended")
    if result.live_coalesced_maps:
        print(
            f"                   {result.live_coalesced_maps} map(s) analysed while behind: "
            "written with the next map, no figure of their own"
        )
    emitted = sum(tally.n_emitted for tally in result.raw_tallies)
    stored = sum(tally.n_stored for tally in result.raw_tallies)
    print(f"  raw documents:   {emitted} emitted, {stored} stored in Tiled")
    for tally in result.runs_not_landed:
        print(f"  NOT FULLY STORED: run {tally.line()}; it stays in {settings.backup_dir}:")
        print(f"                   store it with `opmap recover {result.data_dir}`")
    print()
    served = OpmapSettings(data_dir=result.data_dir)
    print("Read it back: start the server with")
    print(f"  opmap serve --data-dir {result.data_dir}")
    print("then, in Python:")
    print("  from tiled.client import from_uri")
    print(f"  key = open('{result.api_key_file}').read().strip()")
    print(f"  products = from_uri('{served.url}', api_key=key)['processed']")
    print(f"  c_perp = products['{result.experiment_id}']['v1']['c_perp'][:]")
    print("or over HTTP:")
    print(
        f'  curl -H "Authorization: Apikey $(cat {result.api_key_file})" '
        f"'{served.url}/api/v1/array/full/processed/{result.experiment_id}/v1/c_perp"
        "?format=application/json'"
    )
