"""Maps in time order → experiment products: series, front, Li thickness, linked grains."""

from __future__ import annotations

import datetime
import platform
from collections.abc import Mapping
from dataclasses import fields
from importlib import metadata as importlib_metadata
from types import MappingProxyType
from typing import Any

import numpy as np

from ..distance import sample_offset_um
from ..grains import (
    GrainTable,
    azimuth_histogram,
    grain_counts,
    grain_sensitivity,
    lifetime_classes,
    link_grains,
    texture_share,
)
from ..lattice import (
    ProfileFrontResult,
    biphasic_front,
    coverage,
    depth_profile,
    front_flag_legend,
    li_fraction_from_c,
    pixel_flag_legend,
    x_profile_front,
)
from ..phases import (
    TiFlag,
    li_thickness_from_ti,
    stack_displacement,
    stack_profile,
    ti_flag_legend,
    ti_flags,
)
from ..products import LabelledArray, Products
from ._layout import MapLayout
from ._map import MapResult
from ._params import AnalysisParameters

__all__ = ["ExperimentAnalysis"]

MAP_ZX = ("map", "z", "x")
#: Units guessed from the suffix of an electrochemistry key (names carry their units).
_SUFFIX_UNITS = {
    "_v": "V",
    "_a": "A",
    "_s": "s",
    "_c": "C",
    "_um": "um",
    "_mah_per_cm2": "mAh/cm2",
    "_mah": "mAh",
}


def _units_of(key: str) -> str:
    for suffix, units in sorted(_SUFFIX_UNITS.items(), key=lambda kv: -len(kv[0])):
        if key.endswith(suffix):
            return units
    return ""


