"""Every tunable of the map-level pipeline, in one frozen, JSON-serialisable model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..distance import REFERENCE_D_ANGSTROM
from ..families import FamilyConfig
from ..grains import LinkTolerances
from ..lattice import LiCalibration, li_fraction_from_c
from ..reduction import QBinning, ReductionPlan

__all__ = ["AnalysisParameters", "CalibrationTable", "load_parameters"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class CalibrationTable(BaseModel):
    """Piecewise-linear x(c) of one family: c (Å, strictly increasing) against x_Li.

    Outside the table x is clamped to its end values.

    Examples
    --------
    >>> table = CalibrationTable(c_angstrom=(14.0, 14.13, 14.32), x_li=(1.0, 0.75, 0.5))
    >>> x, _ = table.x_li_from_c(np.array([14.065, 14.5]))
    >>> print(np.round(x, 3))
    [0.875 0.5  ]
    """

    model_config = _FROZEN
    c_angstrom: tuple[float, ...] = Field(min_length=2)
    x_li: tuple[float, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationTable:
        if len(self.c_angstrom) != len(self.x_li):
            raise ValueError(
                f"c_angstrom ({len(self.c_angstrom)}) and x_li ({len(self.x_li)}) "
                "must have the same length"
            )
        if np.any(np.diff(self.c_angstrom) <= 0):
            raise ValueError("c_angstrom must be strictly increasing")
        return self

    def x_li_from_c(
        self, c_angstrom: np.ndarray, c_err: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x and its standard uncertainty (local slope × σc) for c in Å (any shape)."""
        c = np.asarray(c_angstrom, dtype=float)
        x = np.interp(c, self.c_angstrom, self.x_li)
        slopes = np.diff(self.x_li) / np.diff(self.c_angstrom)
        segment = np.clip(np.searchsorted(self.c_angstrom, c) - 1, 0, slopes.size - 1)
        inside = (c >= self.c_angstrom[0]) & (c <= self.c_angstrom[-1])
        slope = np.where(inside, np.abs(slopes[segment]), 0.0)
        err = np.full_like(c, np.nan) if c_err is None else slope * np.asarray(c_err, float)
        return np.where(np.isfinite(c), x, np.nan), err


