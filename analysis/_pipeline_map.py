"""One map: lattice, phase, Ti and grain results from the reduced frames of that map."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._pipeline_layout import MapLayout
from ._pipeline_params import AnalysisParameters
from ._pipeline_sampling import SamplingCorrection
from .fitting import fit_gaussian, fit_two_gaussians
from .grains import GrainTable, find_grains
from .lattice import a_from_q110, c_from_q003
from .phases import phase_maps, ti_position
from .reduction import ReducedFrames

__all__ = ["MapResult", "analyze_map"]


@dataclass(frozen=True)
class MapResult:
    """Results of one map; every map array is (n_z, n_x), NaN where not measured.

    Attributes
    ----------
    map_index : int
        Position of the map in the experiment.
    time_s : float
        Experiment time at the middle of the map (s), given by the caller.
    c_angstrom, c_err_angstrom : Mapping[str, numpy.ndarray]
        c per family (Å) from the (003) position, and its standard uncertainty.
    a_angstrom, a_err_angstrom : Mapping[str, numpy.ndarray]
        a per family (Å) from (110) (families with (110) sectors only).
    x_li, x_li_err : Mapping[str, numpy.ndarray]
        Li content of LiₓCoO₂ per family from c (dimensionless).
    rich_fraction : numpy.ndarray
        Li-rich (003) area fraction of the front family (two Gaussians), (n_z, n_x).
    phases : Mapping[str, numpy.ndarray]
        Normalised (0–1) intensity of each reduction band, (n_z, n_x).
    band_intensity : Mapping[str, numpy.ndarray]
        Raw mean band intensity (counts per normalised pixel), (n_z, n_x).
    ti_z_um : numpy.ndarray
        Ti collector height per column (µm), (n_x,).
    grains : GrainTable
        Li grains of this map (``track_id`` −1: linked by `ExperimentAnalysis`).
    """

    map_index: int
    time_s: float
    c_angstrom: Mapping[str, np.ndarray]
    c_err_angstrom: Mapping[str, np.ndarray]
    a_angstrom: Mapping[str, np.ndarray]
    a_err_angstrom: Mapping[str, np.ndarray]
    x_li: Mapping[str, np.ndarray]
    x_li_err: Mapping[str, np.ndarray]
    rich_fraction: np.ndarray
    phases: Mapping[str, np.ndarray]
    band_intensity: Mapping[str, np.ndarray]
    ti_z_um: np.ndarray
    grains: GrainTable


def _present(area: np.ndarray, min_relative_area: float) -> np.ndarray:
    """Pixels where a fitted peak is a real one: area >= fraction of the map's strong pixels.

    The reference is the 90th percentile of the finite areas (the family's peak where it is
    in the beam); noise fits outside the layer have a small fraction of it.
    """
    finite = area[np.isfinite(area)]
    if finite.size == 0:
        return np.zeros(area.shape, bool)
    reference = float(np.percentile(finite, 90))
    return np.isfinite(area) & (area >= min_relative_area * reference)


def _lattice(
    reduced: ReducedFrames,
    layout: MapLayout,
    params: AnalysisParameters,
    sampling: SamplingCorrection | None,
):
    out: dict[str, dict[str, np.ndarray]] = {
        k: {} for k in ("c", "c_err", "a", "a_err", "x", "x_err")
    }
    for family in params.families.family:
        name = family.name
        fit = fit_gaussian(
            reduced.profiles[f"{name}:003"], reduced.profile_q[f"{name}:003"],
            min_snr=params.fit_min_snr,
        )  # fmt: skip
        q = np.where(_present(fit.area, params.min_relative_area), fit.position_q, np.nan)
        if sampling is not None:
            q = sampling.correct(f"{name}:003", q, fit.sigma_q)
        c, c_err = c_from_q003(q, fit.position_q_err)
        x, x_err = params.x_li(name, c, c_err)
        for key, value in (("c", c), ("c_err", c_err), ("x", x), ("x_err", x_err)):
            out[key][name] = layout.to_map(value)
        key_110 = f"{name}:110"
        if key_110 in reduced.profiles:
            fit = fit_gaussian(
                reduced.profiles[key_110], reduced.profile_q[key_110], min_snr=params.fit_min_snr
            )
            q = np.where(_present(fit.area, params.min_relative_area), fit.position_q, np.nan)
            a, a_err = a_from_q110(q, fit.position_q_err)
            out["a"][name], out["a_err"][name] = layout.to_map(a), layout.to_map(a_err)
    return out


def _rich_fraction(reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters):
    key = f"{params.front_family_name}:003"
    q = reduced.profile_q[key]
    positions = (6 * np.pi / params.poor_c_angstrom, 6 * np.pi / params.rich_c_angstrom)
    fit = fit_two_gaussians(
        reduced.profiles[key], q, positions_q=positions,
        fix_positions=params.fix_phase_positions, min_snr=params.fit_min_snr,
    )  # fmt: skip
    rich = fit.fraction[:, 1]
    # A pure phase leaves the other peak's area at its bound of 0 and the two-peak fit is
    # not trusted; the single-peak c (where trusted) then tells which phase it is.
    key_fit = fit_gaussian(reduced.profiles[key], q, min_snr=params.fit_min_snr)
    c_single, _ = c_from_q003(key_fit.position_q)
    c_mid = 0.5 * (params.rich_c_angstrom + params.poor_c_angstrom)
    pure = np.where(c_single < c_mid, 1.0, 0.0)
    rich = np.where(np.isnan(rich) & np.isfinite(c_single), pure, rich)
    return layout.to_map(rich)


def _fill_empty_bins(window: np.ndarray) -> np.ndarray:
    """Li window (n, n_chi, n_q) with empty (NaN) bins set to their q bin's median over chi.

    A binned detector leaves some of the 3600 small (chi, q) bins without any pixel; the
    median is the Li-free background there, so an empty bin is neither a spot nor a hole.
    """
    empty = np.isnan(window)
    if not empty.any():
        return window
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN q bin gives NaN → 0
        median = np.nanmedian(window, axis=1, keepdims=True)
    filled = np.where(empty, np.nan_to_num(median), window)
    return filled.astype(window.dtype, copy=False)


def analyze_map(
    reduced: ReducedFrames,
    layout: MapLayout,
    params: AnalysisParameters,
    *,
    map_index: int,
    time_s: float,
    sampling: SamplingCorrection | None = None,
) -> MapResult:
    """Analyse the reduced frames of one map.

    Parameters
    ----------
    reduced : ReducedFrames
        The ``layout.n_frames`` frames of the map, in acquisition order (from
        `CompiledReduction.reduce` with ``params.reduction_plan()``).
    layout : MapLayout
        Where each frame sits on the (z, x) grid.
    params : AnalysisParameters
        Fit, calibration, Ti and grain options.
    map_index : int
        Position of the map in the experiment (>= 0).
    time_s : float
        Experiment time at the middle of the map (s, finite).
    sampling : SamplingCorrection, optional
        Detector-sampling correction of the (003) positions (`sampling_correction`, built
        once per geometry); None: positions as fitted.

    Returns
    -------
    MapResult

    Raises
    ------
    ValueError
        Frame count differs from the layout, a family's profile or the Ti band is missing,
        or ``map_index`` / ``time_s`` are invalid.
    """
    if reduced.n_frames != layout.n_frames:
        raise ValueError(
            f"reduced holds {reduced.n_frames} frames but the layout needs "
            f"n_z·n_x = {layout.n_z}·{layout.n_x} = {layout.n_frames}"
        )
    if not (isinstance(map_index, int | np.integer) and map_index >= 0):
        raise ValueError(f"map_index must be an integer >= 0, got {map_index!r}")
    if not np.isfinite(time_s):
        raise ValueError(f"time_s must be finite, got {time_s!r}")
    missing = [f"{f.name}:003" for f in params.families.family]
    missing = [k for k in missing if k not in reduced.profiles]
    stack = params.stack_bands if params.li_thickness_method == "stack" else ()
    needed = [params.ti_band, *stack]
    missing += [b for b in needed if b not in reduced.bands]
    if missing:
        raise ValueError(f"reduced lacks {missing}: reduce with params.reduction_plan()")
    lat = _lattice(reduced, layout, params, sampling)
    single = MapLayout(n_z=layout.n_z, n_x=layout.n_x, snake=layout.snake)
    phases = {
        name: values[0]
        for name, values in phase_maps(
            reduced.bands, n_z=single.n_z, n_x=single.n_x, snake=single.snake,
            percentiles=params.phase_percentiles,
        ).items()
    }  # fmt: skip
    bands = {name: layout.to_map(np.asarray(v, float)) for name, v in reduced.bands.items()}
    ti_z = ti_position(
        bands[params.ti_band], z_um=layout.z_um, half_window=params.ti_half_window,
        method=params.ti_method,
    )  # fmt: skip
    grains = find_grains(
        layout.to_map(_fill_empty_bins(reduced.li_window)), z_um=layout.z_um, x_um=layout.x_um,
        chi_deg=reduced.li_window_chi_deg, k=params.grain_k,
        background_chi_step=params.grain_background_chi_step, map_index=int(map_index),
        min_voxels=params.grain_min_voxels, split_chi_tol_deg=params.grain_split_chi_tol_deg,
    )  # fmt: skip
    return MapResult(
        map_index=int(map_index),
        time_s=float(time_s),
        c_angstrom=lat["c"],
        c_err_angstrom=lat["c_err"],
        a_angstrom=lat["a"],
        a_err_angstrom=lat["a_err"],
        x_li=lat["x"],
        x_li_err=lat["x_err"],
        # Only where the front family diffracts (its single-peak fit is trusted): elsewhere
        # a two-peak fit of noise gives a fraction, not a phase.
        rich_fraction=np.where(
            np.isfinite(lat["c"][params.front_family_name]),
            _rich_fraction(reduced, layout, params),
            np.nan,
        ),
        phases=phases,
        band_intensity=bands,
        ti_z_um=ti_z,
        grains=grains,
    )
