"""One map: lattice, phase, Ti and grain results from the reduced frames of that map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..distance import correct_q, fit_distance_scale
from ..fitting import fit_gaussian, fit_two_gaussians, peak_present, peak_significance
from ..grains import GrainTable, find_grains_for_thresholds
from ..lattice import (
    LatticeMaps,
    PixelFlag,
    a_from_q110,
    c_from_q003,
    li_fraction_from_c,
    peak_flags,
)
from ..phases import peak_above_background, phase_maps, ti_flags, ti_position
from ..reduction import ReducedFrames
from ._layout import MapLayout
from ._params import AnalysisParameters
from ._sampling import SamplingCorrection

__all__ = ["MapAnalysis", "MapResult", "analyze_map"]


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
        Li content of LiₓCoO₂ per family from c (dimensionless), families with a
        calibration only; NaN outside its calibrated range.
    flags : Mapping[str, numpy.ndarray]
        uint8 `PixelFlag` per product (``"c_<family>"``, ``"a_<family>"``,
        ``"x_li_<family>"``), (n_z, n_x): why a value is NaN.
    rich_fraction : numpy.ndarray or None
        Li-rich (003) area fraction of the front family (two Gaussians), (n_z, n_x); only
        with ``params.front_method == "rich_fraction"`` (opt-in), else None.
    phases : Mapping[str, numpy.ndarray]
        Normalised (0–1) intensity of each reduction band, (n_z, n_x).
    band_intensity : Mapping[str, numpy.ndarray]
        Raw mean band intensity (counts per normalised pixel), (n_z, n_x).
    ti_z_um : numpy.ndarray
        Ti collector height per column (µm), (n_x,).
    ti_flag : numpy.ndarray
        uint8 `opmap.analysis.phases.TiFlag` per column, (n_x,): why ``ti_z_um`` is NaN
        (e.g. ABSENT: no Ti in the map's z range).
    grains : GrainTable
        Li grains of this map (``track_id`` −1: linked by `ExperimentAnalysis`).
    grain_sensitivity : Mapping[float, GrainTable]
        Grains of this map at every threshold k of ``params.grain_sensitivity_k``.
    distance_scale : numpy.ndarray or None
        s = (D − Δ)/D of the distance correction per pixel (n_z, n_x), NaN where it could
        not be fitted (positions then uncorrected); None when the correction is off.
    """

    map_index: int
    time_s: float
    c_angstrom: Mapping[str, np.ndarray]
    c_err_angstrom: Mapping[str, np.ndarray]
    a_angstrom: Mapping[str, np.ndarray]
    a_err_angstrom: Mapping[str, np.ndarray]
    x_li: Mapping[str, np.ndarray]
    x_li_err: Mapping[str, np.ndarray]
    flags: Mapping[str, np.ndarray]
    rich_fraction: np.ndarray | None
    phases: Mapping[str, np.ndarray]
    band_intensity: Mapping[str, np.ndarray]
    ti_z_um: np.ndarray
    ti_flag: np.ndarray
    grains: GrainTable
    grain_sensitivity: Mapping[float, GrainTable] = field(default_factory=dict)
    distance_scale: np.ndarray | None = None


