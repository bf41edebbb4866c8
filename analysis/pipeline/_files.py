"""`analyze_files`: HDF5 frames → threaded decode + reduction → per-map analysis → products.

Locally the frames of each map stream through `FrameReducer.reduce_source` (compressed
chunks read in order, decoded and reduced on a pool of threads); with a ``dask.distributed``
scheduler every map goes to the cluster at once as a dask stack, and is reduced and fitted
there (`FrameReducer.analysed_source_each`): only the map results come back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..dectris_layout import TIME_PATH
from ..families import FamilyConfig, load_families
from ..frames import FrameSource, open_frame_series
from ..geometry import DetectorGeometry, load_poni
from ..nexus import next_free_path, write_products
from ..products import Products
from ..reduction import compile_reduction
from ._experiment import ExperimentAnalysis
from ._inputs import check_output_path
from ._layout import MapLayout
from ._map import MapAnalysis
from ._params import AnalysisParameters
from ._reducer import FrameReducer

__all__ = ["analyze_files", "default_output_path", "read_map_times_s"]

#: ``time_source`` metadata of products timed by the file's per-frame times (the path as
#: first recorded, relative to the file root; kept so older products compare equal).
_TIME_SOURCE_FILE = TIME_PATH.removeprefix("/")


def default_output_path(frames_path: str | Path) -> Path:
    """Free products path next to the input: ``<stem>_analysis.nxs`` (``.v2``, … if taken).

    Examples
    --------
    >>> default_output_path("/data/cell_master.h5").name
    'cell_analysis.nxs'
    """
    path = Path(frames_path)
    stem = path.stem.removesuffix("_master")
    return next_free_path(path.with_name(f"{stem}_analysis.nxs"))


def read_map_times_s(
    frames_path: str | Path | Sequence[str | Path], *, frames_per_map: int, n_maps: int
) -> np.ndarray | None:
    """Mid-map experiment times (s) from the per-frame times of opmap master files.

    Several files (one master per series) are read one after the other. Returns None when
    a file holds no ``/entry/opmap/time_s`` (a real Dectris file writer writes none), or
    there are too few entries.
    """
    parts = []
    for path in _frame_paths(frames_path):
        with h5py.File(path, "r") as h5:
            if TIME_PATH not in h5:
                return None
            parts.append(np.asarray(h5[TIME_PATH][()], float))
    times = np.concatenate(parts)[: frames_per_map * n_maps]
    if times.size < frames_per_map * n_maps:
        return None
    per_map = times.reshape(n_maps, frames_per_map)
    return 0.5 * (per_map.min(axis=1) + per_map.max(axis=1))


def _frame_paths(frames_path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(frames_path, str | Path):
        return [Path(frames_path)]
    return [Path(path) for path in frames_path]


def _geometry(poni: str | Path | DetectorGeometry, source: FrameSource) -> DetectorGeometry:
    geometry = poni if isinstance(poni, DetectorGeometry) else load_poni(poni)
    if geometry.shape != source.frame_shape:
        raise ValueError(
            f"frames have shape {source.frame_shape} but the PONI detector is {geometry.shape}: "
            "the PONI does not describe this detector (or its binning)"
        )
    return geometry


def _layout(source, map_shape, snake, n_maps, z_um, x_um) -> tuple[MapLayout, int]:
    n_z, n_x = (int(n) for n in map_shape)
    layout = MapLayout(n_z=n_z, n_x=n_x, snake=snake, z_um=z_um, x_um=x_um)
    if source.n_frames == 0 or source.n_frames % layout.n_frames:
        raise ValueError(
            f"map shape {n_z} × {n_x} = {layout.n_frames} frames does not divide the "
            f"{source.n_frames} frames of the file"
        )
    available = source.n_frames // layout.n_frames
    n_maps = available if n_maps is None else n_maps
    if not 1 <= n_maps <= available:
        raise ValueError(f"n_maps must be in [1, {available}] (maps in the file), got {n_maps}")
    return layout, n_maps


def analyze_files(
    frames_path: str | Path | Sequence[str | Path],
    *,
    poni: str | Path | DetectorGeometry,
    map_shape: tuple[int, int],
    families: str | Path | FamilyConfig | None = None,
    params: AnalysisParameters | None = None,
    dataset: str | None = None,
    snake: bool = False,
    n_maps: int | None = None,
    z_um: np.ndarray | None = None,
    x_um: np.ndarray | None = None,
    times_s: np.ndarray | None = None,
    electrochem: list[Mapping[str, float]] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    chunk_frames: int = 64,
    progress: bool = True,
    on_map: Callable[[int, int], None] | None = None,
) -> Products:
    """Analyse the maps stored in an HDF5 file and (optionally) write the products.

    Parameters
    ----------
    frames_path : str, Path or sequence of them
        Dectris master file, or any HDF5 file with ``dataset``; several files are read one
        after the other (a Dectris detector writes one master per series: a fly map armed
        once per line has one master per line).
    poni : str, Path or DetectorGeometry
        pyFAI PONI file of the detector (or a geometry); must match the frame shape.
    map_shape : (int, int)
        ``(n_z, n_x)`` frames per map; must divide the frame count.
    families : str, Path or FamilyConfig, optional
        Orientation families (TOML); required unless ``params`` is given.
    params : AnalysisParameters, optional
        All analysis options (``families`` then overrides its families).
    dataset : str, optional
        Frames dataset path inside ``frames_path`` (default: Dectris layout).
    snake : bool, optional
        Odd rows scanned in −x.
    n_maps : int, optional
        Analyse only the first ``n_maps`` maps (default all).
    z_um, x_um : numpy.ndarray, optional
        Row heights (n_z,) and column centres (n_x,) in µm (default 0, 1, …).
    times_s : numpy.ndarray, optional
        Mid-map experiment times (s); default from ``/entry/opmap/time_s``, else the map
        index (recorded in the metadata as ``time_source``).
    electrochem : list of Mapping, optional
        Electrochemical state per map.
    out : str or Path, optional
        Write the products there (atomically); None writes nothing. Its directory must
        exist, and it may never be the frames file or one of its data files.
    overwrite : bool, optional
        Replace an existing ``out`` (never an input); otherwise an existing file is an error
        raised before any computation.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; default the local threaded scheduler.
    chunk_frames : int, optional
        Frames per dask block with a ``scheduler`` (locally frames stream one by one).
    progress : bool, optional
        Show dask's progress bar on stderr.
    on_map : callable, optional
        Called as ``on_map(done, total)`` after each map.

    Returns
    -------
    Products

    Raises
    ------
    ValueError
        Unparsable PONI or families, overlapping sectors, frames of the wrong shape,
        truncated/corrupt HDF5, NaN, infinite or negative frames, a map shape that does not
        divide the frame count, ``out`` an input or in a missing directory; nothing is
        written then.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    params = _parameters(families, params)
    if out is not None and Path(out).exists() and not overwrite:
        raise FileExistsError(
            f"{out} exists; pass overwrite=True or write to {next_free_path(out)}"
        )
    paths = _frame_paths(frames_path)
    source = open_frame_series(paths, dataset=dataset)
    if out is not None:
        check_output_path(out, [*paths, *(piece.path for piece in source.pieces)])
    geometry = _geometry(poni, source)
    params = params.model_copy(  # the distance correction uses the PONI's λ and distance
        update={"wavelength_angstrom": geometry.wavelength_angstrom,
                "sample_detector_distance_m": geometry.distance_m}
    )  # fmt: skip
    layout, n_maps = _layout(source, map_shape, snake, n_maps, z_um, x_um)
    times, time_source = _times(paths, times_s, layout, n_maps)
    if electrochem is not None and len(electrochem) < n_maps:
        raise ValueError(f"electrochem has {len(electrochem)} entries for {n_maps} maps")
    experiment = ExperimentAnalysis(
        layout, params,
        metadata={"frames_file": ", ".join(path.name for path in paths), "dataset": dataset,
                  "time_source": time_source, "n_frames_per_map": layout.n_frames},
    )  # fmt: skip
    reducer = FrameReducer(
        compile_reduction(params.reduction_plan(), geometry),
        scheduler=scheduler,
        progress=progress,
    )
    with reducer:
        _add_maps(experiment, reducer, source, chunk_frames, times, electrochem, on_map)
    products = experiment.products()
    if out is not None:
        write_products(out, products, overwrite=overwrite)
    return products


