"""Fig. 2 (charge) and Fig. 3 (discharge) analogues: the LiCoO2 cathode.

Fig. 2: electrochemistry with the map times marked, c maps of each family at up to four
charge maps, map-mean c and a per family versus time, and the biphasic front position with
its fitted speed. Fig. 3: map-mean c per family from the first discharge map on, the
potential over the same time, and the Li-rich phase fraction in the top layer of the cathode.
Charge maps are those with a positive mean current (``echem_current_a``); without a current
record every map counts as charge and Fig. 3 is skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opmap.analysis.products import Products
from opmap.callbacks.plots import map_extent, show_map

from ._data import (
    discharge_start,
    electrochemistry,
    families,
    map_current_a,
    map_mean,
    map_times_s,
    nanmean,
)
from ._layout import Panel, label_map_axes, map_axes, map_markers, skip

__all__ = ["MINUTE_S", "charge_panels", "discharge_panels"]

#: The report's time axes are in minutes of experiment time.
MINUTE_S = 60.0
_TIME_LABEL = "time (min)"


def charge_maps(products: Products) -> np.ndarray:
    """Indices of the charge maps (positive current), or of every map without a current."""
    n = 0 if "time_s" not in products.arrays else products.arrays["time_s"].values.size
    current = map_current_a(products)
    return np.arange(n) if current is None else np.flatnonzero(current > 0)


def selected_maps(indices: np.ndarray, count: int = 4) -> np.ndarray:
    """Up to ``count`` indices spread evenly over ``indices`` (first and last included)."""
    if indices.size == 0:
        return indices
    picks = np.unique(np.round(np.linspace(0, indices.size - 1, count)).astype(int))
    return indices[picks]


def charge_panels(products: Products, *, cell_area_cm2: float | None = None) -> list[Panel]:
    """Panels of the Fig. 2 analogue (charge)."""
    maps = charge_maps(products)
    time_s = map_times_s(products)
    if time_s is None or maps.size == 0:
        reason = "no time_s array" if time_s is None else "no charge map (current > 0)"
        return [skip("charge", reason)]
    panels = [echem_panel(products, time_s[maps], cell_area_cm2=cell_area_cm2)]
    picks = selected_maps(maps)
    panels += [c_maps_panel(products, f, picks) for f in families(products)] or [
        skip("c maps", "no c_<family> map")
    ]
    panels += [series_panel(products, prefix, maps) for prefix in ("c", "a")]
    panels.append(front_panel(products, maps))
    return panels


def echem_panel(
    products: Products, marks_s: np.ndarray, *, cell_area_cm2: float | None = None,
    span_s: tuple[float, float] | None = None, title: str = "electrochemistry",
) -> Panel:  # fmt: skip
    """Potential, current and capacity versus time (stacked), maps marked."""
    ec = electrochemistry(products, cell_area_cm2=cell_area_cm2)
    if ec is None:
        return skip(title, "no electrochemistry table and no echem_* arrays")
    scale_a = 1e6  # plot µA
    rows = [(name, values, label) for name, values, label in (
        ("potential", ec.potential_v, "potential (V)"),
        ("current", None if ec.current_a is None else ec.current_a * scale_a, "current (µA)"),
        ("capacity", ec.capacity, f"capacity ({ec.capacity_units})"),
    ) if values is not None]  # fmt: skip
    if not rows:
        return skip(title, "electrochemistry without potential, current or charge")
    keep = np.ones(ec.time_s.size, bool)
    if span_s is not None:
        keep = (ec.time_s >= span_s[0]) & (ec.time_s <= span_s[1])

    def draw(figure: Any, cell: Any) -> None:
        grid = cell.subgridspec(len(rows), 1, hspace=0.05)
        first = None
        for i, (_, values, label) in enumerate(rows):
            ax = figure.add_subplot(grid[i], sharex=first)
            first = first or ax
            style = "-" if ec.source == "table" else "o-"
            ax.plot(ec.time_s[keep] / MINUTE_S, values[keep], style)
            map_markers(ax, marks_s, scale=MINUTE_S)
            ax.set_ylabel(label)
            ax.label_outer()
        first.set_title(f"{title} (maps dotted)")
        ax.set_xlabel(_TIME_LABEL)

    return Panel(title, draw)


def c_maps_panel(products: Products, family: str, picks: np.ndarray) -> Panel:
    """c maps of one family at the selected maps, one colour scale."""
    title = f"c maps {family}"
    c = products.arrays[f"c_{family}"].values[picks]
    if not np.isfinite(c).any():
        return skip(title, f"c_{family} has no finite value in the selected maps")
    time_s = map_times_s(products)
    low, high = np.nanpercentile(c, [1, 99])
    extent = map_extent(products)

    def draw(figure: Any, cell: Any) -> None:
        sub, axes = map_axes(figure, cell, len(picks), title=title, extent=extent)
        for ax, index, values in zip(axes, picks, c, strict=True):
            image = show_map(ax, values, extent, vmin=low, vmax=high, cmap="viridis")
            ax.set_title(f"{time_s[index] / MINUTE_S:.3g} min", fontsize="small", loc="left")
        label_map_axes(sub, axes)
        bar = sub.colorbar(image, ax=axes, label="c (Å)", shrink=0.9)
        bar.formatter.set_useOffset(False)  # c in Å as read, not "+1.4e1" and offsets

    return Panel(title, draw)


def series_panel(products: Products, prefix: str, maps: np.ndarray, title: str = "") -> Panel:
    """Map-mean c or a (``prefix``) of every family versus time, over ``maps``."""
    title = title or f"mean {prefix} per family"
    names = [f for f in families(products) if f"{prefix}_{f}" in products.arrays]
    if not names:
        return skip(title, f"no {prefix}_<family> array")
    time_s = map_times_s(products)[maps] / MINUTE_S

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        for f in names:
            ax.plot(time_s, map_mean(products.arrays[f"{prefix}_{f}"].values[maps]), "o-", label=f)
        ax.set(title=title, xlabel=_TIME_LABEL, ylabel=f"{prefix} (Å)")
        ax.legend(fontsize="small")

    return Panel(title, draw)


def front_panel(products: Products, maps: np.ndarray) -> Panel:
    """Biphasic front height versus time with the analysis' fitted speed."""
    title = "biphasic front"
    position = products.arrays.get("front_position")
    if position is None or not np.isfinite(position.values[maps]).any():
        return skip(title, "no finite front_position in the charge maps")
    time_s = map_times_s(products)[maps]
    z_um = position.values[maps]
    front = products.metadata.get("front", {})
    speed = front.get("speed_nm_per_s")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.plot(time_s / MINUTE_S, z_um, "o", label="front height")
        if speed is not None and np.isfinite(speed):
            ok = np.isfinite(z_um)
            # The fitted line through the points' centroid with the analysis' slope.
            t0, z0 = time_s[ok].mean(), z_um[ok].mean()
            line = z0 + speed * 1e-3 * (time_s[ok] - t0)
            err = front.get("speed_err_nm_per_s", np.nan)
            ax.plot(time_s[ok] / MINUTE_S, line, "-", label=f"{speed:.2f} ± {err:.2f} nm/s")
        ax.set(title=title, xlabel=_TIME_LABEL, ylabel="z (µm)")
        ax.legend(fontsize="small")

    return Panel(title, draw)