def _peak_q(
    reduced: ReducedFrames,
    key: str,
    params: AnalysisParameters,
    sampling: SamplingCorrection | None = None,
    distance_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak position of profile ``key`` per frame (Å⁻¹), its uncertainty and `PixelFlag`;
    with ``distance_scale`` (n_frames,) the paper's distance correction is applied.

    NaN where the reflection is absent (not significant against the local background noise,
    or not centred in the window), faint, masked or the fit failed: the flag says which.
    """
    profiles, q_grid = _sector_profiles(reduced, key, params), reduced.profile_q[key]
    fit = fit_gaussian(profiles, q_grid, min_snr=params.fit_min_snr)
    significance, centred = peak_significance(profiles, q_grid, fit)
    with np.errstate(invalid="ignore"):
        significant = centred & (significance >= params.presence_min_sigma)
    area = np.where(significant, fit.area, np.nan)
    relative = peak_present(area, min_relative_area=params.min_relative_area)
    flags = peak_flags(
        fit.flag, significance, centred, relative, min_sigma=params.presence_min_sigma
    )
    ok = flags == PixelFlag.OK
    q = np.where(ok, fit.position_q, np.nan)
    if sampling is not None:
        q = sampling.correct(key, q, fit.sigma_q)
    if distance_scale is not None:  # the paper's distance correction (opmap.analysis.distance)
        q = correct_q(q, distance_scale, wavelength_angstrom=params.wavelength_angstrom)
    return q, np.where(ok, fit.position_q_err, np.nan), flags


def _sector_profiles(reduced: ReducedFrames, key: str, params: AnalysisParameters) -> np.ndarray:
    """Profiles (n_frames, n_q) of sector profile ``key``; a family's (003) with the
    profile between the spots subtracted when ``params.sector_background`` asks for it."""
    profiles = reduced.profiles[key]
    background_key = params.sector_background_key()
    if background_key is None or not key.endswith(":003"):
        return profiles
    return np.asarray(profiles, np.float64) - np.asarray(reduced.profiles[background_key])


def _x_li(
    params: AnalysisParameters, family: str, c: np.ndarray, c_err: np.ndarray, c_flag: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """x_Li, its uncertainty and flags of one family (None without a calibration)."""
    calibration = params.li_calibration(family)
    if calibration is None:
        return None
    x, x_err = li_fraction_from_c(c, c_err, calibration=calibration)
    flag = np.where(c_flag == PixelFlag.OK, PixelFlag.OK, PixelFlag.NO_C).astype(np.uint8)
    flag[(c_flag == PixelFlag.OK) & ~calibration.covers(c)] = PixelFlag.OUT_OF_RANGE
    return x, x_err, flag


def _lattice(
    reduced: ReducedFrames,
    layout: MapLayout,
    params: AnalysisParameters,
    sampling: SamplingCorrection | None,
    scale: np.ndarray | None = None,
) -> LatticeMaps:
    """c, a and x maps (n_z, n_x) per family of one map, with their `PixelFlag` maps.

    a only where (110) is reduced; x only for families with a calibration.
    """
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in ("c", "ce", "a", "ae", "x", "xe")}
    flags: dict[str, np.ndarray] = {}
    for family in params.families.family:
        name = family.name
        q, q_err, c_flag = _peak_q(reduced, f"{name}:003", params, sampling, scale)
        c, c_err = c_from_q003(q, q_err)
        out["c"][name], out["ce"][name] = layout.to_map(c), layout.to_map(c_err)
        flags[f"c_{name}"] = layout.to_map(c_flag)
        x = _x_li(params, name, c, c_err, c_flag)
        if x is not None:
            out["x"][name], out["xe"][name] = layout.to_map(x[0]), layout.to_map(x[1])
            flags[f"x_li_{name}"] = layout.to_map(x[2])
        if f"{name}:110" in reduced.profiles:
            q, q_err, a_flag = _peak_q(reduced, f"{name}:110", params, None, scale)
            a, a_err = a_from_q110(q, q_err)
            out["a"][name], out["ae"][name] = layout.to_map(a), layout.to_map(a_err)
            flags[f"a_{name}"] = layout.to_map(a_flag)
    return LatticeMaps(*out.values(), flags=flags)


def _distance_scale(
    reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters
) -> np.ndarray | None:
    """The paper's distance correction: s (n_z, n_x) fitted to the reference peaks
    (`opmap.analysis.distance.fit_distance_scale`); None when off."""
    if params.distance_correction == "off":
        return None
    q_ref, q_err, area = {}, {}, {}
    for name in params.distance_references:
        key = params.distance_profile_key(name)
        fit = fit_gaussian(reduced.profiles[key], reduced.profile_q[key],
                           min_snr=params.distance_min_snr)  # fmt: skip
        q_ref[name] = layout.to_map(fit.position_q)
        q_err[name] = layout.to_map(fit.position_q_err)
        area[name] = layout.to_map(fit.area)
    scale, _ = fit_distance_scale(
        q_ref, q_reference_err=q_err, q_reference_area=area, z_um=layout.z_um, x_um=layout.x_um,
        wavelength_angstrom=params.wavelength_angstrom, model=params.distance_correction,
        max_scale_err=params.distance_max_scale_err,
    )  # fmt: skip
    return scale


def _to_frames(layout: MapLayout, values: np.ndarray) -> np.ndarray:
    """(n_z, n_x) map back to (n_frames,) acquisition order; NaN → 1 (no correction)."""
    frames = np.empty(layout.n_frames)
    frames[layout.frame_index()] = np.where(np.isfinite(values), values, 1.0)
    return frames


def _rich_fraction(reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters):
    key = f"{params.front_family_name}:003"
    q = reduced.profile_q[key]
    positions = (6 * np.pi / params.poor_c_angstrom, 6 * np.pi / params.rich_c_angstrom)
    profiles = _sector_profiles(reduced, key, params)
    fit = fit_two_gaussians(
        profiles, q, positions_q=positions,
        fix_positions=params.fix_phase_positions, min_snr=params.fit_min_snr,
    )  # fmt: skip
    rich = fit.fraction[:, 1]
    # A pure phase leaves the other peak's area at its bound of 0 and the two-peak fit is
    # not trusted; the single-peak c (where trusted) then tells which phase it is.
    key_fit = fit_gaussian(profiles, q, min_snr=params.fit_min_snr)
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
    # a q bin empty at every azimuth gets 0: its median is taken over zeros, so nanmedian
    # meets no all-NaN slice and needs no process-global warnings.catch_warnings (not
    # thread-safe; the live analysis runs beside the writer's validation)
    some = ~empty.all(axis=1, keepdims=True)
    median = np.nanmedian(np.where(some, window, 0.0), axis=1, keepdims=True)
    filled = np.where(empty, median, window)
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
    _check_map_inputs(reduced, layout, params, map_index, time_s)
    distance = _distance_scale(reduced, layout, params)
    scale_frames = None if distance is None else _to_frames(layout, distance)
    lattice = _lattice(reduced, layout, params, sampling, scale_frames)
    bands = {name: layout.to_map(np.asarray(v, float)) for name, v in reduced.bands.items()}
    ti_map = _ti_intensity(reduced, layout, params)
    ti_options = {"half_window": params.ti_half_window, "method": params.ti_method,
                  "min_significance": params.ti_min_significance, "z_um": layout.z_um,
                  "max_fwhm_um": params.layer_max_fwhm_um}  # fmt: skip
    ti_z = ti_position(ti_map, **ti_options)
    rich = None
    if params.front_method == "rich_fraction":
        # Only where the front family diffracts (its single-peak fit is trusted): elsewhere a
        # two-peak fit of noise gives a fraction, not a phase.
        trusted = np.isfinite(lattice.c_angstrom[params.front_family_name])
        rich = np.where(trusted, _rich_fraction(reduced, layout, params), np.nan)
    grains, grain_sensitivity = _grains(reduced, layout, params, int(map_index))
    return MapResult(
        map_index=int(map_index),
        time_s=float(time_s),
        c_angstrom=lattice.c_angstrom,
        c_err_angstrom=lattice.c_err_angstrom,
        a_angstrom=lattice.a_angstrom,
        a_err_angstrom=lattice.a_err_angstrom,
        x_li=lattice.x_li,
        x_li_err=lattice.x_li_err,
        flags=lattice.flags,
        rich_fraction=rich,
        phases=_phases(reduced, layout, params),
        band_intensity=bands,
        ti_z_um=ti_z,
        ti_flag=ti_flags(ti_map, **ti_options),
        grains=grains,
        grain_sensitivity=grain_sensitivity,
        distance_scale=distance,
    )


def _check_map_inputs(
    reduced: ReducedFrames,
    layout: MapLayout,
    params: AnalysisParameters,
    map_index: int,
    time_s: float,
) -> None:
    """Raise the `analyze_map` ``ValueError`` naming the first invalid input."""
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
    needed_profiles = [f"reference:{n}" for n in params.reference_profile_names()]
    if params.distance_correction != "off":
        needed_profiles += [params.distance_profile_key(n) for n in params.distance_references]
    if (background_key := params.sector_background_key()) is not None:
        needed_profiles.append(background_key)
    missing += [k for k in dict.fromkeys(needed_profiles) if k not in reduced.profiles]
    needed = [params.ti_band, *stack]
    missing += [b for b in needed if b not in reduced.bands]
    if missing:
        raise ValueError(f"reduced lacks {missing}: reduce with params.reduction_plan()")


def _ti_intensity(
    reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters
) -> np.ndarray:
    """(n_z, n_x) intensity the Ti position is found on (``params.ti_background``)."""
    if params.ti_background == "band":
        return layout.to_map(np.asarray(reduced.bands[params.ti_band], float))
    profile = np.asarray(reduced.profiles[f"reference:{params.ti_band}"], float)
    return layout.to_map(peak_above_background(profile))


def _phases(
    reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters
) -> dict[str, np.ndarray]:
    """Normalised (0–1) intensity map of each band, (n_z, n_x)."""
    maps = phase_maps(
        reduced.bands, n_z=layout.n_z, n_x=layout.n_x, snake=layout.snake,
        percentiles=params.phase_percentiles,
    )  # fmt: skip
    return {name: values[0] for name, values in maps.items()}


def _grains(
    reduced: ReducedFrames, layout: MapLayout, params: AnalysisParameters, map_index: int
) -> tuple[GrainTable, dict[float, GrainTable]]:
    """Li grains of the map at ``grain_k`` and at every k of the sensitivity grid, from its
    Li (110) window (empty bins filled first; one background for all k)."""
    ks = tuple(dict.fromkeys((float(params.grain_k), *params.grain_sensitivity_k)))
    by_k = find_grains_for_thresholds(
        layout.to_map(_fill_empty_bins(reduced.li_window)), ks, z_um=layout.z_um,
        x_um=layout.x_um, chi_deg=reduced.li_window_chi_deg,
        background_chi_step=params.grain_background_chi_step, map_index=map_index,
        min_voxels=params.grain_min_voxels, split_chi_tol_deg=params.grain_split_chi_tol_deg,
        variance=reduced.li_window_variance,
        false_spots_per_map=params.grain_false_spots_per_map,
    )  # fmt: skip
    sensitivity = {k: by_k[float(k)] for k in params.grain_sensitivity_k}
    return by_k[float(params.grain_k)], sensitivity


@dataclass(frozen=True)
class MapAnalysis:
    """`analyze_map` for the maps of one experiment, as a picklable ``(reduced, i)`` call.

    A `FrameReducer` runs it on a ``dask.distributed`` worker right after the map's
    reduction (`FrameReducer.analysed_each`), so the fits of many maps run in parallel.

    Attributes
    ----------
    layout : MapLayout
        The maps' layout.
    params : AnalysisParameters
        Fit, calibration, Ti and grain options.
    times_s : tuple of float
        Mid-map experiment time (s) of map ``i``, finite.
    sampling : SamplingCorrection, optional
        Detector-sampling correction of the (003) positions; None: as fitted.

    Raises
    ------
    ValueError
        A time that is not finite.
    """

    layout: MapLayout
    params: AnalysisParameters
    times_s: tuple[float, ...]
    sampling: SamplingCorrection | None = None

    def __post_init__(self) -> None:
        bad = [i for i, t in enumerate(self.times_s) if not np.isfinite(t)]
        if bad:
            raise ValueError(f"times_s must be finite; not for map(s) {bad}")

    def __call__(self, reduced: ReducedFrames, index: int) -> MapResult:
        """`analyze_map` of map ``index`` (its position in the experiment and its time)."""
        return analyze_map(
            reduced,
            self.layout,
            self.params,
            map_index=index,
            time_s=float(self.times_s[index]),
            sampling=self.sampling,
        )
