"""Read what the report needs out of `Products`: families, times, map means, cycling phases.

Every helper returns ``None`` (never a made-up value) when the products lack what it needs,
so the figure that asked can skip its panel and log why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from opmap.analysis.products import LabelledArray, Products

__all__ = [
    "MAP_ZX",
    "Electrochemistry",
    "discharge_start",
    "electrochemistry",
    "families",
    "map_current_a",
    "map_mean",
    "map_times_s",
    "nanmean",
]

MAP_ZX = ("map", "z", "x")
#: Faraday constant (C/mol) and molar volume of Li metal (cm³/mol = 6.941 g/mol / 0.534 g/cm³).
FARADAY_C_PER_MOL = 96485.33
LI_MOLAR_VOLUME_CM3 = 6.941 / 0.534


def nanmean(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Mean over finite entries; NaN (without a warning) where none is finite."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    counts = finite.sum(axis=axis)
    sums = np.where(finite, values, 0.0).sum(axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def map_mean(values: np.ndarray) -> np.ndarray:
    """Per-map mean of ``(n_map, ...)`` values over every other axis, shape ``(n_map,)``."""
    values = np.asarray(values, dtype=float)
    return nanmean(values.reshape(values.shape[0], -1), axis=1)


def families(products: Products) -> list[str]:
    """Orientation families with a c map (``c_<family>`` of dims ``("map", "z", "x")``),
    sorted by name: the order of arrays read back from a server is not the experiment's."""
    return sorted(
        name[2:]
        for name, array in products.arrays.items()
        if name.startswith("c_") and not name.startswith("c_err_") and array.dims == MAP_ZX
    )


def map_times_s(products: Products) -> np.ndarray | None:
    """Experiment time of each map (s), from the ``time_s`` array."""
    array = products.arrays.get("time_s")
    return None if array is None else np.asarray(array.values, dtype=float)


def map_current_a(products: Products) -> np.ndarray | None:
    """Mean cell current during each map (A, positive = charge), from ``echem_current_a``."""
    array = products.arrays.get("echem_current_a")
    return None if array is None else np.asarray(array.values, dtype=float)


def discharge_start(products: Products) -> int | None:
    """Index of the first map taken with a negative (discharge) current, or None."""
    current = map_current_a(products)
    if current is None:
        return None
    negative = np.flatnonzero(current < 0)
    return int(negative[0]) if negative.size else None


@dataclass(frozen=True)
class Electrochemistry:
    """Electrochemistry series for plotting; each field has shape ``(n,)`` or is None.

    ``source`` is ``"table"`` (the gapless potentiostat buffer) or ``"maps"`` (one value per
    map); ``capacity`` is in ``capacity_units`` (µAh from the charge in C, or mAh/cm²).
    """

    time_s: np.ndarray
    potential_v: np.ndarray | None
    current_a: np.ndarray | None
    capacity: np.ndarray | None
    capacity_units: str
    li_thickness_um: np.ndarray | None
    source: str


def electrochemistry(
    products: Products, *, cell_area_cm2: float | None = None
) -> Electrochemistry | None:
    """The potentiostat record: the ``electrochemistry`` table, else the per-map ``echem_*``.

    The electrochemical Li thickness t = Q / F · V_m / A (µm) is given when the areal charge
    is known: from ``charge_mah_per_cm2`` (1 mAh = 3.6 C), or from ``charge_c`` and
    ``cell_area_cm2``. 1.4 mAh/cm² → 6.79 µm.
    """
    columns = _echem_columns(products)
    if columns is None:
        return None
    time_s, get = columns
    capacity, units, areal_c = None, "", None
    if (mah_cm2 := get("charge_mah_per_cm2")) is not None:
        capacity, units, areal_c = mah_cm2, "mAh/cm²", mah_cm2 * 3.6
    elif (charge_c := get("charge_c")) is not None:
        capacity, units = charge_c * 1e3 / 3.6, "µAh"
        areal_c = None if cell_area_cm2 is None else charge_c / cell_area_cm2
    thickness = None
    if areal_c is not None:
        thickness = areal_c / FARADAY_C_PER_MOL * LI_MOLAR_VOLUME_CM3 * 1e4
    return Electrochemistry(
        time_s, get("potential_v"), get("current_a"), capacity, units, thickness,
        "table" if "electrochemistry" in products.tables else "maps",
    )  # fmt: skip


def _echem_columns(products: Products):
    table = products.tables.get("electrochemistry")
    if table is not None and "time_s" in table and len(table["time_s"]):
        order = np.argsort(np.asarray(table["time_s"], dtype=float), kind="stable")
        return np.asarray(table["time_s"], float)[order], _getter(table, order)
    time_s = map_times_s(products)
    per_map = {
        name.removeprefix("echem_"): array.values
        for name, array in products.arrays.items()
        if name.startswith("echem_")
    }
    if time_s is None or not per_map:
        return None
    return time_s, _getter(per_map, np.arange(time_s.size))


def _getter(columns: Mapping[str, np.ndarray], order: np.ndarray):
    def get(key: str) -> np.ndarray | None:
        values = columns.get(key)
        return None if values is None else np.asarray(values, dtype=float)[order]

    return get


def labelled(products: Products, *names: str) -> LabelledArray | None:
    """The first of ``names`` present among the arrays, or None."""
    return next((products.arrays[n] for n in names if n in products.arrays), None)
