"""Pair recovered products with the twin's ground truth (``truth_*`` arrays of a rehearsal).

Truth names accepted (the live analysis stores the start document's ``twin_truth`` entries
as ``truth_<name>``; both the product names and the twin's ``MapTruth.to_dict`` names work):

==================  =========================================================
recovered           truth
==================  =========================================================
``c_<f>``           ``truth_c_<f>`` or ``truth_<f>_c_angstrom`` (map, z, x)
``a_<f>``           ``truth_a_<f>`` or ``truth_<f>_a_angstrom`` (map, z, x)
``x_li_<f>``        ``truth_x_li_<f>`` or ``truth_x_li`` (map, z, x)
``front_position``  ``truth_front_position`` (map,), else fitted to ``truth_rich_fraction``
``grains_*``        ``truth_grains_total`` / ``_new`` / ``_deceased`` (map,), else counted
                    from a ``truth_grains`` table (``map_index``, ``grain_id``,
                    optional boolean ``grain_visible``; new = not seen in the
                    previous map, as the analysis links consecutive maps only)
``li_thickness``    ``truth_li_thickness_mean`` (map,), ``truth_li_thickness_um`` or
                    ``truth_li_thickness`` (map, x; averaged over x)
==================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opmap.analysis.lattice import biphasic_front, front_velocity
from opmap.analysis.products import Products

from ._data import labelled, map_mean, map_times_s, nanmean

__all__ = ["Pair", "front_pairs", "grain_pairs", "has_truth", "lattice_pair", "thickness_pair"]


@dataclass(frozen=True)
class Pair:
    """Recovered values and truth of one quantity, same shape, NaN where either is unknown."""

    recovered: np.ndarray
    truth: np.ndarray
    units: str

    @classmethod
    def masked(cls, recovered: np.ndarray, truth: np.ndarray, units: str) -> Pair:
        """Pair with NaN wherever one side is not finite, so means compare like with like."""
        r, t = np.asarray(recovered, float), np.asarray(truth, float)
        both = np.isfinite(r) & np.isfinite(t)
        return cls(np.where(both, r, np.nan), np.where(both, t, np.nan), units)

    @property
    def n(self) -> int:
        """Number of entries known on both sides."""
        return int(np.isfinite(self.recovered).sum())


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
    return Pair.masked(recovered.values, truth.values, recovered.units)


def front_pairs(products: Products) -> tuple[Pair, Pair] | None:
    """(front position per map in µm, front speed in nm/s) with their truth.

    Both speeds are straight-line fits over the same maps: those the analysis used (finite
    recovered position, inside ``front_time_window_s`` when one was set).
    """
    position = products.arrays.get("front_position")
    time_s = map_times_s(products)
    truth = _truth_front_um(products, time_s)
    if position is None or time_s is None or truth is None:
        return None
    used = np.isfinite(position.values)
    window = products.metadata.get("analysis_parameters", {}).get("front_time_window_s")
    if window is not None:
        used &= (time_s >= window[0]) & (time_s <= window[1])
    speed = products.metadata.get("front", {}).get("speed_nm_per_s")
    if speed is None:
        speed, _ = front_velocity(time_s, np.where(used, position.values, np.nan))
    truth_speed, _ = front_velocity(time_s, np.where(used, truth, np.nan))
    speeds = Pair.masked(np.array([float(speed)]), np.array([truth_speed]), "nm/s")
    return Pair.masked(position.values, truth, "um"), speeds


def _truth_front_um(products: Products, time_s: np.ndarray | None) -> np.ndarray | None:
    direct = products.arrays.get("truth_front_position")
    if direct is not None:
        return np.asarray(direct.values, float)
    rich = products.arrays.get("truth_rich_fraction")
    z = products.coords.get("z")
    if rich is None or z is None or time_s is None or rich.values.ndim != 3:
        return None
    return biphasic_front(rich.values, z_um=z.values, time_s=time_s).position_um


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