class AnalysisParameters(BaseModel):
    """Everything tunable in `analyze_map` and `ExperimentAnalysis` (recorded as provenance).

    Parameters
    ----------
    families : FamilyConfig
        LCO orientation families and their sectors (defines the reduction plan too).
    fit_min_snr : float
        Peak area / its uncertainty below which a (003)/(110) fit is rejected (NaN), > 2.
    min_relative_area : float
        A (003)/(110) peak whose area is below this fraction of the map's 90th-percentile
        area is not the family's (the beam is outside the cathode): NaN, in [0, 1).
    calibration : dict[str, CalibrationTable]
        x(c) table per family; families not listed use the paper's two lines
        (`opmap.analysis.lattice.PAPER_CALIBRATION`).
    front_family : str or None
        Family whose (003) profile gives the Li-rich fraction (two Gaussians); default the
        first family.
    rich_c_angstrom, poor_c_angstrom : float
        Starting c of the Li-rich and Li-poor phases (Å) for the two-Gaussian fit.
    fix_phase_positions : bool
        Hold both (003) positions at those c (fit only areas, width, background). Default
        True: the two phases' c are known in the biphasic stage, and free positions split a
        single Li-poor peak into two (a spurious Li-rich fraction of 0.2–0.4).
    front_time_window_s : (float, float) or None
        Only maps with ``time_s`` inside enter the front speed fit (None: the longest run of
        consecutive maps with a front, i.e. the biphasic stage).
    front_cathode_z_um : (float, float) or None
        Cathode rows (µm) used for the front; fronts outside are rejected (None: all rows).
    front_contrast : float
        A front needs the column-mean Li-rich fraction to reach 0.5 ± this inside the
        cathode, in [0, 0.5).
    ti_band : str
        Reduction band locating the Ti collector (``ti_z``, and the Li thickness by default).
    li_thickness_method : {"ti", "stack"}
        ``"ti"`` (default, the paper's method, Fig. 4b): Li thickness = upward displacement
        of the ``ti_band`` position (`opmap.analysis.phases.ti_position`) from the reference
        map. ``"stack"`` (opt-in): displacement of the ``stack_bands`` profiles together
        (`opmap.analysis.phases.stack_displacement`), exact only for a top-hat beam, a layer
        as thick as the row step and a rigid stack. Either way the Au stack estimate is
        stored as the cross-check product ``li_thickness_au``.
    stack_bands : tuple of str
        Bands that move with the stack above the Li, matched together (default Au (111)).
    ti_half_window : int
        Rows each side of the Ti maximum in its centroid.
    ti_method : {"centroid", "gaussian"}
        Ti position estimator (`opmap.analysis.phases.ti_position`).
    reference_map : int
        Map without plated Li: Li thickness = Ti displacement from it.
    phase_percentiles : (float, float)
        Percentiles mapped to 0 and 1 in the phase maps.
    grain_k : float
        Li spot threshold in units of the frame's mean window intensity (paper: 10).
    grain_min_voxels : int
        Smallest grain kept, in (z, x, χ) voxels (1, the paper: every cluster; 2 drops
        isolated noise voxels, opt-in).
    grain_split_chi_tol_deg : float or None
        Opt-in column split of merged spots, tuned on the twin (not in the paper): parts in
        neighbouring x columns stay one grain only when their azimuths agree within this
        (deg); None (default): plain connected components, as in the paper.
    grain_background_chi_step : int
        Azimuth stride of the median background of the Li window.
    link_tol_x_um, link_tol_z_um, link_tol_chi_deg : float
        Floors of the linking tolerances between consecutive maps: the scatter of a grain
        that did not move (16.5 µm, half a 33 µm column; 2 µm; 1°, one χ bin).
    link_rotation_deg_per_min, link_drift_um_per_min : float
        Largest rotation rate (azimuth change) and drift speed of a grain; the tolerances
        grow by rate × the time between maps (`opmap.analysis.grains.link_grains`;
        defaults 1 deg/min and 2 µm/min: the paper's grains rotate within minutes).
    grain_sensitivity_k : tuple of float
        Thresholds of the grain-count sensitivity table (empty: no table).
    grain_sensitivity_link_scales : tuple of float
        Factors on every link tolerance and rate in the sensitivity table.
    distance_correction : {"linear_x", "constant", "plane", "off"}
        The paper's distance correction of every (003)/(110) position from the reference
        peaks (`opmap.analysis.distance`): s = (D − Δ)/D fitted per map as a + b·x (default:
        an offset along the beam and a turn about z), a constant, or a plane in (x, z)
        (needs references at two heights); "off": positions as integrated.
    distance_references : tuple of str
        Reference reflections (keys of `opmap.analysis.distance.REFERENCE_D_ANGSTROM`);
        default Ti (100), as in the paper (Au (111) overlaps Ti (002) and LCO (006)).
    distance_min_snr : float
        Reference peaks whose area / its uncertainty is below this are not used (> 2).
    distance_max_scale_err : float
        Largest accepted uncertainty of the fitted s anywhere in the map (default 1e-4,
        10 µm at 0.1 m); above it (no reference layer in the map, noise) the map's positions
        stay uncorrected and ``sample_offset`` is NaN.
    wavelength_angstrom : float
        X-ray wavelength (Å) for the correction (default 0.6888, 18 keV; `analyze_files`
        takes it from the PONI).
    sample_detector_distance_m : float
        PONI distance (m) turning s into the sample offset in µm (default 0.1;
        `analyze_files` takes it from the PONI).
    stable_min_maps : int or None
        Lifetime (maps) from which a grain is stable; default more than half the maps.
    azimuth_bin_deg : float
        Bin width of the grain azimuth histogram (divides 360).
    """

    model_config = _FROZEN
    families: FamilyConfig
    fit_min_snr: float = Field(default=5.0, gt=2.0, le=1000.0)
    #: A family's peak counts in a pixel only if its area reaches this fraction of the map's
    #: 90th-percentile area: outside the cathode, noise passes the SNR test now and then.
    min_relative_area: float = Field(default=0.1, ge=0.0, lt=1.0)
    calibration: dict[str, CalibrationTable] = Field(default_factory=dict)
    front_family: str | None = None
    rich_c_angstrom: float = Field(default=14.0, gt=13.0, lt=15.0)
    poor_c_angstrom: float = Field(default=14.13, gt=13.0, lt=15.0)
    fix_phase_positions: bool = True
    front_time_window_s: tuple[float, float] | None = None
    front_cathode_z_um: tuple[float, float] | None = (0.0, 20.0)
    front_contrast: float = Field(default=0.2, ge=0.0, lt=0.5)
    ti_band: str = "ti_100"
    li_thickness_method: Literal["ti", "stack"] = "ti"
    stack_bands: tuple[str, ...] = Field(default=("au_111",), min_length=1)
    ti_half_window: int = Field(default=2, ge=1, le=10)
    ti_method: Literal["centroid", "gaussian"] = "centroid"
    reference_map: int = Field(default=0, ge=0)
    phase_percentiles: tuple[float, float] = (1.0, 99.5)
    grain_k: float = Field(default=10.0, gt=0.0, le=1000.0)
    grain_min_voxels: int = Field(default=1, ge=1, le=1000)
    grain_split_chi_tol_deg: float | None = Field(default=None, ge=0.0, le=180.0)
    grain_background_chi_step: int = Field(default=4, ge=1, le=45)
    link_tol_x_um: float = Field(default=16.5, gt=0.0)
    link_tol_z_um: float = Field(default=2.0, gt=0.0)
    link_tol_chi_deg: float = Field(default=1.0, gt=0.0, le=180.0)
    link_rotation_deg_per_min: float = Field(default=1.0, ge=0.0, le=360.0)
    link_drift_um_per_min: float = Field(default=2.0, ge=0.0, le=1000.0)
    grain_sensitivity_k: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 15.0)
    grain_sensitivity_link_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    distance_correction: Literal["linear_x", "constant", "plane", "off"] = "linear_x"
    distance_references: tuple[str, ...] = ("ti_100",)
    distance_min_snr: float = Field(default=10.0, gt=2.0, le=1000.0)
    distance_max_scale_err: float = Field(default=1e-4, gt=0.0, lt=0.1)
    wavelength_angstrom: float = Field(default=0.6888, gt=0.0, lt=10.0)
    sample_detector_distance_m: float = Field(default=0.1, gt=0.0, lt=100.0)
    stable_min_maps: int | None = Field(default=None, ge=2)
    azimuth_bin_deg: float = Field(default=5.0, gt=0.0, le=180.0)

    @model_validator(mode="after")
    def _names_known(self) -> AnalysisParameters:
        names = [f.name for f in self.families.family]
        unknown = sorted(set(self.calibration) - set(names))
        if unknown:
            raise ValueError(f"calibration names unknown families {unknown}; known: {names}")
        if self.front_family is not None and self.front_family not in names:
            raise ValueError(f"front_family {self.front_family!r} must be one of {names}")
        if not self.rich_c_angstrom < self.poor_c_angstrom:
            raise ValueError(
                f"rich_c_angstrom ({self.rich_c_angstrom}) must be below poor_c_angstrom "
                f"({self.poor_c_angstrom}): Li-rich LCO has the smaller c"
            )
        lo, hi = self.phase_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"phase_percentiles must satisfy 0 <= low < high <= 100, got {lo, hi}"
            )
        cathode = self.front_cathode_z_um
        if cathode is not None and not cathode[0] < cathode[1]:
            raise ValueError(
                f"front_cathode_z_um must be (bottom, top) with bottom < top, got {cathode}"
            )
        window = self.front_time_window_s
        if window is not None and not window[0] < window[1]:
            raise ValueError("front_time_window_s must be (start, stop) with start < stop")
        if abs(360.0 / self.azimuth_bin_deg - round(360.0 / self.azimuth_bin_deg)) > 1e-9:
            raise ValueError(f"azimuth_bin_deg must divide 360, got {self.azimuth_bin_deg}")
        unknown_refs = sorted(set(self.distance_references) - set(REFERENCE_D_ANGSTROM))
        if unknown_refs or not self.distance_references:
            raise ValueError(
                f"distance_references must name some of {sorted(REFERENCE_D_ANGSTROM)}, "
                f"got {list(self.distance_references)}"
            )
        for name in ("grain_sensitivity_k", "grain_sensitivity_link_scales"):
            if not all(0 < v < np.inf for v in getattr(self, name)):
                raise ValueError(f"{name} must hold finite values > 0, got {getattr(self, name)}")
        return self

    def link_tolerances(self) -> LinkTolerances:
        """The grain-linking tolerances (`opmap.analysis.grains.link_grains`)."""
        return LinkTolerances(
            tol_x_um=self.link_tol_x_um, tol_z_um=self.link_tol_z_um,
            tol_chi_deg=self.link_tol_chi_deg,
            rotation_deg_per_min=self.link_rotation_deg_per_min,
            drift_um_per_min=self.link_drift_um_per_min,
        )  # fmt: skip

    @property
    def front_family_name(self) -> str:
        """The family used for the Li-rich fraction."""
        return self.front_family or self.families.family[0].name

    def reduction_plan(self, **options: Any) -> ReductionPlan:
        """The reduction plan these parameters need (``options`` go to `ReductionPlan`)."""
        if self.distance_correction != "off" and "reference_profiles" not in options:
            options["reference_profiles"] = {
                name: _reference_binning(name) for name in self.distance_references
            }
        plan = ReductionPlan(families=self.families, **options)
        for name in (self.ti_band, *self.stack_bands):
            if name not in plan.bands:
                raise ValueError(
                    f"ti_band / stack_bands name {name!r}, not a band of the plan: "
                    f"{list(plan.bands)}"
                )
        return plan

    def x_li(
        self, family: str, c_angstrom: np.ndarray, c_err: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x_Li and its uncertainty from c (Å) with ``family``'s calibration."""
        table = self.calibration.get(family)
        if table is not None:
            return table.x_li_from_c(c_angstrom, c_err)
        return li_fraction_from_c(c_angstrom, c_err, calibration=LiCalibration())


def _reference_binning(name: str) -> QBinning:
    """Profile binning ±0.03 Å⁻¹ around a reference reflection (24 bins of 0.0025 Å⁻¹)."""
    q0 = 2.0 * np.pi / REFERENCE_D_ANGSTROM[name]
    return QBinning(q_min_inv_angstrom=q0 - 0.03, q_max_inv_angstrom=q0 + 0.03, n_q=24)


def load_parameters(path: str | Path, **overrides: Any) -> AnalysisParameters:
    """Read `AnalysisParameters` from TOML (``[[families.family]]`` tables + options).

    ``overrides`` replace top-level fields (e.g. ``families=load_families(...)``).
    A misspelt or out-of-range field raises ``ValueError`` naming it.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    data.update(overrides)
    return AnalysisParameters.model_validate(data)
