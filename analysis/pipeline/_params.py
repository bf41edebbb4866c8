"""Every tunable of the map-level pipeline, in one frozen, JSON-serialisable model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..distance import REFERENCE_D_ANGSTROM
from ..families import ChiSector, FamilyConfig
from ..grains import LinkTolerances
from ..lattice import PAPER_CALIBRATION, LiCalibration, li_fraction_from_c
from ..reduction import (
    QBinning,
    ReductionPlan,
    SectorProfile,
    between_spots_sectors,
    off_pixel_axes_sectors,
)

__all__ = ["AnalysisParameters", "CalibrationTable", "load_parameters"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
#: Plan name of the (003) profile between all families' spots (``sector_background``).
BETWEEN_SPOTS_003 = "lco_003_between_spots"


class CalibrationTable(BaseModel):
    """Piecewise-linear x(c) of one family through anchors (TOML: ``[calibration.<family>]``).

    c (Å) strictly increasing; x in [0, 1]. Outside the anchors' c range x is NaN (flag
    OUT_OF_RANGE), never clamped. ``c_err_angstrom`` / ``x_err``: standard uncertainty of
    each anchor, propagated into ``x_li_err`` (see `opmap.analysis.lattice.LiCalibration`).

    Examples
    --------
    >>> table = CalibrationTable(c_angstrom=(14.0, 14.13, 14.32), x_li=(1.0, 0.75, 0.5))
    >>> x, _ = table.x_li_from_c(np.array([14.065, 14.5]))
    >>> print(np.round(x, 3))
    [0.875   nan]
    """

    model_config = _FROZEN
    c_angstrom: tuple[float, ...] = Field(min_length=2)
    x_li: tuple[float, ...] = Field(min_length=2)
    c_err_angstrom: float = Field(default=0.0, ge=0.0, le=1.0)
    x_err: float = Field(default=0.0, ge=0.0, le=1.0)
    source: str = "calibration table of the analysis parameters"

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationTable:
        if len(self.c_angstrom) != len(self.x_li):
            raise ValueError(
                f"c_angstrom ({len(self.c_angstrom)}) and x_li ({len(self.x_li)}) "
                "must have the same length"
            )
        if np.any(np.diff(self.c_angstrom) <= 0):
            raise ValueError("c_angstrom must be strictly increasing")
        if not all(0.0 <= x <= 1.0 for x in self.x_li):
            raise ValueError(f"x_li must lie in [0, 1], got {self.x_li}")
        return self

    def to_calibration(self) -> LiCalibration:
        """The table as a `LiCalibration`."""
        return LiCalibration(
            c_angstrom=self.c_angstrom, x_li=self.x_li, c_err_angstrom=self.c_err_angstrom,
            x_err=self.x_err, source=self.source,
        )  # fmt: skip

    def x_li_from_c(
        self, c_angstrom: np.ndarray, c_err: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x and its standard uncertainty for c in Å (any shape); NaN outside the table."""
        return li_fraction_from_c(c_angstrom, c_err, calibration=self.to_calibration())


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
    presence_min_sigma : float
        A (003)/(110) peak is present when its net counts exceed the local background noise
        by this many standard deviations and it is centred in its window
        (`opmap.analysis.fitting.peak_significance`); else NaN, flag ABSENT.
    calibration : dict[str, CalibrationTable]
        x(c) table per family. Without one a family gets no x_Li (flag NO_CALIBRATION),
        except ``paper_calibration_family``.
    paper_calibration_family : str or None
        The LCO⊥ family: the paper's calibration lines (SI, Fig. S4; calibrated for LCO⊥
        only) give its x unless it has a table. Default ``"perp"`` (ignored when no family
        has that name; an explicit name must be a family); None: no paper calibration.
    front_family : str or None
        Family whose c maps give the front (default the first family).
    front_method : {"x_profile", "rich_fraction"}
        ``"x_profile"`` (default, the paper's): the front is where the x(z) profile of the
        per-pixel c crosses the midpoint between the two phases
        (`opmap.analysis.lattice.x_profile_front`). ``"rich_fraction"`` (opt-in): a
        two-Gaussian fit of every (003) profile gives a Li-rich area fraction, and the front is
        its 0.5 crossing (`opmap.analysis.lattice.biphasic_front`).
    front_min_step_angstrom, front_min_step_sigma : float
        ``"x_profile"``: smallest c step between the phases (Å) and its significance.
    front_min_side_rows, front_side_sigma : int, float
        ``"x_profile"``: a front needs this many rows on each side of the midpoint crossing,
        each this many standard errors of its row mean beyond the midpoint (default 1, 3).
    rich_c_angstrom, poor_c_angstrom : float
        ``"rich_fraction"`` only: c of the Li-rich and Li-poor phases (Å), default the
        paper's LCO⊥ values (main text, Fig. 2d: 14.0 and 14.13 Å).
    fix_phase_positions : bool
        ``"rich_fraction"`` only: hold both (003) positions at those c (default; free
        positions split a single Li-poor peak into two). The Li-poor phase is out of
        equilibrium (its c drifts), so held positions bias the fraction: one reason this
        method is not the default.
    front_time_window_s : (float, float) or None
        Only maps with ``time_s`` inside enter the front speed fit (None: the longest run of
        consecutive maps with a front, i.e. the biphasic stage).
    front_cathode_z_um : (float, float) or None
        Cathode rows (µm) used for the front; fronts outside are rejected (None: all rows).
    front_contrast : float
        A front needs the column-mean Li-rich fraction (``"rich_fraction"``), or the profile
        of a map showing both phases (``"x_profile"``, first pass), to reach 0.5 ± this of
        its step inside the cathode, in [0, 0.5).
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
    ti_background : {"q_line", "band"}
        What the Ti position is found on. ``"q_line"`` (default): the Ti reflection's own
        peak in its q profile (``reference:<ti_band>``, ±0.03 Å⁻¹), above a straight
        background through the profile's end bins (`opmap.analysis.phases.
        peak_above_background`): the layer below (LiPON in the pristine map) scatters a
        smooth halo into the band, a step that pulled the band's centroid down by 0.3 µm.
        ``"band"``: the band's mean intensity, background included.
    ti_min_significance : float
        A column has a Ti position only where its largest Ti value stands this many σ of
        the map's frame-to-frame noise above its background
        (`opmap.analysis.phases.ti_flags`; default 5, a detection threshold: a column of
        noise passes with a probability of ~1.5e-3 in an 8 × 5 map, far less in larger
        ones): a map whose z range holds no Ti gives NaN (``ti_flag`` ABSENT), not the
        centroid of its noise. 0: any maximum above its background.
    layer_max_fwhm_um : float or None
        The width test of the Ti and the stack bands (`opmap.analysis.phases.ti_flags`,
        ``max_fwhm_um``): a column shows a layer only where its maximum, above the
        column's lower level just beyond this width, falls to half within this full
        width (µm; never below 3 rows). Default 3: the paper's 0.5 µm Ti and ~1 µm Au
        seen by its 1 µm beam, with room for a blurred beam or a tilted layer. The
        cathode's (006) scattering into the Au (111) band is a broad maximum many σ
        above its flanks: without the test it gave a Li thickness cross-check made of
        cathode. None: no width test.
    ti_method : {"centroid", "centroid_line", "gaussian"}
        Ti position estimator (`opmap.analysis.phases.ti_position`). ``"centroid_line"``
        (opt-in, compared on the twin): the centroid over a straight baseline through the
        window's ends; on validate_twin (49 × 49, 4 × 4) it gives Li thickness within
        0.05 µm where the default centroid gives 0.17 µm, but it loses the tails of a Ti
        profile wider than the window.
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
    grain_false_spots_per_map : float or None
        Noise floor of the Li spots (not in the paper; a statistical guard for detectors
        with few counts per bin): a spot voxel must also exceed the upper Poisson quantile
        of its background, set so that noise alone gives this many spot voxels per map on
        average (default 0.5). It matters on the unbinned Eiger, where one photon exceeds
        k × the mean; on the binned readout k × the mean lies above it. None: no floor.
    grain_background_chi_step : int
        Azimuth stride of the median background of the Li window.
    link_tol_x_um, link_tol_z_um, link_tol_chi_deg : float
        Floors of the linking tolerances between consecutive maps: the scatter of a grain
        that did not move (16.5 µm, half a 33 µm column; 2 µm; 1°, one χ bin).
    link_rotation_deg_per_min, link_drift_um_per_min : float
        Largest rotation rate (azimuth change) and drift speed of a grain; the tolerances
        grow by rate × the time between maps (`opmap.analysis.grains.link_grains`;
        defaults 1 deg/min and 2 µm/min: the paper's grains rotate within minutes).
    link_max_move_um : float
        Largest move of a grain's centre between maps however long apart (µm, default 5:
        a grain's width, the paper's coherent domains > 5 µm); the drift tolerance stops
        growing there, so 30-min gaps do not link a dying grain to a new neighbour.
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
    distance_azimuths : {"off_pixel_axes", "full_ring"}
        Where on the reference rings the peaks are measured. "off_pixel_axes" (default): the
        azimuths more than ``distance_axis_margin_deg`` away from the pixel rows and columns
        (`opmap.analysis.reduction.off_pixel_axes_sectors`). Along the axes every pixel sees
        the ring at one radial phase, so a peak narrower than a pixel reads up to half a
        pixel off: a Ti (100) spot at 90° put the offset 46 µm off on 300 µm (4 × 4-binned)
        pixels, 5 µm on 150 µm, 0.1 µm on the Eiger's 75 µm (docs/analysis-products.md).
        "full_ring": the whole ring (the Ti band's own profile); more counts, and
        unbiased only where the pixels are small beside the peak, or for a ring whose
        texture puts its spots on the axes only.
    distance_axis_margin_deg : float
        Half-width (degrees) of the wedge around each pixel axis that "off_pixel_axes"
        leaves out (default 15; 0 < margin < 45).
    sector_background : {"linear", "between_spots"}
        Background under the (003) peak of each family's sectors. "linear" (default, the
        paper's): the Gaussian's own linear background. "between_spots" (opt-in, not in
        the paper): first subtract the mean (003) profile of the azimuths between all the
        families' spots (`opmap.analysis.reduction.between_spots_sectors`), which holds
        the ring's untextured (powder) part and the diffuse background. The powder ring of
        the other family lies ~0.02 Å⁻¹ from a family's peak and, smeared by binned
        pixels, pulls it; validated on the twin only (docs/analysis-products.md). It
        assumes the powder part is the same at every azimuth (no shadow, no absorption
        change around the ring).
    between_spots_guard_deg : float
        Gap (degrees) kept between the "between_spots" azimuths and every family's sector
        (default 5; 0 ≤ guard < 90).
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
    presence_min_sigma: float = Field(default=5.0, gt=0.0, le=1000.0)
    calibration: dict[str, CalibrationTable] = Field(default_factory=dict)
    paper_calibration_family: str | None = "perp"
    front_family: str | None = None
    front_method: Literal["x_profile", "rich_fraction"] = "x_profile"
    front_min_step_angstrom: float = Field(default=0.02, gt=0.0, lt=1.0)
    front_min_step_sigma: float = Field(default=5.0, gt=0.0, le=1000.0)
    front_min_side_rows: int = Field(default=1, ge=1, le=100)
    front_side_sigma: float = Field(default=3.0, gt=0.0, le=1000.0)
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
    ti_background: Literal["q_line", "band"] = "q_line"
    ti_min_significance: float = Field(default=5.0, ge=0.0, le=1000.0)
    layer_max_fwhm_um: float | None = Field(default=3.0, gt=0.0, le=1000.0)
    ti_method: Literal["centroid", "centroid_line", "gaussian"] = "centroid"
    reference_map: int = Field(default=0, ge=0)
    phase_percentiles: tuple[float, float] = (1.0, 99.5)
    grain_k: float = Field(default=10.0, gt=0.0, le=1000.0)
    grain_min_voxels: int = Field(default=1, ge=1, le=1000)
    grain_split_chi_tol_deg: float | None = Field(default=None, ge=0.0, le=180.0)
    grain_background_chi_step: int = Field(default=4, ge=1, le=45)
    grain_false_spots_per_map: float | None = Field(default=0.5, gt=0.0, lt=1000.0)
    link_tol_x_um: float = Field(default=16.5, gt=0.0)
    link_tol_z_um: float = Field(default=2.0, gt=0.0)
    link_tol_chi_deg: float = Field(default=1.0, gt=0.0, le=180.0)
    link_rotation_deg_per_min: float = Field(default=1.0, ge=0.0, le=360.0)
    link_drift_um_per_min: float = Field(default=2.0, ge=0.0, le=1000.0)
    link_max_move_um: float = Field(default=5.0, ge=0.0, le=1000.0)
    grain_sensitivity_k: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 15.0)
    grain_sensitivity_link_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    distance_correction: Literal["linear_x", "constant", "plane", "off"] = "linear_x"
    distance_references: tuple[str, ...] = ("ti_100",)
    distance_azimuths: Literal["off_pixel_axes", "full_ring"] = "off_pixel_axes"
    distance_axis_margin_deg: float = Field(default=15.0, gt=0.0, lt=45.0)
    sector_background: Literal["linear", "between_spots"] = "linear"
    between_spots_guard_deg: float = Field(default=5.0, ge=0.0, lt=90.0)
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
        paper = self.paper_calibration_family
        explicit = "paper_calibration_family" in self.model_fields_set
        if paper is not None and explicit and paper not in names:
            raise ValueError(f"paper_calibration_family {paper!r} must be one of {names}")
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
        if self.sector_background == "between_spots":
            self._between_spots_sectors()  # some azimuths are left between the spots
        if self.ti_background == "q_line" and self.ti_band not in REFERENCE_D_ANGSTROM:
            raise ValueError(
                f"ti_background 'q_line' needs a ti_band with a reference reflection "
                f"({sorted(REFERENCE_D_ANGSTROM)}), got {self.ti_band!r}: use 'band'"
            )
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
            max_move_um=self.link_max_move_um,
        )  # fmt: skip

    @property
    def front_family_name(self) -> str:
        """The family whose c maps (or Li-rich fraction) give the front."""
        return self.front_family or self.families.family[0].name

    def reference_profile_names(self) -> tuple[str, ...]:
        """Reference reflections whose full-ring q profiles the analysis needs (distance, Ti)."""
        full_ring = self.distance_correction != "off" and self.distance_azimuths == "full_ring"
        names = list(self.distance_references) if full_ring else []
        if self.ti_background == "q_line" and self.ti_band not in names:
            names.append(self.ti_band)
        return tuple(names)

    def distance_profile_key(self, name: str) -> str:
        """The key of reference ``name``'s profile in the reduced frames (distance correction)."""
        if self.distance_azimuths == "full_ring":
            return f"reference:{name}"
        return f"sectors:{_distance_sector_name(name)}"

    def distance_sector_profiles(self) -> dict[str, SectorProfile]:
        """The distance correction's reference profiles away from the pixel axes, if used."""
        if self.distance_correction == "off" or self.distance_azimuths == "full_ring":
            return {}
        sectors = off_pixel_axes_sectors(self.distance_axis_margin_deg)
        return {
            _distance_sector_name(name): SectorProfile(
                **dict(_reference_binning(name)), sectors=sectors
            )
            for name in self.distance_references
        }

    def between_spots_profile(self, binning: QBinning) -> SectorProfile:
        """The (003) profile between all families' spots ("between_spots" background).

        Raises
        ------
        ValueError
            When no azimuth is left between the sectors widened by the guard.
        """
        return SectorProfile(**dict(binning), sectors=self._between_spots_sectors())

    def _between_spots_sectors(self) -> tuple[ChiSector, ...]:
        try:
            return between_spots_sectors(self.families, "003", self.between_spots_guard_deg)
        except ValueError as error:
            raise ValueError(f"between_spots_guard_deg: {error}") from None

    def sector_background_key(self) -> str | None:
        """The reduced profile subtracted from every family's (003) profile, if any."""
        if self.sector_background == "between_spots":
            return f"sectors:{BETWEEN_SPOTS_003}"
        return None

    def reduction_plan(self, **options: Any) -> ReductionPlan:
        """The reduction plan these parameters need (``options`` go to `ReductionPlan`)."""
        if self.reference_profile_names() and "reference_profiles" not in options:
            options["reference_profiles"] = {
                name: _reference_binning(name) for name in self.reference_profile_names()
            }
        if "sector_profiles" not in options:
            options["sector_profiles"] = self.distance_sector_profiles()
        plan = ReductionPlan(families=self.families, **options)
        if self.sector_background == "between_spots":
            between = {BETWEEN_SPOTS_003: self.between_spots_profile(plan.profile_003)}
            options["sector_profiles"] = {**plan.sector_profiles, **between}
            plan = ReductionPlan(families=self.families, **options)
        for name in (self.ti_band, *self.stack_bands):
            if name not in plan.bands:
                raise ValueError(
                    f"ti_band / stack_bands name {name!r}, not a band of the plan: "
                    f"{list(plan.bands)}"
                )
        return plan

    def li_calibration(self, family: str) -> LiCalibration | None:
        """The x(c) calibration of ``family``: its table, the paper's lines, or None."""
        table = self.calibration.get(family)
        if table is not None:
            return table.to_calibration()
        if family == self.paper_calibration_family:
            return PAPER_CALIBRATION
        return None


def _distance_sector_name(name: str) -> str:
    """The plan's sector-profile name of reference ``name`` off the pixel axes."""
    return f"distance_{name}"


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
