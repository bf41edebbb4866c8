"""Replay: analyse a stored experiment again from its raw runs in Tiled, as a new version.

`replay_experiment` finds the experiment's maps in ``raw`` (start metadata
``experiment_id``, ``map_index`` set): a run with exit status ``success``, or a failed run
joined with the runs that resume it (`resume_fly_map`; `map_chains`, `JoinedMapRun`: each
line from the run `map_line_sources` names, a chain still missing a line is left out with
its reason, in the version's ``skipped_maps``). It orders them by ``map_index`` and, for
each run, walks the run's documents (``run.documents()``) the way the live analysis does:
the ``stream_resource`` / ``stream_datum`` documents say where each frame of ``primary``
lies (file, dataset, row), the ``lines`` stream names the valid frames (the latest attempt
of every line; frames of an aborted attempt are skipped), ``ec_state`` and
``electrochemistry`` give the map's time and cell state. The valid frames are read
lazily with dask (from the HDF5 files when they are readable here, else through Tiled),
reduced with one compiled reduction (local threads, or a ``dask.distributed`` scheduler),
analysed map by map (`analyze_map`, `ExperimentAnalysis`) and written with a new
`TiledProductWriter` version, sealed once written (only an admin key may change it
afterwards): ``v1`` (the live analysis) is never touched, and not sealed by the replay
(a live analysis may still be growing it; it seals it when it finishes).

Parameters default to those stored with the newest version (``analysis_parameters``);
``overrides`` change some of them. The detector geometry is a PONI file or the calibration
stored with the calibrant run (``calibration.poni``). The version's metadata records the
raw uids, the parameters after overrides, the overrides, the opmap version, the geometry's
source and ``replay_of`` (the newest version before the replay, or None).

Examples
--------
::

    from opmap.replay import ReplayOptions, replay_experiment

    options = ReplayOptions(overrides={"grain_k": 12})
    version, products = replay_experiment(client, "lco-cell-3", options)
    c_perp = client["processed"]["lco-cell-3"][version]["c_perp"][:]
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import ValidationError

from opmap.analysis.frames import open_frames
from opmap.analysis.geometry import DetectorGeometry, analysis_geometry
from opmap.analysis.pipeline import (
    AnalysisParameters,
    ExperimentAnalysis,
    FrameReducer,
    MapAnalysis,
    MapLayout,
    sampling_correction,
)
from opmap.analysis.products import Products
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks.frames import DatumRows, FrameReader, local_path
from opmap.callbacks.live import JoinedMapRun, MapRunDocuments
from opmap.callbacks.live_analysis import MAP_INDEX_TIME_SOURCE
from opmap.callbacks.tiled_products import TiledProductWriter, validate_key, versions
from opmap.plans import FRAMES_STREAM, LINES_STREAM, map_line_sources

from ._map_join import MapChain, map_chains

__all__ = [
    "FrameLocation",
    "JoinedMapRun",
    "MapChain",
    "MapRunFrames",
    "ReplayOptions",
    "SkippedMap",
    "gather_map_run",
    "map_chains",
    "replay_experiment",
    "stored_parameters",
]

logger = logging.getLogger(__name__)

#: Where frames are read from: files when readable here (default), only files, only Tiled.
FrameSourceChoice = Literal["auto", "files", "tiled"]
#: ``sampling_options`` default: the options stored with the newest version, else none.
STORED = "stored"


class FrameLocation(NamedTuple):
    """Where one frame of a stored run lies: file URI, HDF5 dataset, row in the dataset.

    ``dataset`` None: a Dectris master read through its per-file links in order
    (`opmap.analysis.frames.open_frames`' default), ``row`` counted across them.
    """

    uri: str
    dataset: str | None
    row: int


class MapRunFrames(MapRunDocuments):
    """A stored map run read back through `MapRunDocuments`: where each frame lies.

    Frames are not read while the documents are routed: each batch a ``stream_datum``
    announces is remembered in ``locations`` and read later, lazily, for the valid frames
    only. Lines, map time and cell state are in ``accumulator``.

    Parameters
    ----------
    start : mapping
        The run's start document.
    reader : FrameReader
        Follows the run's resources and reads the frames' times (files, else Tiled).

    Attributes
    ----------
    locations : dict of int to FrameLocation
        0-based frame index of ``primary`` → where the frame lies.
    """

    def __init__(self, start: Mapping[str, Any], reader: FrameReader) -> None:
        super().__init__(start, reader)
        self.locations: dict[int, FrameLocation] = {}

    def frames(self, rows: DatumRows) -> None:
        """Remember where each announced frame lies."""
        for index, row in zip(rows.frame_indices, range(*rows.rows), strict=True):
            self.locations[int(index)] = FrameLocation(rows.uri, rows.dataset, row)

    @property
    def uids(self) -> list[str]:
        """Start uids of the runs holding the map: this run's."""
        return [self.uid]

    def pieces(self) -> list[tuple[MapRunFrames, list[int]]]:
        """The map's frames per run in map order: ``[(self, valid_frames())]``."""
        return [(self, self.valid_frames())]

    def valid_frames(self) -> list[int]:
        """Frames of the map in line order (latest attempt of each line).

        Raises
        ------
        ValueError
            When a line is missing or a valid frame was never announced by the run.
        """
        acc = self.accumulator
        if len(acc.lines) != acc.n_z:
            raise ValueError(
                f"run {self.uid}: {len(acc.lines)} of {acc.n_z} lines recorded in its "
                f"{LINES_STREAM!r} stream; the map is incomplete"
            )
        frames = acc.valid_frames()
        missing = [i for i in frames if i not in self.locations]
        if missing:
            raise ValueError(
                f"run {self.uid}: {len(missing)} valid frame(s) were never announced by a "
                f"stream_datum: {missing[:10]}"
            )
        return frames


def gather_map_run(run: Any, *, frames_from: FrameSourceChoice = "auto") -> MapRunFrames:
    """Route one stored map run's documents: frame locations, valid lines, time, cell state.

    Parameters
    ----------
    run : tiled BlueskyRun
        ``raw[uid]`` (its ``documents()`` are read once).
    frames_from : {"auto", "files", "tiled"}, optional
        Where the frames' times are read: files when readable here, else Tiled (``"auto"``,
        ``"files"``), or always Tiled.

    Returns
    -------
    MapRunFrames
    """
    reader = FrameReader(tiled_run=run, prefer_tiled=frames_from == "tiled", retries=0)
    return MapRunFrames(run.metadata["start"], reader).follow(run.documents())


def _roots(source: Any) -> tuple[Any, Any]:
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError("source must be a Tiled client or a (processed, raw) pair")
        return source
    for key in ("raw", "processed"):
        if key not in source:
            raise ValueError(
                f"the Tiled client has no {key!r} container: is it the opmap server? "
                "(pass the root client or a (processed, raw) pair)"
            )
    return source["processed"], source["raw"]


class SkippedMap(NamedTuple):
    """A map of the experiment the replay does not claim, and why."""

    map_index: int
    raw_uids: list[str]
    reason: str


#: A map as the replay reads it: one run, or a failed run joined with its resumes.
MapItem = MapRunFrames | JoinedMapRun


def _joined(chain: MapChain, frames_from: FrameSourceChoice) -> JoinedMapRun | str:
    """The chain's runs joined line by line, or why they are no map.

    Only the chain's completeness is a reason (a run without its ``stop``, still running or
    cut off; `map_line_sources`: a line missing or held twice); an unreadable run is an
    error, as for a map of one run.
    """
    runs = zip(chain.uids, chain.runs, strict=True)
    open_runs = [uid for uid, run in runs if not run.metadata.get("stop")]
    if open_runs:
        return f"runs {open_runs} have no stop document (still running, or cut off)"
    try:
        sources = map_line_sources(chain.runs)
    except ValueError as error:
        stop = chain.runs[-1].metadata.get("stop") or {}
        return f"exit status {stop.get('exit_status')!r}; {error}"
    parts = [gather_map_run(run, frames_from=frames_from) for run in chain.runs]
    logger.info("%s joined: lines from %d runs", chain.describe(), len(parts))
    return JoinedMapRun(parts, sources)


def _map_items(
    raw: Any, experiment_id: str, frames_from: FrameSourceChoice
) -> tuple[list[MapItem], list[SkippedMap]]:
    """The experiment's maps in ``map_index`` order, and the maps left out with the reason.

    A map is a run that stopped with success, or a failed run joined with the runs that
    resume it (`map_chains`, `JoinedMapRun`) when together they hold every line once; a
    chain that does not is no map: it is logged and listed with the reason.
    """
    items, skipped = [], []
    chains = map_chains(raw, experiment_id)
    for chain in chains:
        if chain.whole_run:
            items.append(gather_map_run(chain.runs[0], frames_from=frames_from))
            continue
        joined = _joined(chain, frames_from)
        if isinstance(joined, str):
            logger.warning("%s left out: %s", chain.describe(), joined)
            skipped.append(SkippedMap(chain.map_index, chain.uids, joined))
        else:
            items.append(joined)
    if not items:
        reasons = "; ".join(f"map {s.map_index}: {s.reason}" for s in skipped)
        raise ValueError(
            f"experiment_id {experiment_id!r}: no complete map run in raw (runs with start "
            "metadata experiment_id, a map_index and exit_status 'success', or failed runs "
            f"whose resumes complete them){': ' + reasons if reasons else ''}"
        )
    indices = [int(item.start_doc["map_index"]) for item in items]
    if len(set(indices)) != len(indices):
        raise ValueError(f"experiment {experiment_id!r} has repeated map_index: {indices}")
    return items, skipped


def stored_parameters(processed: Any, experiment_id: str) -> tuple[str | None, dict[str, Any]]:
    """The newest version of ``experiment_id`` and its metadata (``(None, {})`` if none)."""
    stored = versions(processed, experiment_id)
    if not stored:
        return None, {}
    return stored[-1], dict(processed[experiment_id][stored[-1]].metadata)


def _parameters(
    params: AnalysisParameters | None,
    stored: Mapping[str, Any],
    overrides: Mapping[str, Any],
    experiment_id: str,
) -> AnalysisParameters:
    if params is None:
        dumped = stored.get("analysis_parameters")
        if not dumped:
            raise ValueError(
                f"experiment {experiment_id!r} has no stored analysis_parameters (no product "
                "version yet): pass params= (opmap analyze --params/--families)"
            )
        base = dict(dumped)
    else:
        if not isinstance(params, AnalysisParameters):
            raise ValueError(f"params must be AnalysisParameters, not {type(params).__name__}")
        base = params.model_dump(mode="json")
    unknown = sorted(set(overrides) - set(AnalysisParameters.model_fields))
    if unknown:
        raise ValueError(
            f"overrides name unknown analysis parameters {unknown}; allowed: "
            f"{sorted(AnalysisParameters.model_fields)}"
        )
    try:
        return AnalysisParameters.model_validate({**base, **dict(overrides)})
    except ValidationError as error:
        raise ValueError(f"analysis parameters (after overrides) invalid: {error}") from None


def _calibration_poni(raw: Any, before_time: float) -> tuple[str, str]:
    """PONI text of the newest accepted calibration up to ``before_time``; (text, run uid)."""
    from tiled.queries import Comparison

    candidates = []
    # every calibrant run (its start document names a calibrant; the plan `calibrate`)
    for uid, run in raw.search(Comparison("gt", "start.calibrant", "")).items():
        calibration = run.metadata.get("calibration") or {}
        start_time = float(run.metadata.get("start", {}).get("time", math.inf))
        if calibration.get("accepted") and calibration.get("poni"):
            candidates.append((start_time <= before_time, start_time, uid, calibration["poni"]))
    if not candidates:
        raise ValueError(
            "no detector geometry: no calibrant run in raw stores calibration.poni; pass "
            "poni= (opmap analyze --poni FILE)"
        )
    _, _, uid, text = max(candidates)
    return text, uid


def _geometry(
    poni: Path | None, raw: Any, first: MapItem, frames: Any, mask: np.ndarray | None
) -> tuple[DetectorGeometry, str]:
    """The detector geometry (masked, see `_masked`) and where it comes from."""
    frame_shape = (int(frames.shape[1]), int(frames.shape[2]))
    if poni is not None:
        geometry = analysis_geometry(poni, expected_shape=frame_shape)
        source = str(poni)
    else:
        text, uid = _calibration_poni(raw, float(first.start_doc.get("time", math.inf)))
        geometry, source = _load_poni_text(text, frame_shape), f"calibration of run {uid}"
    return _masked(geometry, frames, mask), source


def _load_poni_text(text: str, frame_shape: tuple[int, int]) -> DetectorGeometry:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calibration.poni"
        path.write_text(text)
        return analysis_geometry(path, expected_shape=frame_shape)


def _file_frames(item: MapRunFrames, frames: list[int], chunk_frames: int) -> Any | None:
    """Lazy dask array (n, H, W) of ``frames`` read from the HDF5 files.

    None when a file is not readable here, or holds fewer rows than the documents name.
    """
    import dask.array as da

    sources: dict[tuple[str, str | None], Any] = {}
    pieces: list[tuple[tuple[str, str | None], list[int]]] = []
    for index in frames:
        uri, dataset, row = item.locations[index]
        if (uri, dataset) not in sources:
            try:
                path = local_path(uri)
            except ValueError:
                return None
            if not path.is_file():
                return None
            sources[uri, dataset] = open_frames(path, dataset=dataset).to_dask(
                chunk_frames=chunk_frames
            )
        if row >= sources[uri, dataset].shape[0]:
            # Tiled exports a data source of many files that no template names (a SIMPLON
            # Eiger's data files, series after series) as its first file only: read
            # through Tiled, which holds them all.
            logger.info(
                "run %s: %s holds no row %d; frames read through Tiled", item.uid, uri, row
            )
            return None
        if pieces and pieces[-1][0] == (uri, dataset):
            pieces[-1][1].append(row)
        else:
            pieces.append(((uri, dataset), [row]))
    parts = [sources[key][np.asarray(rows)] for key, rows in pieces]
    return (parts[0] if len(parts) == 1 else da.concatenate(parts)).rechunk(
        {0: chunk_frames, 1: -1, 2: -1}
    )


def _tiled_frames(item: MapRunFrames, frames: list[int], chunk_frames: int) -> Any:
    """Lazy dask array (n, H, W) of ``frames`` read through Tiled, ``chunk_frames`` at a time."""
    import dask
    import dask.array as da

    if item.frame_key is None:
        raise ValueError(f"run {item.uid}: no detector frames in its primary stream")
    node = item.reader.tiled_run[FRAMES_STREAM][item.frame_key]
    shape = tuple(int(n) for n in node.shape)
    frame_shape, dtype = shape[-2:], np.dtype(node.dtype)
    blocks = []
    for lo in range(0, len(frames), chunk_frames):
        wanted = np.asarray(frames[lo : lo + chunk_frames])
        read = dask.delayed(_read_tiled_block, pure=True)(node, wanted, frame_shape)
        blocks.append(da.from_delayed(read, shape=(wanted.size, *frame_shape), dtype=dtype))
    return da.concatenate(blocks)


def _read_tiled_block(node: Any, wanted: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    lo, hi = int(wanted.min()), int(wanted.max()) + 1
    block = np.asarray(node[lo:hi]).reshape(hi - lo, *frame_shape)
    return block[wanted - lo]


def _lazy_frames(item: MapItem, frames_from: FrameSourceChoice, chunk_frames: int) -> Any:
    """Lazy dask array (n, H, W) of the map's valid frames, each from its own run."""
    import dask.array as da

    arrays = [
        _lazy_run_frames(part, frames, frames_from, chunk_frames) for part, frames in item.pieces()
    ]
    if len(arrays) == 1:
        return arrays[0]
    return da.concatenate(arrays).rechunk({0: chunk_frames, 1: -1, 2: -1})


def _lazy_run_frames(
    item: MapRunFrames, frames: list[int], frames_from: FrameSourceChoice, chunk_frames: int
) -> Any:
    """Lazy dask array (n, H, W) of one run's ``frames``, from the files or Tiled.

    Raises
    ------
    ValueError
        A frame was never announced by the run.
    """
    missing = [index for index in frames if index not in item.locations]
    if missing:
        raise ValueError(
            f"run {item.uid}: {len(missing)} valid frame(s) were never announced by a "
            f"stream_datum: {missing[:10]}"
        )
    array = None if frames_from == "tiled" else _file_frames(item, frames, chunk_frames)
    if array is not None:
        return array
    if frames_from == "files":
        raise ValueError(f"run {item.uid}: its frame files are not readable here")
    return _tiled_frames(item, frames, chunk_frames)


def _same_grid(items: list[MapItem]) -> None:
    """The maps must share the first one's map grid."""
    layout = items[0].layout
    for item in items[1:]:
        # the x centres are measured per map (stage readback): the grid itself must agree
        if _grid(item.layout) != _grid(layout):
            raise ValueError(
                f"run {item.uid} (map {item.start_doc.get('map_index')}) has map geometry "
                f"{item.layout.n_z} × {item.layout.n_x} different from the first map's "
                f"{layout.n_z} × {layout.n_x}; one experiment needs one layout"
            )


def _grid(layout: MapLayout) -> tuple[Any, ...]:
    return layout.n_z, layout.n_x, layout.snake, layout.z_um.tolist()


@dataclass(frozen=True)
class ReplayOptions:
    """How an experiment is replayed; every field has the live analysis's default.

    Attributes
    ----------
    params : AnalysisParameters, optional
        Analysis parameters; default those stored with the newest product version.
    overrides : Mapping
        Top-level `AnalysisParameters` fields replaced on top (e.g. ``{"grain_k": 12}``).
    poni : Path, optional
        pyFAI PONI file; default the calibration stored with the newest calibrant run
        (``calibration.poni`` in its metadata) started before the first map.
    mask : numpy.ndarray, optional
        Extra bool mask (H, W) of pixels to ignore (``True`` = ignored). Pixels holding the
        detector's marker value (the dtype's maximum, e.g. module gaps) in the first valid
        frame are always masked; markers elsewhere are dropped frame by frame.
    sampling_options : Mapping, None or "stored"
        Options of the (003) detector-sampling correction (`sampling_correction`), None for
        none; default ``"stored"``: as recorded with the newest version, else none.
    frames_from : {"auto", "files", "tiled"}
        Read frames from the HDF5 files (``"files"``), through Tiled (``"tiled"``), or from
        the files when readable here, else Tiled (``"auto"``).
    chunk_frames : int
        Frames per dask block, in [1, 100000].
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; default local threads.
    progress : bool
        Show dask's progress bar on stderr.

    Raises
    ------
    ValueError
        An unknown ``frames_from`` or ``sampling_options`` string, ``chunk_frames`` out of
        range.

    Examples
    --------
    >>> ReplayOptions(overrides={"grain_k": 12}, frames_from="tiled").chunk_frames
    64
    """

    params: AnalysisParameters | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    poni: Path | None = None
    mask: np.ndarray | None = field(default=None, compare=False)
    sampling_options: Mapping[str, Any] | str | None = STORED
    frames_from: FrameSourceChoice = "auto"
    chunk_frames: int = 64
    scheduler: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.frames_from not in ("auto", "files", "tiled"):
            raise ValueError(
                f"frames_from must be 'auto', 'files' or 'tiled', got {self.frames_from!r}"
            )
        if not 1 <= self.chunk_frames <= 100_000:
            raise ValueError(f"chunk_frames must be in [1, 100000], got {self.chunk_frames}")
        if isinstance(self.sampling_options, str) and self.sampling_options != STORED:
            raise ValueError(
                f"sampling_options must be a mapping, None or {STORED!r}, "
                f"got {self.sampling_options!r}"
            )

    def sampling(self, stored: Mapping[str, Any]) -> dict[str, Any] | None:
        """The sampling-correction options to use, given the newest version's metadata."""
        options = self.sampling_options
        if options == STORED:
            options = stored.get("sampling_options")
        return None if options is None else dict(options)  # type: ignore[arg-type]


def replay_experiment(
    source: Any,
    experiment_id: str,
    options: ReplayOptions | None = None,
    *,
    on_map: Callable[[int, int], None] | None = None,
) -> tuple[str, Products]:
    """Analyse a stored experiment again and write the products as a new Tiled version.

    Parameters
    ----------
    source : tiled client or (processed, raw)
        The opmap server's root client (with ``raw`` and ``processed``), or both containers.
    experiment_id : str
        The experiment (start metadata ``experiment_id`` of its map runs).
    options : ReplayOptions, optional
        Parameters, overrides, geometry, frame source and scheduler (default: as stored).
    on_map : callable, optional
        Called as ``on_map(done, total)`` after each map.

    Returns
    -------
    version : str
        The new version (``"v2"`` after a live ``"v1"``).
    products : Products
        What was written (arrays with a leading ``map`` dimension of one entry per map).

    Raises
    ------
    ValueError
        Before anything is written: a malformed or unknown ``experiment_id``, no successful
        map run, no stored parameters and no ``params``, an unknown or invalid override, no
        geometry, frames that do not match the PONI, incomplete maps or unreadable frames.
    FileNotFoundError
        The PONI file does not exist.
    """
    options = ReplayOptions() if options is None else options
    validate_key("experiment_id", experiment_id)
    processed, raw = _roots(source)
    items, skipped = _map_items(raw, experiment_id, options.frames_from)
    _same_grid(items)
    previous, stored = stored_parameters(processed, experiment_id)
    parameters = _parameters(options.params, stored, options.overrides, experiment_id)
    lazy = [_lazy_frames(item, options.frames_from, options.chunk_frames) for item in items]
    geometry, geometry_source = _geometry(options.poni, raw, items[0], lazy[0], options.mask)
    metadata = {
        "experiment_id": experiment_id,
        "raw_uids": [item.uid for item in items],
        "map_raw_uids": [item.uids for item in items],
        "skipped_maps": [skip._asdict() for skip in skipped],
        "replay_of": previous,
        "overrides": dict(options.overrides),
        "geometry_source": geometry_source,
        "sampling_options": options.sampling(stored),
        "frames_from": options.frames_from,
        "x_source": items[0].x_source,  # the x coordinate: the first map's
    }
    experiment = ExperimentAnalysis(items[0].layout, parameters, metadata=metadata)
    _analyse_maps(experiment, geometry, items, lazy, options, on_map)
    return _write(processed, experiment, items)


def _analyse_maps(
    experiment: ExperimentAnalysis,
    geometry: DetectorGeometry,
    items: list[MapItem],
    lazy: list[Any],
    options: ReplayOptions,
    on_map: Callable[[int, int], None] | None,
) -> None:
    """Reduce every map's frames with one compiled reduction and analyse it."""
    reduction = compile_reduction(experiment.params.reduction_plan(), geometry)
    sampling = experiment.metadata["sampling_options"]
    correction = None
    if sampling is not None:
        correction = sampling_correction(reduction, geometry, experiment.params, **sampling)
    analyse = MapAnalysis(
        experiment.layout, experiment.params, _map_times_s(experiment, items), sampling=correction
    )
    reducer = FrameReducer(reduction, scheduler=options.scheduler, progress=options.progress)
    # on a cluster every map is submitted at once, and reduced and fitted on the workers;
    # this process only collects the results, in map order. A map's index is its position
    # in the products, as live: a map cut and re-measured after ``opmap resume`` leaves a
    # gap in the runs' map_index (raw_uids name each run)
    with contextlib.closing(reducer):
        maps = contextlib.closing(reducer.analysed_each(lazy, analyse))
        with maps as results:
            for done, (item, result) in enumerate(zip(items, results, strict=True), start=1):
                experiment.add_map(
                    result,
                    electrochem=item.accumulator.cell_state(),
                    row_time_s=item.accumulator.row_time_s(experiment.layout),
                )
                if on_map is not None:
                    on_map(done, len(items))


def _map_times_s(experiment: ExperimentAnalysis, items: list[MapItem]) -> tuple[float, ...]:
    """Each map's time (s); as live, a map with no cell and no frame times (a real Eiger)
    takes its position as its time, and the products' ``time_source`` says so."""
    times = []
    for position, item in enumerate(items):
        time_s = item.accumulator.map_time_s()
        if not math.isfinite(time_s):
            time_s = float(position)
            experiment.metadata["time_source"] = MAP_INDEX_TIME_SOURCE
        times.append(time_s)
    return tuple(times)


def _write(
    processed: Any, experiment: ExperimentAnalysis, items: list[MapItem]
) -> tuple[str, Products]:
    """Write the experiment's products (with the runs' potentiostat buffer) as a new version."""
    products = _with_electrochemistry(experiment.products(), items)
    experiment_id = experiment.metadata["experiment_id"]
    writer = TiledProductWriter(
        processed,
        experiment_id,
        raw_uids=experiment.metadata["raw_uids"],
        parameters=experiment.params.model_dump(mode="json"),
    )
    writer.write_products(products)
    writer.seal()  # written whole at once: final
    logger.info("replay of %s written and sealed as %s", experiment_id, writer.version)
    return writer.version, products


def _masked(geometry: DetectorGeometry, frames: Any, mask: np.ndarray | None) -> DetectorGeometry:
    """The geometry with the marker pixels of the first frame and ``mask`` masked."""
    first = np.asarray(frames[0].compute())
    markers = (
        first == np.iinfo(first.dtype).max
        if np.issubdtype(first.dtype, np.unsignedinteger)
        else np.zeros(first.shape, bool)
    )
    if mask is not None:
        extra = np.asarray(mask)
        if extra.shape != first.shape:
            raise ValueError(f"mask must have the frame shape {first.shape}, got {extra.shape}")
        markers = markers | extra.astype(bool)
    extra_mask = markers if geometry.mask is None else markers | geometry.mask
    return geometry.with_mask(extra_mask)


def _with_electrochemistry(products: Products, items: list[MapItem]) -> Products:
    """Add the potentiostat buffer of every run as the ``electrochemistry`` table."""
    columns = [item.accumulator.electrochemistry() for item in items]
    columns = [c for c in columns if c]
    if not columns:
        return products
    keys = list(columns[0])
    table = {
        key: np.concatenate(
            [c.get(key, np.full(len(next(iter(c.values()))), np.nan)) for c in columns]
        )
        for key in keys
    }
    return Products(
        arrays=products.arrays,
        coords=products.coords,
        tables={**products.tables, "electrochemistry": table},
        metadata=products.metadata,
    )
