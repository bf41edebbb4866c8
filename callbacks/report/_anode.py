"""Fig. 4 analogue: the plated Li anode.

Li thickness from the Ti displacement beside the electrochemistry (and the electrochemical
thickness when the areal charge is known), phase maps of Li, Ti, Au and parylene at the last
map, Li grain azimuths versus time, grain counts (total / new / deceased) and the grains'
lifetime classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opmap.analysis.products import Products
from opmap.callbacks.plots import map_extent, show_map

from ._cathode import MINUTE_S
from ._data import electrochemistry, map_times_s
from ._layout import Panel, count_axis, label_map_axes, map_axes, map_markers, skip

__all__ = ["PHASE_BANDS", "anode_panels"]

#: Phase-map bands shown, by the prefix of their ``phase_<band>`` name.
PHASE_BANDS = ("li", "ti", "au", "parylene")
_CLASS_NAMES = ("ephemeral", "unstable", "stable")


def anode_panels(products: Products, *, cell_area_cm2: float | None = None) -> list[Panel]:
    """Panels of the Fig. 4 analogue."""
    time_s = map_times_s(products)
    if time_s is None:
        return [skip("anode", "no time_s array")]
    return [
        thickness_panel(products, time_s, cell_area_cm2),
        phase_maps_panel(products),
        azimuth_panel(products, time_s),
        counts_panel(products, time_s),
        classes_panel(products),
    ]


def thickness_panel(products: Products, time_s: np.ndarray, cell_area_cm2: float | None) -> Panel:
    """Li thickness from Ti versus time; capacity (and electrochemical thickness) beside it."""
    title = "Li thickness from Ti"
    thickness = products.arrays.get("li_thickness_mean")
    if thickness is None:
        return skip(title, "no li_thickness_mean array")
    ec = electrochemistry(products, cell_area_cm2=cell_area_cm2)

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.plot(time_s / MINUTE_S, thickness.values, "o", label="Ti displacement")
        if ec is not None and ec.li_thickness_um is not None:
            ax.plot(ec.time_s / MINUTE_S, ec.li_thickness_um, "-", label="electrochemical")
        elif ec is not None and ec.capacity is not None:
            twin = ax.twinx()
            twin.plot(ec.time_s / MINUTE_S, ec.capacity, "-", color="C1", label="capacity")
            twin.set_ylabel(f"capacity ({ec.capacity_units})", color="C1")
        map_markers(ax, time_s, scale=MINUTE_S)
        ax.set(title=f"{title} (maps dotted)", xlabel="time (min)", ylabel="Li thickness (µm)")
        ax.legend(fontsize="small", loc="upper left")

    return Panel(title, draw)


def phase_maps_panel(products: Products) -> Panel:
    """Normalised phase intensity maps (Li, Ti, Au, parylene) of the last map."""
    title = "phase maps (last map)"
    names = [
        name
        for band in PHASE_BANDS
        for name in [next((n for n in products.arrays if n.startswith(f"phase_{band}")), None)]
        if name is not None
    ]
    if not names:
        return skip(title, f"no phase_<band> array for bands {PHASE_BANDS}")
    extent = map_extent(products)

    def draw(figure: Any, cell: Any) -> None:
        sub, axes = map_axes(figure, cell, len(names), title=title, extent=extent)
        for ax, name in zip(axes, names, strict=True):
            values = products.arrays[name].values[-1]
            image = show_map(ax, values, extent, vmin=0, vmax=1, cmap="magma")
            ax.set_title(name.removeprefix("phase_"), fontsize="small", loc="left")
        label_map_axes(sub, axes)
        sub.colorbar(image, ax=axes, label="normalised intensity", shrink=0.9)

    return Panel(title, draw)


def azimuth_panel(products: Products, time_s: np.ndarray) -> Panel:
    """Azimuth of every Li grain observation versus the time of its map."""
    title = "Li grain azimuths"
    grains = products.tables.get("grains", {})
    if "map_index" not in grains or "azimuth_deg" not in grains or not len(grains["map_index"]):
        return skip(title, "no grains table with map_index and azimuth_deg rows")
    maps = np.asarray(grains["map_index"], int)
    if maps.min() < 0 or maps.max() >= time_s.size:
        return skip(title, f"grain map_index outside the {time_s.size} maps")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.scatter(time_s[maps] / MINUTE_S, grains["azimuth_deg"], s=6, alpha=0.6)
        ax.set(title=title, xlabel="time (min)", ylabel="azimuth χ (deg)", ylim=(0, 360),
               yticks=np.arange(0, 361, 60))  # fmt: skip
        map_markers(ax, time_s, scale=MINUTE_S)

    return Panel(title, draw)


def counts_panel(products: Products, time_s: np.ndarray) -> Panel:
    """Grains in diffraction, new and deceased per map versus time."""
    title = "Li grain counts"
    keys = [k for k in ("grains_total", "grains_new", "grains_deceased") if k in products.arrays]
    if not keys:
        return skip(title, "no grains_total / grains_new / grains_deceased array")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        for key in keys:
            label = key.removeprefix("grains_")
            ax.plot(time_s / MINUTE_S, products.arrays[key].values, "o-", label=label)
        ax.set(title=title, xlabel="time (min)", ylabel="grains per map")
        count_axis(ax)
        map_markers(ax, time_s, scale=MINUTE_S)
        ax.legend(fontsize="small")

    return Panel(title, draw)


def classes_panel(products: Products) -> Panel:
    """Number of grain tracks per lifetime class (ephemeral / unstable / stable)."""
    title = "Li grain lifetime classes"
    tracks = products.tables.get("grain_tracks", {})
    if "grain_class" not in tracks:
        return skip(title, "no grain_tracks table with a grain_class column")
    names = products.metadata.get("grains", {}).get("class_names", _CLASS_NAMES)
    counts = np.bincount(np.asarray(tracks["grain_class"], int), minlength=len(names))
    stable_min = products.metadata.get("grains", {}).get("stable_min_maps")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.bar(list(names), counts[: len(names)], color=["C3", "C1", "C2"][: len(names)])
        note = "" if stable_min is None else f" (stable: ≥ {stable_min} maps)"
        ax.set(title=title + note, ylabel="grain tracks")
        count_axis(ax)

    return Panel(title, draw)