def _parameters(
    families: str | Path | FamilyConfig | None, params: AnalysisParameters | None
) -> AnalysisParameters:
    """``params`` with ``families`` (a TOML file or config) in place of its families."""
    if families is None:
        if params is None:
            raise ValueError("pass families (a TOML file or FamilyConfig) or params")
        return params
    config = families if isinstance(families, FamilyConfig) else load_families(families)
    if params is None:
        return AnalysisParameters(families=config)
    updated = params.model_copy(update={"families": config})
    return AnalysisParameters.model_validate(updated.model_dump())


def _add_maps(
    experiment: ExperimentAnalysis,
    reducer: FrameReducer,
    source: FrameSource,
    chunk_frames: int,
    times_s: np.ndarray,
    electrochem: Sequence[Mapping[str, float]] | None,
    on_map: Callable[[int, int], None] | None,
) -> None:
    """Reduce and analyse maps ``0 … len(times_s) - 1`` of ``source`` in time order."""
    n_frames, n_maps = experiment.layout.n_frames, len(times_s)
    bounds = [(index * n_frames, (index + 1) * n_frames) for index in range(n_maps)]
    analyse = MapAnalysis(experiment.layout, experiment.params, tuple(map(float, times_s)))
    each = reducer.analysed_source_each(source, bounds, analyse, chunk_frames=chunk_frames)
    with contextlib.closing(each) as results:
        for index, result in enumerate(results):
            state = None if electrochem is None else electrochem[index]
            experiment.add_map(result, electrochem=state)
            if on_map is not None:
                on_map(index + 1, n_maps)


def _times(frames_path, times_s, layout: MapLayout, n_maps: int) -> tuple[np.ndarray, str]:
    if times_s is not None:
        times = np.asarray(times_s, float)
        if times.shape != (n_maps,) or not np.all(np.isfinite(times)):
            raise ValueError(
                f"map times (--map-times-s) must hold {n_maps} finite times, one per analysed "
                f"map, got {times.size}"
            )
        return times, "given"
    stored = read_map_times_s(frames_path, frames_per_map=layout.n_frames, n_maps=n_maps)
    if stored is not None and np.all(np.isfinite(stored)) and np.all(np.diff(stored) > 0):
        return stored, _TIME_SOURCE_FILE
    return np.arange(n_maps, dtype=float), "map index (no per-frame times in the file)"
