"""Pair recovered products with the twin's ground truth (``truth_*`` arrays of a rehearsal).

Truth names accepted (the live analysis stores the start document's ``twin_truth`` entries
as ``truth_<name>``; both the product names and the twin's ``MapTruth.to_dict`` names work):

==================  =========================================================
recovered           truth
==================  =========================================================
``c_<f>``           ``truth_c_<f>`` or ``truth_<f>_c_angstrom`` (map, z, x)
``a_<f>``           ``truth_a_<f>`` or ``truth_<f>_a_angstrom`` (map, z, x)
``x_li_<f>``        ``truth_x_li_<f>`` or ``truth_x_li`` (map, z, x)
``front_position``  ``truth_front_position`` (map,): z of the twin's phase boundary
``front speed``     ``truth_front_speed`` (map,): dz/dt of the twin's boundary (its
                    kinematics), averaged over the maps compared; else the straight-line
                    fit of ``truth_front_position`` over those maps
``grains_*``        ``truth_grains_total`` / ``_new`` / ``_deceased`` (map,), else counted
                    from a ``truth_grains`` table (``map_index``, ``grain_id``,
                    optional boolean ``grain_visible``; new = not seen in the
                    previous map, as the analysis links consecutive maps only)
``li_thickness``    ``truth_li_thickness_mean`` (map,), ``truth_li_thickness_um`` or
                    ``truth_li_thickness`` (map, x; averaged over x)
==================  =========================================================

No truth is ever computed with the analysis's own methods: the front truth is the twin's
boundary, never `biphasic_front` run on the twin's Li-rich fraction.

Coverage (`Pair.coverage`): the share of the entries whose truth is finite (cathode pixels,
maps with a boundary, ...) where the recovered value is finite too; for (map, z, x) arrays
the worst map's share.

x_Li coverage is measured over the pixels where the method can give x: the twin's *true* c
of the family (``truth_c_<f>``) inside the calibrated range the analysis used (metadata
``x_li_c_range_angstrom``; the paper's 14.03–14.43 Å for LCO⊥). There the paper's method
must give NaN (never a clamped value), so a finite-x share over all cathode pixels would
grade the calibration's range, not the analysis. `Pair.excluded` is the share of the truth's
pixels (all maps) left out that way, reported beside the coverage so that 100 % is not read
as "all pixels". Without the range in the metadata (older products) or a true c, x_Li
coverage counts every pixel with a finite truth (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from opmap.analysis.lattice import front_velocity
from opmap.analysis.products import Products

from ._data import labelled, map_mean, map_times_s, nanmean

__all__ = [
    "Pair",
    "front_pairs",
    "grain_pairs",
    "has_truth",
    "lattice_pair",
    "thickness_pair",
    "x_li_z_pair",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """Recovered values and truth of one quantity, same shape, NaN where either is unknown.

    ``coverage``: share of the entries with a finite truth where the recovered value is
    finite (worst map for (map, ...) arrays of more than one dimension); ``n_maps``: maps
    that went into a per-experiment figure (the front speed), else 0; ``excluded``: share of
    the truth's entries left out of the coverage because the method must give NaN there
    (x_Li: true c outside the calibrated range), else 0.
    """

    recovered: np.ndarray
    truth: np.ndarray
    units: str
    coverage: float = 1.0
    n_maps: int = 0
    excluded: float = 0.0

    @classmethod
    def masked(cls, recovered: np.ndarray, truth: np.ndarray, units: str) -> Pair:
        """Pair with NaN wherever one side is not finite, so means compare like with like."""
        r, t = np.asarray(recovered, float), np.asarray(truth, float)
        both = np.isfinite(r) & np.isfinite(t)
        return cls(np.where(both, r, np.nan), np.where(both, t, np.nan), units, _coverage(r, t))

    @property
    def n(self) -> int:
        """Number of entries known on both sides."""
        return int(np.isfinite(self.recovered).sum())


def _coverage(recovered: np.ndarray, truth: np.ndarray) -> float:
    known = np.isfinite(truth)
    found = known & np.isfinite(recovered)
    if known.ndim <= 1:
        return float(found.sum() / known.sum()) if known.any() else float("nan")
    axes = tuple(range(1, known.ndim))
    per_map = known.sum(axis=axes)
    shares = found.sum(axis=axes)[per_map > 0] / per_map[per_map > 0]
    return float(shares.min()) if shares.size else float("nan")


def has_truth(products: Products) -> bool:
    """True when the products carry any ground truth (a rehearsal)."""
    return any(n.startswith("truth_") for n in products.arrays) or any(
        n.startswith("truth_") for n in products.tables
    )


def lattice_pair(products: Products, prefix: str, family: str) -> Pair | None:
    """c, a or x_Li (``prefix`` ``"c"``, ``"a"``, ``"x_li"``) of one family with its truth."""
    recovered = products.arrays.get(f"{prefix}_{family}")
    candidates = {
        "c": (f"truth_c_{family}", f"truth_{family}_c_angstrom"),
        "a": (f"truth_a_{family}", f"truth_{family}_a_angstrom"),
        "x_li": (f"truth_x_li_{family}", "truth_x_li"),
    }[prefix]
    truth = labelled(products, *candidates)
    if recovered is None or truth is None or truth.values.shape != recovered.values.shape:
        return None
    pair = Pair.masked(recovered.values, truth.values, recovered.units)
    domain = _x_li_domain(products, family, truth.values) if prefix == "x_li" else None
    if domain is None:
        return pair
    truth_values = np.asarray(truth.values, float)
    known = np.isfinite(truth_values)
    scored = np.where(domain, truth_values, np.nan)
    excluded = float((known & ~domain).sum() / known.sum()) if known.any() else float("nan")
    coverage = _coverage(np.asarray(recovered.values, float), scored)
    return Pair(pair.recovered, pair.truth, pair.units, coverage, excluded=excluded)


def x_li_z_pair(products: Products, family: str, x_pair: Pair | None) -> Pair | None:
    """x_Li's error in units of its own stated uncertainty: ``(x − x_true) / x_li_err``.

    ``recovered`` is that ratio, ``truth`` is 0, over the same pixels as the x_Li figure
    (true c inside the calibrated range). It grades the uncertainty the analysis states
    (the paper's calibration and its transfer to the film, plus the fitted c), not x itself:
    a stated standard uncertainty that holds leaves ~5 % of the pixels beyond 2. None without
    an ``x_li_err_<family>`` product or an x_Li pair (``x_pair``, `lattice_pair`'s
    ``"x_li"`` pair of the family).
    """
    err = products.arrays.get(f"x_li_err_{family}")
    if x_pair is None or err is None or err.values.shape != x_pair.recovered.shape:
        return None
    sigma = np.asarray(err.values, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, (x_pair.recovered - x_pair.truth) / sigma, np.nan)
    zero = np.where(np.isfinite(z), 0.0, np.nan)
    return Pair(z, zero, "", x_pair.coverage, excluded=x_pair.excluded)


def _x_li_domain(products: Products, family: str, truth_x: np.ndarray) -> np.ndarray | None:
    """Pixels whose true c lies inside the family's calibrated range, or None (unknown)."""
    c_range = products.metadata.get("x_li_c_range_angstrom", {}).get(family)
    true_c = labelled(products, f"truth_c_{family}", f"truth_{family}_c_angstrom")
    if c_range is None or true_c is None or true_c.values.shape != np.shape(truth_x):
        logger.info(
            "report table: x_Li %s coverage over all pixels (no calibrated range in the "
            "metadata or no true c)",
            family,
        )
        return None
    c = np.asarray(true_c.values, float)
    with np.errstate(invalid="ignore"):
        return (c >= float(c_range[0])) & (c <= float(c_range[1]))


def front_pairs(products: Products) -> tuple[Pair, Pair] | None:
    """(front position per map in µm, front speed in nm/s) with the twin's truth.

    The recovered speed is the analysis's (its metadata, else a straight-line fit of its
    positions against ``front_time``, when the beam crossed the front, or the map times)
    over the maps it used (`_front_used`: its ``front_used`` product, else every finite
    position inside ``front_time_window_s`` when one was set). The true speed is the
    twin's boundary speed averaged over the time those maps span (its displacement between
    the first and last of them, as scanned: ``truth_front_position`` at
    ``truth_front_time``), else its kinematic
    ``truth_front_speed`` averaged over the same maps.
    """
    position = products.arrays.get("front_position")
    time_s = _array(products, "front_time")
    time_s = map_times_s(products) if time_s is None else time_s
    truth = products.arrays.get("truth_front_position")
    if position is None or time_s is None or truth is None:
        return None
    truth_um = np.asarray(truth.values, float)
    used = _front_used(products, time_s) & np.isfinite(truth_um)
    speed = products.metadata.get("front", {}).get("speed_nm_per_s")
    if speed is None:
        speed, _ = front_velocity(time_s, np.where(used, position.values, np.nan))
    positions = Pair.masked(position.values, truth_um, "um")
    speeds = Pair.masked(np.array([float(speed)]), np.array([_truth_speed(products, used)]),
                         "nm/s")  # fmt: skip
    speeds = Pair(speeds.recovered, speeds.truth, "nm/s", positions.coverage, int(used.sum()))
    return positions, speeds


def _front_used(products: Products, time_s: np.ndarray) -> np.ndarray:
    """Maps of the analysis's speed fit: its ``front_used`` product, else every map with a
    recovered front (inside ``front_time_window_s`` when one was set).

    A series can hold fronts of two stages (charge and discharge, the Li-rich phase on
    opposite sides): the speed is one stage's, so is its truth.
    """
    flagged = _array(products, "front_used")
    if flagged is not None:
        return flagged.astype(bool)
    used = np.isfinite(np.asarray(products.arrays["front_position"].values, float))
    window = products.metadata.get("analysis_parameters", {}).get("front_time_window_s")
    if window is not None:
        used &= (time_s >= window[0]) & (time_s <= window[1])
    return used


def _array(products: Products, name: str) -> np.ndarray | None:
    array = products.arrays.get(name)
    return None if array is None else np.asarray(array.values, dtype=float)


def _truth_speed(products: Products, used: np.ndarray) -> float:
    """Time average of the twin's boundary speed over the maps used (nm/s)."""
    z_um, t_s = _array(products, "truth_front_position"), _array(products, "truth_front_time")
    if z_um is not None and t_s is not None:
        span = np.flatnonzero(used & np.isfinite(z_um) & np.isfinite(t_s))
        if span.size >= 2 and t_s[span[-1]] > t_s[span[0]]:
            first, last = span[0], span[-1]
            return float(1e3 * (z_um[last] - z_um[first]) / (t_s[last] - t_s[first]))
    kinematic = products.arrays.get("truth_front_speed")
    if kinematic is not None and np.isfinite(kinematic.values[used]).any():
        return float(np.nanmean(np.asarray(kinematic.values, float)[used]))
    truth = np.asarray(products.arrays["truth_front_position"].values, float)
    speed, _ = front_velocity(map_times_s(products), np.where(used, truth, np.nan))
    return float(speed)


def grain_pairs(products: Products) -> dict[str, Pair]:
    """Grain counts per map (``"total"``, ``"new"``, ``"deceased"``) with their truth."""
    truth = _truth_counts(products)
    out = {}
    for kind in ("total", "new", "deceased"):
        recovered = products.arrays.get(f"grains_{kind}")
        if recovered is not None and kind in truth:
            out[kind] = Pair.masked(recovered.values, truth[kind], "")
    return out


def _truth_counts(products: Products) -> dict[str, np.ndarray]:
    arrays = {
        kind: np.asarray(products.arrays[f"truth_grains_{kind}"].values, float)
        for kind in ("total", "new", "deceased")
        if f"truth_grains_{kind}" in products.arrays
    }
    table = products.tables.get("truth_grains")
    time_s = map_times_s(products)
    if arrays or table is None or time_s is None:
        return arrays
    keep = np.asarray(table.get("grain_visible", np.ones(len(table["map_index"]))), bool)
    maps = np.asarray(table["map_index"], int)[keep]
    ids = np.asarray(table["grain_id"])[keep]
    seen = [set(ids[maps == m].tolist()) for m in range(time_s.size)]
    previous = [set(), *seen[:-1]]
    return {
        "total": np.array([len(s) for s in seen], float),
        "new": np.array([len(s - p) for p, s in zip(previous, seen, strict=True)], float),
        "deceased": np.array([len(p - s) for p, s in zip(previous, seen, strict=True)], float),
    }


def thickness_pair(products: Products) -> Pair | None:
    """Cell-mean plated Li thickness per map (µm) with its truth."""
    recovered = products.arrays.get("li_thickness_mean")
    truth = labelled(
        products, "truth_li_thickness_mean", "truth_li_thickness_um", "truth_li_thickness"
    )
    if recovered is None or truth is None:
        return None
    values = truth.values if truth.values.ndim == 1 else map_mean(truth.values)
    if values.shape != recovered.values.shape:
        return None
    return Pair.masked(recovered.values, values, "um")


def pair_mean(pair: Pair) -> tuple[float, float]:
    """Mean recovered and mean truth over the entries known on both sides."""
    return float(nanmean(pair.recovered)), float(nanmean(pair.truth))