def _column_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where a row has no finite value."""
    counts = np.isfinite(values).sum(axis=-1)
    total = np.nansum(values, axis=-1)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("opmap", "numpy", "scipy", "pyFAI", "h5py", "dask"):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _front_arrays(front) -> dict[str, LabelledArray]:
    return {
        "front_position": LabelledArray(
            front.position_um, ("map",), "um", "biphasic front height"
        ),
        "front_position_err": LabelledArray(
            front.position_err_um, ("map",), "um", "uncertainty of the front height"
        ),
        "front_width": LabelledArray(
            front.width_um, ("map",), "um", "10-90 % width of the biphasic interface"
        ),
        "front_used": LabelledArray(
            front.used.astype(np.uint8), ("map",), "", "1: map entered the front speed fit"
        ),
    }


def _profile_front_arrays(
    fronts: Mapping[str, ProfileFrontResult], family: str
) -> dict[str, LabelledArray]:
    """Plateaus and flags of the front family; the front position of every other family."""
    front = fronts[family]
    out = {
        f"front_c_{side}": LabelledArray(
            values, ("map",), "angstrom", f"c of the phase {side} the front, {family}"
        )
        for side, values in (("below", front.c_below_angstrom), ("above", front.c_above_angstrom))
    }
    out["front_flag"] = LabelledArray(
        front.flag, ("map",), "", "why a map has no front (FrontFlag; legend: front_flags)"
    )
    for other, result in fronts.items():
        if other != family:
            out[f"front_position_{other}"] = LabelledArray(
                result.position_um, ("map",), "um", f"biphasic front height from {other}"
            )
    return out


def _sampling_label(metadata: Mapping[str, Any]) -> str:
    if metadata.get("sampling_options") is None:
        return "off (default): (003) positions as fitted"
    return (
        "opt-in, applied: (003) positions corrected with sampling_correction, which models "
        "rings with a pixel bounding box, a Gaussian point spread and a Gaussian peak "
        "(validated only on frames rendered that way)"
    )


def _sector_background_label(params: AnalysisParameters) -> str:
    if params.sector_background_key() is None:
        return "linear (default, the paper's): the Gaussian's linear background"
    return (
        "opt-in, applied: the (003) profile between all families' spots (guard "
        f"{params.between_spots_guard_deg:g} deg) subtracted before the fit; not in the "
        "paper, assumes the untextured part of the ring is the same at every azimuth"
    )


class ExperimentAnalysis:
    """Accumulate `MapResult` objects in time order and build the experiment's `Products`.

    Parameters
    ----------
    layout : MapLayout
        Layout shared by every map.
    params : AnalysisParameters
        The parameters the maps were analysed with (recorded in the products' metadata).
    metadata : Mapping, optional
        Extra provenance (raw run uids, input files), JSON-serialisable.
    """

    def __init__(
        self,
        layout: MapLayout,
        params: AnalysisParameters,
        *,
        metadata: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        self.layout = layout
        self.params = params
        self.metadata = dict(metadata)
        self._maps: list[MapResult] = []
        self._electrochem: list[Mapping[str, float]] = []
        self._row_time_s: list[np.ndarray | None] = []

    @property
    def n_maps(self) -> int:
        """Number of maps added."""
        return len(self._maps)

    def add_map(
        self,
        result: MapResult,
        *,
        electrochem: Mapping[str, float] | None = None,
        row_time_s: np.ndarray | None = None,
    ) -> None:
        """Append one map (later than every map so far).

        Parameters
        ----------
        result : MapResult
            From `analyze_map` with this experiment's layout.
        electrochem : Mapping[str, float], optional
            Electrochemical state at the map (e.g. ``potential_v``, ``current_a``,
            ``charge_mah_per_cm2``); keys missing for some maps become NaN there.
        row_time_s : numpy.ndarray, optional
            Scan time of each row (s, (n_z,), `MapLayout.row_time_s` of the frames' times;
            NaN: unknown). The front moves while the map is scanned (~2 µm in a 4-min map at
            10 nm/s): with row times the front is dated when the beam crossed it, and its
            speed is fitted against those times (product ``front_time``); without them it is
            dated at the map's ``time_s``.

        Raises
        ------
        ValueError
            Out of time order, or arrays of another shape than the layout.
        """
        if row_time_s is not None:
            row_time_s = np.asarray(row_time_s, dtype=float)
            if row_time_s.shape != (self.layout.n_z,):
                raise ValueError(
                    f"row_time_s must have shape ({self.layout.n_z},), got {row_time_s.shape}"
                )
        if self._maps and not result.time_s > self._maps[-1].time_s:
            raise ValueError(
                f"maps must be added in time order: time_s {result.time_s} s is not after "
                f"{self._maps[-1].time_s} s"
            )
        shape = (self.layout.n_z, self.layout.n_x)
        got = next(iter(result.c_angstrom.values())).shape
        columns = (self.layout.n_x,)
        if got != shape or result.ti_z_um.shape != columns or result.ti_flag.shape != columns:
            raise ValueError(f"result has maps of shape {got}, layout needs {shape}")
        self._maps.append(result)
        self._electrochem.append(dict(electrochem or {}))
        self._row_time_s.append(row_time_s)

    # -- products -------------------------------------------------------------------------
    def products(self) -> Products:
        """All products of the maps added so far.

        Returns
        -------
        Products
            Arrays (dims ``("map", "z", "x")``, ``("map", "x")`` or ``("map",)``), the linked
            grain table and track table, and metadata (parameters, layout, front speed,
            software versions).

        Raises
        ------
        ValueError
            No map added yet, or ``params.reference_map`` beyond the maps added.
        """
        if not self._maps:
            raise ValueError("no map added: call add_map first")
        if self.params.reference_map >= self.n_maps:
            raise ValueError(
                f"reference_map {self.params.reference_map} must be < the {self.n_maps} maps"
            )
        time_s = np.array([m.time_s for m in self._maps])
        arrays: dict[str, LabelledArray] = {
            "time_s": LabelledArray(time_s, ("map",), "s", "experiment time at mid-map")
        }
        arrays.update(self._lattice_arrays())
        arrays.update(self._anode_arrays())
        arrays.update(self._distance_arrays())
        front_arrays, front_meta = self._front(time_s)
        arrays.update(front_arrays)
        grain_arrays, tables, grain_meta = self._grains()
        arrays.update(grain_arrays)
        arrays.update(self._electrochem_arrays())
        coords = {
            "map": LabelledArray(np.array([m.map_index for m in self._maps]), ("map",), ""),
            "z": LabelledArray(self.layout.z_um, ("z",), "um", "height above the cathode base"),
            "x": LabelledArray(self.layout.x_um, ("x",), "um", "position along the cell"),
            "azimuth": LabelledArray(
                grain_meta.pop("azimuth_centres_deg"), ("azimuth",), "deg", "bin centre"
            ),
        }
        meta = {
            **self.metadata,
            "analysis_parameters": self.params.model_dump(mode="json"),
            "layout": self.layout.describe(),
            "front": front_meta,
            "pixel_flags": pixel_flag_legend(),
            "ti_flags": ti_flag_legend(),
            "coverage": self._coverage_meta(),
            "x_li_calibration": self._calibration_meta(),
            "x_li_c_range_angstrom": self._calibration_ranges(),
            "sampling_correction": _sampling_label(self.metadata),
            "sector_background": _sector_background_label(self.params),
            "grains": grain_meta,
            "versions": _versions(),
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        meta.setdefault("opmap_version", meta["versions"]["opmap"])
        return Products(arrays=arrays, coords=coords, tables=tables, metadata=meta)

    def _stack(self, getter) -> np.ndarray:
        return np.stack([np.asarray(getter(m), float) for m in self._maps])

    def _lattice_arrays(self) -> dict[str, LabelledArray]:
        out: dict[str, LabelledArray] = {}
        first = self._maps[0]
        quantities = (
            ("c", "c_angstrom", "angstrom", "c lattice parameter"),
            ("c_err", "c_err_angstrom", "angstrom", "standard uncertainty of c"),
            ("a", "a_angstrom", "angstrom", "a lattice parameter"),
            ("a_err", "a_err_angstrom", "angstrom", "standard uncertainty of a"),
            ("x_li", "x_li", "", "x in LixCoO2 from c (NaN outside the calibration)"),
            ("x_li_err", "x_li_err", "", "standard uncertainty of x (c and calibration)"),
        )
        for prefix, attr, units, text in quantities:
            for family in getattr(first, attr):
                values = self._stack(lambda m, a=attr, f=family: getattr(m, a)[f])
                out[f"{prefix}_{family}"] = LabelledArray(
                    values, MAP_ZX, units, f"{text}, {family}"
                )
        out.update(self._flag_arrays())
        out.update(self._profile_arrays())
        if first.rich_fraction is not None:
            out["rich_fraction"] = LabelledArray(
                self._stack(lambda m: m.rich_fraction), MAP_ZX, "",
                f"Li-rich (003) area fraction, {self.params.front_family_name} (opt-in)",
            )  # fmt: skip
        for band in first.phases:
            out[f"phase_{band}"] = LabelledArray(
                self._stack(lambda m, b=band: m.phases[b]), MAP_ZX, "", f"normalised {band}"
            )
        return out

    def _cathode_rows(self) -> np.ndarray:
        bounds = self.params.front_cathode_z_um
        z = self.layout.z_um
        return np.ones(z.size, bool) if bounds is None else (z >= bounds[0]) & (z <= bounds[1])

    def _flag_arrays(self) -> dict[str, LabelledArray]:
        """``fit_flag_<product>`` (uint8 codes) and ``coverage_<product>`` per map."""
        out: dict[str, LabelledArray] = {}
        rows = self._cathode_rows()
        for name in self._maps[0].flags:
            flags = np.stack([m.flags[name] for m in self._maps]).astype(np.uint8)
            out[f"fit_flag_{name}"] = LabelledArray(
                flags, MAP_ZX, "", f"why {name} is NaN (codes: metadata pixel_flags)"
            )
            out[f"coverage_{name}"] = LabelledArray(
                coverage(flags, rows), ("map",), "",
                f"share of cathode pixels with a valid {name}",
            )  # fmt: skip
        return out

    def _profile_arrays(self) -> dict[str, LabelledArray]:
        """Depth profiles per family: mean c over x per row, and x of it (calibrated only)."""
        out: dict[str, LabelledArray] = {}
        for family in self._maps[0].c_angstrom:
            profile = depth_profile(self._stack(lambda m, f=family: m.c_angstrom[f]))
            out[f"profile_c_{family}"] = LabelledArray(
                profile, ("map", "z"), "angstrom", f"mean c over x per row, {family}"
            )
            calibration = self.params.li_calibration(family)
            if calibration is not None:
                x, _ = li_fraction_from_c(profile, calibration=calibration)
                out[f"profile_x_li_{family}"] = LabelledArray(
                    x, ("map", "z"), "", f"x(z) from the row-mean c, {family}"
                )
        return out

    def _coverage_meta(self) -> dict[str, Any]:
        bounds = self.params.front_cathode_z_um
        return {
            "definition": "share of the pixels in the cathode rows whose fit_flag is 0 (OK)",
            "cathode_z_um": None if bounds is None else list(bounds),
        }

    def _calibration_meta(self) -> dict[str, str]:
        out = {}
        for family in (f.name for f in self.params.families.family):
            calibration = self.params.li_calibration(family)
            out[family] = "none: no x_li" if calibration is None else calibration.source
        return out

    def _calibration_ranges(self) -> dict[str, list[float]]:
        """Calibrated c range (Å) of each family with x: outside it x_li is NaN by design."""
        out = {}
        for family in (f.name for f in self.params.families.family):
            calibration = self.params.li_calibration(family)
            if calibration is not None:
                out[family] = [float(c) for c in calibration.c_range_angstrom]
        return out

    def _anode_arrays(self) -> dict[str, LabelledArray]:
        ti_z = self._stack(lambda m: m.ti_z_um)
        p = self.params
        from_ti = li_thickness_from_ti(ti_z, reference_index=p.reference_map)
        from_au = self._stack_thickness()
        if p.li_thickness_method == "ti":
            thickness, how = from_ti, f"{p.ti_band} displacement (paper, Fig. 4b)"
        else:
            thickness, how = from_au, f"displacement of the stack {'+'.join(p.stack_bands)}"
        ti_flag = np.stack([m.ti_flag for m in self._maps]).astype(np.uint8)
        out = {
            "ti_z": LabelledArray(ti_z, ("map", "x"), "um", "Ti collector height"),
            "ti_flag": LabelledArray(
                ti_flag, ("map", "x"), "", "why ti_z is NaN (codes: metadata ti_flags)"
            ),
            "coverage_ti_z": LabelledArray(
                (ti_flag == 0).mean(axis=1), ("map",), "", "share of columns with a ti_z"
            ),
            "li_thickness": LabelledArray(
                thickness, ("map", "x"), "um", f"plated Li thickness ({how})"
            ),
            "li_thickness_mean": LabelledArray(
                _column_mean(thickness), ("map",), "um", f"mean plated Li thickness ({how})"
            ),
        }
        if from_au is not None:
            text = f"cross-check: Li thickness from the {'+'.join(p.stack_bands)} stack"
            out["li_thickness_au"] = LabelledArray(from_au, ("map", "x"), "um", text)
            out["li_thickness_au_mean"] = LabelledArray(
                _column_mean(from_au), ("map",), "um", f"{text}, mean over x"
            )
        return out

    def _distance_arrays(self) -> dict[str, LabelledArray]:
        """The fitted sample offset of the distance correction per pixel and map mean."""
        if any(m.distance_scale is None for m in self._maps):
            return {}
        offset = sample_offset_um(
            self._stack(lambda m: m.distance_scale),
            distance_m=self.params.sample_detector_distance_m,
        )
        text = (
            "sample offset along the beam from the reference peaks "
            f"({'+'.join(self.params.distance_references)}; > 0 towards the detector)"
        )
        mean = _column_mean(offset.reshape(offset.shape[0], -1))
        return {
            "sample_offset": LabelledArray(offset, MAP_ZX, "um", text),
            "sample_offset_mean": LabelledArray(mean, ("map",), "um", f"{text}, map mean"),
        }

    def _stack_thickness(self) -> np.ndarray | None:
        """Li thickness from the stack bands' displacement; None if a band is missing.

        NaN in a column where a stack band shows no layer bracketed by the map, in the map
        or in the reference map: the Ti's presence test (`ti_flags`,
        ``ti_min_significance``) on each band's intensity, so a map whose z range holds no
        Au has no cross-check made of noise either.
        """
        p = self.params
        if any(b not in self._maps[0].band_intensity for b in p.stack_bands):
            return None
        bands = {b: self._stack(lambda m, b=b: m.band_intensity[b]) for b in p.stack_bands}
        profile = stack_profile(bands)
        shift = stack_displacement(profile, profile[p.reference_map], z_um=self.layout.z_um)
        test = {"min_significance": p.ti_min_significance, "z_um": self.layout.z_um,
                "max_fwhm_um": p.layer_max_fwhm_um}  # fmt: skip
        flags = [ti_flags(v, **test) for v in bands.values()]
        shown = np.all([f == TiFlag.OK for f in flags], axis=0)
        return np.where(shown & shown[p.reference_map], shift, np.nan)

    def _front(self, time_s: np.ndarray) -> tuple[dict[str, LabelledArray], dict[str, Any]]:
        p = self.params
        family = p.front_family_name
        common = {
            "z_um": self.layout.z_um, "time_s": time_s, "cathode_z_um": p.front_cathode_z_um,
            "contrast": p.front_contrast, "time_window_s": p.front_time_window_s,
        }  # fmt: skip
        arrays: dict[str, LabelledArray] = {}
        by_family: dict[str, float] = {}
        extra: dict[str, Any] = {}
        if p.front_method == "rich_fraction":
            front = biphasic_front(self._stack(lambda m: m.rich_fraction), **common)
            how = (
                "opt-in: fixed-position two-phase (003) fit, Li-rich area fraction f(z) "
                "crosses 0.5 (biphasic_front)"
            )
        else:
            fronts = self._profile_fronts(common)
            front_time = self._front_time_s(fronts[family].position_um, time_s)
            if front_time is not None:  # the speed against the times the beam crossed it
                fronts = self._profile_fronts({**common, "time_s": front_time})
                arrays["front_time"] = LabelledArray(
                    front_time, ("map",), "s", "time the beam crossed the front (row scan time)"
                )
            front = fronts[family]
            how = (
                "paper (main text Fig. 2f, SI Fig. S4): x(z) profile of the per-pixel c, front "
                "where it crosses the midpoint between the two phases' fitted plateaus "
                "(x_profile_front)"
            )
            arrays.update(_profile_front_arrays(fronts, family))
            by_family = {f: r.velocity_nm_per_s for f, r in fronts.items()}
            extra = {
                "flags": front_flag_legend(),
                "rich_c_angstrom": front.rich_c_angstrom,
                "poor_c_angstrom": front.poor_c_angstrom,
                "rich_c_angstrom_by_family": {f: r.rich_c_angstrom for f, r in fronts.items()},
            }
        arrays.update(_front_arrays(front))
        meta = {
            "method": p.front_method,
            "method_description": how,
            "family": family,
            "speed_nm_per_s": front.velocity_nm_per_s,
            "speed_err_nm_per_s": front.velocity_err_nm_per_s,
            "maps_used": int(front.used.sum()),
            "front_time_window_s": list(front.time_window_s),
            "speed_nm_per_s_by_family": by_family,
            "sign": "dz/dt; negative = front moving down from the electrolyte side (charge)",
            **extra,
        }
        return arrays, meta

    def _front_time_s(self, position_um: np.ndarray, time_s: np.ndarray) -> np.ndarray | None:
        """Per map, the scan time of the rows at the front (s): row times interpolated at
        its height; the map's time where it has no front or no row times. None when no map
        has row times."""
        if all(rows is None for rows in self._row_time_s):
            return None
        out = np.array(time_s, dtype=float)
        for m, rows in enumerate(self._row_time_s):
            known = np.isfinite(rows) if rows is not None else np.zeros(0, bool)
            if rows is not None and known.sum() >= 2 and np.isfinite(position_um[m]):
                out[m] = np.interp(position_um[m], self.layout.z_um[known], rows[known])
        return out

    def _profile_fronts(self, common: Mapping[str, Any]) -> dict[str, ProfileFrontResult]:
        """The x(z) front of every family (the paper: the same speed for LCO⊥ and LCO∥)."""
        p = self.params
        return {
            family: x_profile_front(
                self._stack(lambda m, f=family: m.c_angstrom[f]),
                min_step_angstrom=p.front_min_step_angstrom,
                min_step_sigma=p.front_min_step_sigma,
                min_side_rows=p.front_min_side_rows,
                side_sigma=p.front_side_sigma,
                **common,
            )
            for family in self._maps[0].c_angstrom
        }

    def _grain_table(self, k: float | None = None) -> GrainTable:
        """Grains of all maps at the analysis threshold (None) or a sensitivity k."""
        names = [f.name for f in fields(GrainTable)]
        parts = [(m.grains if k is None else m.grain_sensitivity[k]).to_dict() for m in self._maps]
        return GrainTable(**{n: np.concatenate([p[n] for p in parts]) for n in names})

    def _map_time_s(self) -> np.ndarray | None:
        """Map times indexed by ``map_index`` when the maps are numbered 0, 1, … in order."""
        index = np.array([m.map_index for m in self._maps])
        if not np.array_equal(index, np.arange(index.size)):
            return None
        return np.array([m.time_s for m in self._maps])

    def _grain_sensitivity(self) -> dict[str, np.ndarray]:
        """Counts per map for the k × link-scale grid (`grain_sensitivity`), or {}."""
        p = self.params
        ks = [
            k for k in p.grain_sensitivity_k if all(k in m.grain_sensitivity for m in self._maps)
        ]
        if not ks:
            return {}
        return grain_sensitivity(
            {k: self._grain_table(k) for k in ks}, n_maps=self.n_maps,
            time_s=self._map_time_s(), link=p.link_tolerances(),
            link_scales=p.grain_sensitivity_link_scales,
        )  # fmt: skip

    def _grains(self):
        p = self.params
        n = self.n_maps
        table = link_grains(
            self._grain_table(), time_s=self._map_time_s(), **p.link_tolerances().as_kwargs()
        )
        counts = grain_counts(table, n_maps=n)
        stable_min = p.stable_min_maps if p.stable_min_maps is not None else n // 2 + 1
        life, cls = lifetime_classes(table, n_maps=n, stable_min_maps=max(2, stable_min))
        hist, edges = azimuth_histogram(table, n_maps=n, bin_width_deg=p.azimuth_bin_deg)
        share_a, share_b = texture_share(table, n_maps=n)
        arrays = {
            "grains_total": LabelledArray(counts.total, ("map",), "", "grains in diffraction"),
            "grains_new": LabelledArray(counts.new, ("map",), "", "grains first seen"),
            "grains_deceased": LabelledArray(counts.deceased, ("map",), "", "grains lost"),
            "grain_azimuth_histogram": LabelledArray(
                hist, ("map", "azimuth"), "", "grains per azimuth bin"
            ),
            "texture_share_burgers": LabelledArray(
                share_a, ("map",), "", "share of grains near 0/60/120/180 deg"
            ),
            "texture_share_shifted": LabelledArray(
                share_b, ("map",), "", "share of grains near 30/90/150 deg"
            ),
        }
        tracks = {
            "track_id": np.arange(life.size),
            "lifetime_maps": life,
            "grain_class": cls,
        }
        classes = np.bincount(cls, minlength=3) if cls.size else np.zeros(3, int)
        meta = {
            "azimuth_centres_deg": 0.5 * (edges[:-1] + edges[1:]),
            "class_names": ["ephemeral", "unstable", "stable"],
            "class_counts": classes.tolist(),
            "stable_min_maps": int(max(2, stable_min)),
        }
        tables = {"grains": table.to_dict(), "grain_tracks": tracks}
        sensitivity = self._grain_sensitivity()
        if sensitivity:
            tables["grain_sensitivity"] = sensitivity
        return arrays, tables, meta

    def _electrochem_arrays(self) -> dict[str, LabelledArray]:
        keys = sorted({k for e in self._electrochem for k in e})
        return {
            f"echem_{key}": LabelledArray(
                np.array([float(e.get(key, np.nan)) for e in self._electrochem]),
                ("map",),
                _units_of(key),
                f"electrochemistry: {key}",
            )
            for key in keys
        }
