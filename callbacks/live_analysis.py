"""Live analysis of operando maps: reduce frames as they are written, analyse each map.

:class:`LiveAnalysis` is a document callback (one `event_model.RunRouter` inside) that gives
every map run (a start document with ``map_geometry``) a `LiveMapRun`, which reduces each
batch of new frames with the targeted reduction, compiled once per detector geometry, and
keeps only the frames the ``lines`` stream declares valid. When the run stops it

1. runs `opmap.analysis.pipeline.analyze_map` and adds the map to the `ExperimentAnalysis`
   of the run's ``experiment_id`` (a bare `fly_map` is its own experiment);
2. emits a derived run pointing at the raw run (``original_run_uid``, one ``analysis``
   event of summary values) to ``emit``;
3. grows the experiment's products in Tiled (``processed/<experiment_id>/vN``, one
   `TiledProductWriter`), with the twin's ground truth beside them when known;
4. calls every ``on_map`` hook (live plots) with the products.

In process, subscribe it through `GuardedCallback` (never the TiledWriter); out of process
run ``opmap analysis-worker``. The offline pipeline (``opmap analyze``) computes the same
products from the same frames.

Examples
--------
::

    live = LiveAnalysis(params, geometry, processed=ensure_layout(client)["processed"])
    RE.subscribe(ValidatedTiledWriter(runs))
    RE.subscribe(GuardedCallback(live))
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from event_model import RunRouter

from opmap.analysis.geometry import DetectorGeometry
from opmap.analysis.pipeline import (
    AnalysisParameters,
    ExperimentAnalysis,
    MapResult,
    SamplingCorrection,
    analyze_map,
    sampling_correction,
)
from opmap.analysis.products import LabelledArray, Products
from opmap.analysis.reduction import CompiledReduction, compile_reduction

from .frames import FrameReader
from .live import (
    JoinedMapRun,
    LiveMapRun,
    ProductPublisher,
    emit_map_run,
    layout_from_start,
    map_summary,
    raw_run_problem,
    routed_line_sources,
    truth_from_start,
)
from .stream_frames import StreamFrameSource
from .tiled_products import TiledUnavailableError

__all__ = ["LiveAnalysis", "LiveMapRun", "MapHook", "TruthProvider", "layout_from_start"]

logger = logging.getLogger(__name__)


#: ``time_source`` metadata of products whose map times are map indices (no potentiostat
#: readbacks, no frame times in the run).
MAP_INDEX_TIME_SOURCE = "map index (no potentiostat or frame times in the run)"

#: ``hook(products, result)`` after each analysed map (e.g. live plots).
MapHook = Callable[[Products, MapResult], Any]
#: ``truth(start_doc, map_index)`` -> one-map arrays (leading ``map`` dim of length 1);
#: ``map_index`` is the map's position in the products (maps analysed before it).
TruthProvider = Callable[[Mapping[str, Any], int], Mapping[str, LabelledArray]]
#: A map the live analysis analyses: one run, or a failed run joined with its resumes.
LiveMap = LiveMapRun | JoinedMapRun
GeometrySource = DetectorGeometry | Callable[[Mapping[str, Any]], DetectorGeometry]


class LiveAnalysis:
    """Document callback analysing every map run it sees, map by map.

    Parameters
    ----------
    params : AnalysisParameters
        Families, fits, calibration, grain options; its ``reduction_plan()`` is compiled.
    geometry : DetectorGeometry or callable
        The detector geometry (PONI + mask), or ``geometry(start_doc)`` choosing one per
        run; each distinct geometry is compiled once.
    processed : tiled container, optional
        The server's ``processed`` container; products are written there when given.
    emit : callable, optional
        ``emit(name, doc)`` receives the derived document stream.
    on_map : sequence of callable, optional
        Hooks called with ``(products, result)`` after each map.
    truth_provider : callable, optional
        Ground truth of a rehearsal per map; default: the start document's ``twin_truth``.
    tiled_runs : tiled container, optional
        The raw runs catalog, for frames whose files are not readable here.
    raw_runs : tiled container, optional
        The raw runs catalog in which each map's run must be complete (stop ``success``,
        every event stored) before the products claim the map; default ``tiled_runs``.
        None claims every analysed map.
    root_map : mapping, optional
        File-path prefix translation for the frame reader.
    reduction_options : mapping, optional
        Extra `ReductionPlan` options (e.g. ``{"cake": ...}``).
    sampling_options : mapping, optional
        Build `opmap.analysis.pipeline.sampling_correction` with these options for each
        geometry (a few seconds, once) and correct the (003) positions for the detector's
        pixel sampling; None (default) for no correction. Needed on coarse (binned) pixels.
    background : bool
        Analyse and publish each stopped map in one worker thread, in order, so the
        RunEngine starts the next map at once; errors there are logged with the run uid
        and counted in ``failures``. Frames are still reduced as they are announced.
        When the worker falls behind (a later map of the same experiment waits), each map
        is still analysed and
        its derived run emitted, but its products are written together with the next
        map's (one request per array for all of them) and the ``on_map`` hooks are called
        for the newest map only (``maps_coalesced`` counts the others), so the lag shrinks
        instead of growing.
    frame_stream : StreamFrameSource, optional
        The detector's stream v2 (`opmap.callbacks.stream_frames`): frames of resources that
        name their series are taken from it as they arrive, reduced on its threads; rows it
        missed are read from the files. None (default): frames from the files only.
    retry_total_s : float
        How long transient Tiled errors (timeouts, 5xx, refused connections) of one
        product write are retried, with backoff (s); then the map counts as a failure
        and is written again with the next map or at `finish`.
    """

    def __init__(
        self,
        params: AnalysisParameters,
        geometry: GeometrySource,
        *,
        processed: Any = None,
        emit: Callable[[str, Mapping[str, Any]], Any] | None = None,
        on_map: Sequence[MapHook] = (),
        truth_provider: TruthProvider | None = None,
        tiled_runs: Any = None,
        root_map: Mapping[str, str] | None = None,
        reduction_options: Mapping[str, Any] | None = None,
        sampling_options: Mapping[str, Any] | None = None,
        background: bool = False,
        raw_runs: Any = None,
        retry_total_s: float = 300.0,
        frame_stream: StreamFrameSource | None = None,
    ) -> None:
        if not isinstance(params, AnalysisParameters):
            raise ValueError(f"params must be AnalysisParameters, not {type(params).__name__}")
        self.params = params
        self.plan = params.reduction_plan(**dict(reduction_options or {}))
        self._geometry = geometry
        self.processed = processed
        self.emit = emit
        self.on_map = list(on_map)
        self.truth_provider = truth_provider
        self.tiled_runs = tiled_runs
        self.raw_runs = raw_runs if raw_runs is not None else tiled_runs
        self.retry_total_s = retry_total_s
        self.frame_stream = frame_stream
        self.root_map = dict(root_map or {})
        self.experiments: dict[str, ExperimentAnalysis] = {}
        self.publishers: dict[str, ProductPublisher] = {}
        self.derived_uids: dict[str, str] = {}
        self.analysis_time_s: list[float] = []
        self._compiled: dict[int, tuple[DetectorGeometry, CompiledReduction]] = {}
        #: None: no (003) sampling correction; else options of `sampling_correction`.
        self.sampling_options = None if sampling_options is None else dict(sampling_options)
        self._sampling: dict[int, SamplingCorrection] = {}
        self._submitted: dict[str, int] = {}
        #: Background analyses that raised (logged with their run uid).
        self.failures = 0
        #: Maps analysed while a later one waited: written with the next map's products,
        #: ``on_map`` hooks not called for them (the next call's products hold them).
        self.maps_coalesced = 0
        #: Background jobs in submission order, with the experiment of each map.
        self._jobs: list[tuple[concurrent.futures.Future, str]] = []
        self._worker = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="live-analysis")
            if background
            else None
        )
        #: Failed map runs waiting for a resume: uid of the chain's last run -> its runs.
        self._held: dict[str, list[LiveMapRun]] = {}
        #: Joined maps: the first run's uid -> every run's uid (their raw runs are checked).
        self._chains: dict[str, list[str]] = {}
        #: Raw uids whose maps a resumed version already holds: analysed, not written.
        self._republished: set[str] = set()
        self._router = RunRouter([self._factory])

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Consume one document of the acquisition's stream."""
        self._router(name, doc)

    @property
    def maps_analysed(self) -> int:
        """Maps analysed so far, over all experiments."""
        return sum(e.n_maps for e in self.experiments.values())

    def _factory(self, name: str, start: Mapping[str, Any]) -> tuple[list, list]:
        if "map_geometry" not in start or start.get("map_index", 0) is None:
            return [], []
        return [LiveMapRun(start, self)], []

    # -- MapOwner ----------------------------------------------------------------------
    def reduction_for(self, start: Mapping[str, Any]) -> CompiledReduction:
        """The compiled reduction of this run's geometry (compiled on first use)."""
        geometry = self._geometry if isinstance(self._geometry, DetectorGeometry) else None
        geometry = geometry or self._geometry(start)  # type: ignore[operator]
        cached = self._compiled.get(id(geometry))
        if cached is None:
            logger.info("compiling the targeted reduction for %r", geometry)
            cached = (geometry, compile_reduction(self.plan, geometry))
            self._compiled[id(geometry)] = cached
            if self.sampling_options is not None:
                logger.info("building the (003) sampling correction for %r", geometry)
                self._sampling[id(cached[1])] = sampling_correction(
                    cached[1], geometry, self.params, **self.sampling_options
                )
        return cached[1]

    def frame_reader(self, start: Mapping[str, Any]) -> FrameReader:
        """A reader for one run: local files, else Tiled (``tiled_runs[uid]``)."""
        tiled_run = None
        if self.tiled_runs is not None:
            tiled_run = _LazyRun(self.tiled_runs, str(start["uid"]))
        return FrameReader(tiled_run=tiled_run, root_map=self.root_map)

    def map_completed(self, run: LiveMapRun) -> None:
        """Analyse a stopped map run (incomplete maps are logged and skipped); a failed map
        run is held until the runs resuming it complete its lines, then analysed joined."""
        map_run = self._map_of(run)
        if map_run is None:
            return
        acc = map_run.accumulator
        exit_status = (map_run.stop_doc or {}).get("exit_status")
        if not (exit_status == "success" or isinstance(map_run, JoinedMapRun)) or not acc.complete:
            logger.warning(
                "run %s stopped (%s) with %d of %d lines and %d missing frames: not analysed",
                map_run.uid,
                exit_status,
                len(acc.lines),
                acc.n_z,
                len(acc.missing_frames()),
            )
            return
        experiment_id = str(map_run.start_doc.get("experiment_id") or f"run-{map_run.uid}")
        # the map's position in the products: maps analysed before it. Equal to the run's
        # map_index unless a run was cut (``opmap resume`` re-measures it under the next
        # index); the version's raw_uids name each map's run.
        map_index = self._submitted.get(experiment_id, 0)
        self._submitted[experiment_id] = map_index + 1
        # ground truth is taken now, in the caller's thread (the twin is not thread-safe)
        truth = None
        if self.processed is not None and map_run.uid not in self._republished:
            truth = (
                self.truth_provider(map_run.start_doc, int(map_index))
                if self.truth_provider is not None
                else truth_from_start(map_run.start_doc)
            )
        job = functools.partial(self._analyse, map_run, experiment_id, int(map_index), truth)
        if self._worker is None:
            job()
        else:
            self._jobs = [queued for queued in self._jobs if not queued[0].done()]
            future = self._worker.submit(self._run_logged, job, map_run.uid)
            self._jobs.append((future, experiment_id))

    def _map_of(self, run: LiveMapRun) -> LiveMap | None:
        """The map ``run`` ends: itself, or joined with the failed runs it resumes when
        together they hold every line; None when the map waits for a resume (held)."""
        resumed = run.start_doc.get("resumes")
        parts = [*self._held.pop(str(resumed), []), run] if resumed else [run]
        exit_status = (run.stop_doc or {}).get("exit_status")
        if len(parts) == 1 and exit_status == "success":
            return run
        try:
            sources = routed_line_sources(parts)
        except ValueError as error:
            if exit_status == "success":
                # a lone successful run returned above: this one resumes runs it cannot complete
                logger.warning("run %s: %s; its map is not analysed", run.uid, error)
                return None
            self._held[run.uid] = parts
            logger.warning(
                "run %s stopped (%s): %s; its map is held until a run resumes it (resume_fly_map)",
                run.uid,
                exit_status,
                error,
            )
            return None
        joined = JoinedMapRun(parts, sources)
        self._chains[joined.uid] = joined.uids
        logger.info("map of run %s joined from runs %s", joined.uid, joined.uids)
        return joined

    def _run_logged(self, job: Callable[[], None], run_uid: str) -> None:
        # In the worker thread nobody awaits the error: it is logged with the run uid and
        # counted (acquisition never sees it, like the guard's in-process failures).
        try:
            job()
        except Exception:
            self.failures += 1
            logger.exception("live analysis of run %s failed", run_uid)

    def _analyse(
        self,
        run: LiveMap,
        experiment_id: str,
        map_index: int,
        truth: Mapping[str, LabelledArray] | None,
    ) -> None:
        t0 = time.perf_counter()
        acc = run.accumulator
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            metadata = {
                "experiment_id": experiment_id,
                "raw_uids": [],
                "sampling_options": self.sampling_options,
                "x_source": run.x_source,  # the x coordinate: the first map's
            }
            experiment = ExperimentAnalysis(run.layout, self.params, metadata=metadata)
            self.experiments[experiment_id] = experiment
        reduced = run.reduction.unpack(acc.valid_packed())
        time_s = acc.map_time_s()
        if not math.isfinite(time_s):
            # no potentiostat readbacks and no frame times (a real Eiger records none): the
            # map's index stands for its time, as in ``opmap analyze`` without frame times
            time_s = float(map_index)
            experiment.metadata["time_source"] = MAP_INDEX_TIME_SOURCE
        # every map on the experiment's layout (its x: the first map's measured x), as
        # the replay does: one x coordinate for the products' (map, z, x) arrays
        result = analyze_map(
            reduced,
            experiment.layout,
            self.params,
            map_index=map_index,
            time_s=time_s,
            sampling=self._sampling.get(id(run.reduction)),
        )
        experiment.add_map(
            result, electrochem=acc.cell_state(), row_time_s=acc.row_time_s(run.layout)
        )
        experiment.metadata["raw_uids"].append(run.uid)
        products = experiment.products()
        # behind (a later map already waits): its products hold this map, so this one is
        # written with them and the hooks draw the newest map only; the per-map cost of
        # writing and drawing then no longer grows the backlog
        behind = self._maps_waiting(experiment_id) > 0
        n_invalid = len(acc.invalid_frames())
        self._publish(run, experiment_id, map_index, products, truth, n_invalid, write=not behind)
        self.analysis_time_s.append(time.perf_counter() - t0)
        if behind:
            self.maps_coalesced += 1
            return
        for hook in self.on_map:
            hook(products, result)

    def _maps_waiting(self, experiment_id: str) -> int:
        """Maps of ``experiment_id`` queued behind the one being analysed (background
        worker only): another experiment's map does not hold this one's products back."""
        if self._worker is None:
            return 0
        mine = [job for job, experiment in self._jobs if experiment == experiment_id]
        return max(0, sum(not job.done() for job in mine) - 1)

    def _publish(
        self,
        run: LiveMap,
        experiment_id: str,
        map_index: int,
        products: Products,
        truth: Mapping[str, LabelledArray] | None,
        n_invalid: int,
        *,
        write: bool = True,
    ) -> None:
        if self.emit is not None and run.uid not in self._republished:
            summary = map_summary(products)
            summary["n_valid_frames"] = (float(run.layout.n_frames), "")
            summary["n_discarded_frames"] = (float(n_invalid), "")
            self.derived_uids[run.uid] = emit_map_run(
                self.emit, raw_start=run.start_doc, summary=summary, metadata=_provenance(products)
            )
        if self.processed is not None and run.uid not in self._republished:
            x_source = self.experiments[experiment_id].metadata["x_source"]
            publisher = self._publisher_for(experiment_id, run.start_doc, x_source)
            try:
                publisher.publish_map(
                    products,
                    run.uid,
                    truth or {},
                    run.accumulator.electrochemistry(),
                    write=write,
                )
            except TiledUnavailableError:  # the map stays queued, written later
                logger.exception("%s: products of map %s deferred", experiment_id, map_index)

    def _publisher_for(
        self, experiment_id: str, start: Mapping[str, Any], x_source: str | None = None
    ) -> ProductPublisher:
        publisher = self.publishers.get(experiment_id)
        if publisher is None:
            parameters = self.params.model_dump(mode="json")
            publisher = ProductPublisher(
                self.processed,
                experiment_id,
                parameters,
                raw_check=self._raw_check if self.raw_runs is not None else None,
                retry_total_s=self.retry_total_s,
                metadata={
                    "sampling_options": self.sampling_options,
                    # a rehearsal's seed: the products say which experiment they are
                    **{k: start[k] for k in ("seed",) if k in start},
                    # where the x coordinate comes from (the first map's measured x?)
                    **({"x_source": x_source} if x_source is not None else {}),
                },
            )
            self.publishers[experiment_id] = publisher
        return publisher

    def resume_products(
        self,
        experiment_id: str,
        version: str | None,
        stored_runs: Iterable[Iterable[tuple[str, Mapping[str, Any]]]],
    ) -> list[str]:
        """Go on with an experiment's stored products (``opmap resume``), before its next map.

        The version ``version`` is grown further, not replaced (None: no version was
        stored, the first map analysed creates one). ``stored_runs`` gives the
        documents of the experiment's complete map runs, in map order: each is analysed
        again (what spans maps, the tracks and the front, needs every map); the maps
        the version already commits are not written again, the others are published.

        Returns
        -------
        list of str
            The raw run uids the version already committed.
        """
        if self.processed is None:
            raise ValueError("resume_products needs the processed container")
        committed: list[str] = []
        if version is not None:
            publisher = self._publisher_for(experiment_id, {"experiment_id": experiment_id})
            committed = publisher.adopt(version)
        self._republished |= set(committed)
        for documents in stored_runs:
            for name, doc in documents:
                self(name, doc)
        self.wait()
        return committed

    def wait(self) -> None:
        """Wait until every map handed to the background worker is analysed."""
        # the jobs stay listed while they run: a map still counts the ones behind it
        concurrent.futures.wait([job for job, _ in self._jobs])
        self._jobs = [queued for queued in self._jobs if not queued[0].done()]

    @property
    def maps_pending(self) -> int:
        """Maps stopped but not analysed yet (the live analysis's lag, in maps)."""
        return sum(not job.done() for job, _ in self._jobs)

    def finish(self) -> None:
        """Write what is left of every experiment's products (at the end).

        Maps whose writes failed are written again, maps whose raw runs are complete in
        Tiled by now are committed, and the arrays without a ``map`` dimension are
        written. A failure here is logged with the experiment and counted in
        ``failures``, so the caller can say so and exit non-zero.
        """
        self.wait()
        for experiment_id, publisher in self.publishers.items():
            try:
                publisher.finish(self.experiments[experiment_id].products())
            except Exception:
                self.failures += 1
                logger.exception("products of experiment %s are incomplete", experiment_id)

    def _raw_check(self, uid: str) -> str | None:
        chain = self._chains.get(uid)
        if chain is None:
            return raw_run_problem(self.raw_runs, uid)
        # a joined map: every run stored whole; the failed ones stopped as they did
        for part in chain:
            problem = raw_run_problem(self.raw_runs, part, any_exit_status=True)
            if problem is not None:
                return f"run {part} {problem}"
        return None


def _provenance(products: Products) -> dict[str, Any]:
    meta = products.metadata
    return {
        "opmap_version": meta.get("opmap_version"),
        "analysis_parameters": meta.get("analysis_parameters"),
    }


class _LazyRun:
    """``runs[uid]`` looked up on first use (the run appears in Tiled after its start)."""

    def __init__(self, runs: Any, uid: str) -> None:
        self._runs = runs
        self._uid = uid

    def __getitem__(self, key: str) -> Any:
        return self._runs[self._uid][key]