def discharge_panels(
    products: Products, *, cathode_top_um: float = 20.0, top_layer_um: float = 5.0
) -> list[Panel]:
    """Panels of the Fig. 3 analogue (discharge and the rest after it)."""
    start = discharge_start(products)
    time_s = map_times_s(products)
    if start is None or time_s is None:
        return [skip("discharge", "no map with a negative echem_current_a")]
    maps = np.arange(start, time_s.size)
    span = (float(time_s[start] - MINUTE_S * 5), float(time_s[-1] + MINUTE_S * 5))
    return [
        series_panel(products, "c", maps, "mean c per family, discharge and rest"),
        echem_panel(products, time_s[maps], span_s=span, title="electrochemistry, discharge"),
        top_fraction_panel(products, maps, cathode_top_um, top_layer_um),
    ]


def top_fraction_panel(
    products: Products, maps: np.ndarray, cathode_top_um: float, top_layer_um: float
) -> Panel:
    """Li-rich phase fraction averaged over the top ``top_layer_um`` of the cathode."""
    title = f"Li-rich fraction, top {top_layer_um:g} µm of the cathode"
    rich, z = products.arrays.get("rich_fraction"), products.coords.get("z")
    if rich is None or z is None:
        return skip(title, "no rich_fraction array or no z coordinate")
    rows = (z.values >= cathode_top_um - top_layer_um) & (z.values <= cathode_top_um)
    if not rows.any():
        return skip(title, f"no map row in z {cathode_top_um - top_layer_um}–{cathode_top_um} µm")
    fraction = nanmean(rich.values[maps][:, rows, :], axis=(1, 2))
    time_s = map_times_s(products)[maps]

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.plot(time_s / MINUTE_S, fraction, "o-")
        ax.set(title=title, xlabel=_TIME_LABEL, ylabel="Li-rich fraction", ylim=(-0.02, 1.02))

    return Panel(title, draw)
