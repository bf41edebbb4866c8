"""Replay: analyse a stored experiment again from its raw runs in Tiled, as a new version.

`replay_experiment` finds the experiment's map runs in ``raw`` (start metadata
``experiment_id``, ``map_index`` set, exit status ``success``), orders them by
``map_index`` and, for each, walks the run's documents (``run.documents()``) the way the
live analysis does: the ``stream_resource`` / ``stream_datum`` documents say where each
frame of ``primary`` lies (file, dataset, row), the ``lines`` stream names the valid frames
(the latest attempt of every line; frames of an aborted attempt are skipped), ``ec_state``
and ``electrochemistry`` give the map's time and cell state. The valid frames are read
lazily with dask (from the HDF5 files when they are readable here, else through Tiled),
reduced with one compiled reduction (local threads, or a ``dask.distributed`` scheduler),
analysed map by map (`analyze_map`, `ExperimentAnalysis`) and written with a new
`TiledProductWriter` version: ``v1`` (the live analysis) is never touched.

Parameters default to those stored with the newest version (``analysis_parameters``);
``overrides`` change some of them. The detector geometry is a PONI file or the calibration
stored with the calibrant run (``calibration.poni``). The version's metadata records the
raw uids, the parameters after overrides, the overrides, the opmap version, the geometry's
source and ``replay_of`` (the newest version before the replay, or None).

Examples
--------
::

    from opmap.replay import replay_experiment

    version, products = replay_experiment(client, "lco-cell-3", overrides={"grain_k": 12})
    c_perp = client["processed"]["lco-cell-3"][version]["c_perp"][:]
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from event_model import unpack_event_page
from pydantic import ValidationError

from opmap.analysis.frames import open_frames
from opmap.analysis.geometry import DetectorGeometry, load_poni
from opmap.analysis.pipeline import (
    AnalysisParameters,
    ExperimentAnalysis,
    FrameReducer,
    MapLayout,
    analyze_map,
    sampling_correction,
)
from opmap.analysis.products import Products
from opmap.analysis.reduction import compile_reduction
from opmap.callbacks._live_map import EC_STATE_STREAM, EC_STREAM, LINES_STREAM, _ec_row, _field
from opmap.callbacks._live_run import RunAccumulator
from opmap.callbacks._products_layout import validate_key
from opmap.callbacks.frames import local_path
from opmap.callbacks.live_analysis import _ec_state, layout_from_start
from opmap.callbacks.tiled_products import TiledProductWriter, versions

__all__ = ["MapRunFrames", "replay_experiment", "stored_parameters"]

logger = logging.getLogger(__name__)

#: Where frames are read from: files when readable here (default), only files, only Tiled.
FrameSourceChoice = Literal["auto", "files", "tiled"]
#: ``sampling_options`` default: the options stored with the newest version, else none.
STORED = "stored"


@dataclass
class MapRunFrames:
    """What a replay needs of one map run, gathered from its documents.

    Attributes
    ----------
    uid : str
        Start uid of the raw run.
    start : dict
        Its start document.
    layout : MapLayout
        Where its frames sit on the (z, x) grid.
    accumulator : RunAccumulator
        Valid lines, ``ec_state`` times and the potentiostat buffer of the run.
    frame_key : str or None
        Data key of the detector frames in ``primary``.
    locations : dict of int to (str, str, int)
        0-based frame index of ``primary`` → (file URI, dataset, row in the dataset).
    """

    uid: str
    start: dict[str, Any]
    layout: MapLayout
    accumulator: RunAccumulator
    frame_key: str | None = None
    locations: dict[int, tuple[str, str, int]] = field(default_factory=dict)

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


def _map_runs(raw: Any, experiment_id: str) -> list[tuple[str, Any]]:
    """Successful map runs of the experiment, ordered by ``map_index``."""
    from tiled.queries import Key

    found = []
    for uid, run in raw.search(Key("start.experiment_id") == experiment_id).items():
        start = run.metadata.get("start", {})
        stop = run.metadata.get("stop") or {}
        if start.get("map_index") is None or "map_geometry" not in start:
            continue
        if stop.get("exit_status") != "success":
            logger.warning(
                "run %s (map %s) skipped: exit status %r",
                uid,
                start.get("map_index"),
                stop.get("exit_status"),
            )
            continue
        found.append((int(start["map_index"]), uid, run))
    if not found:
        raise ValueError(
            f"experiment_id {experiment_id!r}: no successful map run in raw (runs with start "
            "metadata experiment_id, a map_index and exit_status 'success')"
        )
    indices = [index for index, _, _ in found]
    if len(set(indices)) != len(indices):
        raise ValueError(f"experiment {experiment_id!r} has repeated map_index: {indices}")
    return [(uid, run) for _, uid, run in sorted(found, key=lambda item: item[0])]


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
    poni: Path | None, raw: Any, first_start: Mapping[str, Any], frame_shape: tuple[int, int]
) -> tuple[DetectorGeometry, str]:
    if poni is not None:
        return load_poni(poni, expected_shape=frame_shape), str(poni)
    text, uid = _calibration_poni(raw, float(first_start.get("time", math.inf)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{uid}.poni"
        path.write_text(text)
        geometry = load_poni(path, expected_shape=frame_shape)
    return geometry, f"calibration of run {uid}"


def gather_map_run(uid: str, run: Any) -> MapRunFrames:
    """Walk one map run's documents: frame locations, valid lines, time and cell state.

    Parameters
    ----------
    uid : str
        Start uid of the run.
    run : tiled BlueskyRun
        ``raw[uid]`` (its ``documents()`` are read once).

    Returns
    -------
    MapRunFrames
    """
    start = dict(run.metadata["start"])
    layout = layout_from_start(start)
    item = MapRunFrames(uid, start, layout, RunAccumulator(layout.n_z, layout.n_x))
    streams: dict[str, str] = {}
    resources: dict[str, Mapping[str, Any]] = {}
    for name, doc in run.documents():
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
            for key, data_key in doc["data_keys"].items():
                if (
                    doc["name"] == "primary"
                    and data_key.get("external")
                    and len(data_key.get("shape", [])) >= 2
                ):
                    item.frame_key = item.frame_key or key
        elif name == "stream_resource":
            resources[doc["uid"]] = dict(doc)
        elif name == "stream_datum":
            _locate(item, streams, resources, doc)
        elif name in ("event", "event_page"):
            stream = streams.get(doc["descriptor"], "")
            for event in [doc] if name == "event" else unpack_event_page(doc):
                _record_event(item.accumulator, stream, event["data"])
    return item


def _locate(item: MapRunFrames, streams, resources, datum: Mapping[str, Any]) -> None:
    resource = resources.get(datum["stream_resource"])
    if resource is None or streams.get(datum.get("descriptor", ""), "primary") != "primary":
        return
    rows = range(int(datum["indices"]["start"]), int(datum["indices"]["stop"]))
    first = int(datum["seq_nums"]["start"]) - 1
    if resource["data_key"] == item.frame_key:
        dataset = resource.get("parameters", {}).get("dataset", "/entry/data/data")
        for offset, row in enumerate(rows):
            item.locations[first + offset] = (resource["uri"], dataset, row)
    elif item.frame_key and resource["data_key"] == f"{item.frame_key}-time_s":
        times = _read_times(resource, rows)
        if times is not None:
            item.accumulator.add_times(np.arange(first, first + len(rows)), times)


def _read_times(resource: Mapping[str, Any], rows: range) -> np.ndarray | None:
    import h5py

    try:
        path = local_path(resource["uri"])
        dataset = resource.get("parameters", {}).get("dataset", "/entry/opmap/time_s")
        with h5py.File(path, "r") as h5:
            return np.asarray(h5[dataset][rows.start : rows.stop], float)
    except (OSError, KeyError, ValueError):
        return None  # the map time then comes from ec_state alone


def _record_event(acc: RunAccumulator, stream: str, data: Mapping[str, Any]) -> None:
    if stream == LINES_STREAM:
        acc.add_line(data)
    elif stream == EC_STATE_STREAM and (key := _field(data, "time_s")):
        acc.ec_state_time_s.append(float(data[key]))
    elif stream == EC_STREAM:
        acc.ec_rows.append(_ec_row(data))


def _file_frames(item: MapRunFrames, frames: list[int], chunk_frames: int) -> Any | None:
    """Lazy dask array (n, H, W) of ``frames`` read from the HDF5 files, or None if absent."""
    import dask.array as da

    sources: dict[tuple[str, str], Any] = {}
    pieces: list[tuple[tuple[str, str], list[int]]] = []
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
        if pieces and pieces[-1][0] == (uri, dataset):
            pieces[-1][1].append(row)
        else:
            pieces.append(((uri, dataset), [row]))
    parts = [sources[key][np.asarray(rows)] for key, rows in pieces]
    return (parts[0] if len(parts) == 1 else da.concatenate(parts)).rechunk(
        {0: chunk_frames, 1: -1, 2: -1}
    )


def _tiled_frames(run: Any, item: MapRunFrames, frames: list[int], chunk_frames: int) -> Any:
    """Lazy dask array (n, H, W) of ``frames`` read through Tiled, ``chunk_frames`` at a time."""
    import dask
    import dask.array as da

    if item.frame_key is None:
        raise ValueError(f"run {item.uid}: no detector frames in its primary stream")
    node = run["primary"][item.frame_key]
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


def _check_same_layout(layout: MapLayout, item: MapRunFrames) -> None:
    if item.layout.describe() != layout.describe():
        raise ValueError(
            f"run {item.uid} (map {item.start.get('map_index')}) has map geometry "
            f"{item.layout.n_z} × {item.layout.n_x} different from the first map's "
            f"{layout.n_z} × {layout.n_x}; one experiment needs one layout"
        )


def _sampling_options(sampling_options: Any, stored: Mapping[str, Any]) -> dict | None:
    if isinstance(sampling_options, str):
        if sampling_options != STORED:
            raise ValueError(
                f"sampling_options must be a mapping, None or {STORED!r}, got {sampling_options!r}"
            )
        options = stored.get("sampling_options")
        return None if options is None else dict(options)
    return None if sampling_options is None else dict(sampling_options)


def replay_experiment(
    source: Any,
    experiment_id: str,
    *,
    params: AnalysisParameters | None = None,
    overrides: Mapping[str, Any] | None = None,
    poni: Path | None = None,
    mask: np.ndarray | None = None,
    sampling_options: Mapping[str, Any] | str | None = STORED,
    scheduler: str | None = None,
    progress: bool = True,
    frames_from: FrameSourceChoice = "auto",
    chunk_frames: int = 64,
    on_map: Callable[[int, int], None] | None = None,
) -> tuple[str, Products]:
    """Analyse a stored experiment again and write the products as a new Tiled version.

    Parameters
    ----------
    source : tiled client or (processed, raw)
        The opmap server's root client (with ``raw`` and ``processed``), or both containers.
    experiment_id : str
        The experiment (start metadata ``experiment_id`` of its map runs).
    params : AnalysisParameters, optional
        Analysis parameters; default those stored with the newest product version.
    overrides : Mapping, optional
        Top-level `AnalysisParameters` fields replaced on top (e.g. ``{"grain_k": 12}``).
    poni : Path, optional
        pyFAI PONI file; default the calibration stored with the newest calibrant run
        (``calibration.poni`` in its metadata) started before the first map.
    mask : numpy.ndarray, optional
        Extra bool mask (H, W) of pixels to ignore (``True`` = ignored). Pixels holding the
        detector's marker value (the dtype's maximum, e.g. module gaps) in the first valid
        frame are always masked; markers elsewhere are dropped frame by frame.
    sampling_options : Mapping, None or "stored", optional
        Options of the (003) detector-sampling correction (`sampling_correction`), None for
        none; default ``"stored"``: as recorded with the newest version, else none.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; default local threads.
    progress : bool, optional
        Show dask's progress bar on stderr.
    frames_from : {"auto", "files", "tiled"}, optional
        Read frames from the HDF5 files (``"files"``), through Tiled (``"tiled"``), or from
        the files when readable here, else Tiled (``"auto"``).
    chunk_frames : int, optional
        Frames per dask block, in [1, 100000].
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
        ``poni`` does not exist.
    """
    validate_key("experiment_id", experiment_id)
    if frames_from not in ("auto", "files", "tiled"):
        raise ValueError(f"frames_from must be 'auto', 'files' or 'tiled', got {frames_from!r}")
    if not 1 <= chunk_frames <= 100_000:
        raise ValueError(f"chunk_frames must be in [1, 100000], got {chunk_frames}")
    processed, raw = _roots(source)
    runs = _map_runs(raw, experiment_id)
    previous, stored = stored_parameters(processed, experiment_id)
    overrides = dict(overrides or {})
    parameters = _parameters(params, stored, overrides, experiment_id)
    sampling = _sampling_options(sampling_options, stored)
    items = [gather_map_run(uid, run) for uid, run in runs]
    layout = items[0].layout
    lazy = []
    for (_, run), item in zip(runs, items, strict=True):
        _check_same_layout(layout, item)
        frames = item.valid_frames()
        array = None if frames_from == "tiled" else _file_frames(item, frames, chunk_frames)
        if array is None:
            if frames_from == "files":
                raise ValueError(f"run {item.uid}: its frame files are not readable here")
            array = _tiled_frames(run, item, frames, chunk_frames)
        lazy.append(array)
    frame_shape = (int(lazy[0].shape[1]), int(lazy[0].shape[2]))
    geometry, geometry_source = _geometry(poni, raw, items[0].start, frame_shape)
    geometry = _masked(geometry, lazy[0], mask)
    reduction = compile_reduction(parameters.reduction_plan(), geometry)
    correction = None
    if sampling is not None:
        correction = sampling_correction(reduction, geometry, parameters, **sampling)
    metadata = {
        "experiment_id": experiment_id,
        "raw_uids": [item.uid for item in items],
        "replay_of": previous,
        "overrides": overrides,
        "geometry_source": geometry_source,
        "sampling_options": sampling,
        "frames_from": frames_from,
    }
    experiment = ExperimentAnalysis(layout, parameters, metadata=metadata)
    reducer = FrameReducer(reduction, scheduler=scheduler, progress=progress)
    try:
        for done, (item, frames) in enumerate(zip(items, lazy, strict=True), start=1):
            reduced = reduction.unpack(reducer.packed(frames))
            acc = item.accumulator
            time_s = acc.map_time_s()
            if not math.isfinite(time_s):
                raise ValueError(f"run {item.uid}: no ec_state or frame times for the map time")
            result = analyze_map(
                reduced, layout, parameters, map_index=int(item.start["map_index"]),
                time_s=time_s, sampling=correction,
            )  # fmt: skip
            experiment.add_map(result, electrochem=_ec_state(acc.electrochemistry()))
            if on_map is not None:
                on_map(done, len(items))
    finally:
        reducer.close()
    products = _with_electrochemistry(experiment.products(), items)
    writer = TiledProductWriter(
        processed,
        experiment_id,
        raw_uids=metadata["raw_uids"],
        parameters=parameters.model_dump(mode="json"),
    )
    writer.write_products(products)
    logger.info("replay of %s written as %s", experiment_id, writer.version)
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


def _with_electrochemistry(products: Products, items: list[MapRunFrames]) -> Products:
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
