"""Live figures of an operando experiment, redrawn after every analysed map.

:class:`LiveFigures` is a ``LiveAnalysis`` ``on_map`` hook. It draws, from the products so
far: the c map of each family (last map), the phase maps (last map), the electrochemistry
with a marker at each map, grain counts (total / new / deceased) vs time, Li grain azimuths vs
time, and the Li thickness from the Ti displacement vs the electrochemical one. With a display
the figure is a window updated in place; headless (or with ``figures_dir``) it is saved as
one PNG per map, ``<figures_dir>/<experiment>_map<NNNN>.png``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from opmap.analysis.products import Products

__all__ = ["MAX_MAP_ASPECT", "PANELS", "LiveFigures", "map_extent", "show_map", "z_exaggeration"]

#: Widest width/height a map panel is drawn at; beyond it z is exaggerated (and labelled so).
MAX_MAP_ASPECT = 4.0
_NICE_FACTORS = (1, 2, 5)

logger = logging.getLogger(__name__)

#: Titles of the panels, in drawing order (c maps come first, one per family).
PANELS = (
    "phase map",
    "electrochemistry",
    "grain counts",
    "Li grain azimuths",
    "Li thickness",
)


def _headless() -> bool:
    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")


class LiveFigures:
    """Draw the experiment's figures after each map.

    Parameters
    ----------
    figures_dir : path, optional
        Where PNGs go (created). Required when no display exists.
    show : bool, optional
        Open a window (default: when a display exists and no ``figures_dir`` is given).
    """

    def __init__(self, figures_dir: Path | str | None = None, *, show: bool | None = None):
        self.show = (not _headless() and figures_dir is None) if show is None else show
        if not self.show and figures_dir is None:
            raise ValueError("figures_dir is required without a display (show=False)")
        self.figures_dir = None if figures_dir is None else Path(figures_dir)
        if self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []
        self._figure: Any = None

    def __call__(self, products: Products, result: Any) -> None:
        """Redraw from ``products``; save the PNG of this map."""
        figure = self._draw(products)
        if self.figures_dir is not None:
            name = products.metadata.get("experiment_id", "experiment")
            path = self.figures_dir / f"{name}_map{int(result.map_index):04d}.png"
            figure.savefig(path, dpi=80)
            self.written.append(path)
        if self.show:
            figure.canvas.draw_idle()
            figure.canvas.flush_events()

    def _draw(self, products: Products) -> Any:
        arrays = products.arrays
        families = [n for n in arrays if n.startswith("c_") and arrays[n].dims[1:] == ("z", "x")]
        n_panels = len(families) + len(PANELS)
        size = (4 * 3, 3 * ((n_panels + 2) // 3))
        if not self.show:
            # a bare Figure (Agg canvas, no pyplot state): safe in a worker thread
            self._figure = Figure(figsize=size)
        elif self._figure is None:
            import matplotlib.pyplot as plt

            self._figure = plt.figure(figsize=size)
        figure = self._figure
        figure.clear()
        axes = figure.subplots((n_panels + 2) // 3, 3, squeeze=False).ravel()
        extent = map_extent(products)
        for ax, name in zip(axes, families, strict=False):
            image = show_map(ax, arrays[name].values[-1], extent)
            figure.colorbar(image, ax=ax, label="c (Å)")
            ax.set_title(f"c map {name[2:]}")
        time_s = arrays["time_s"].values if "time_s" in arrays else np.arange(1)
        panels = dict(zip(PANELS, axes[len(families) :], strict=False))
        phases = [n for n in arrays if n.startswith("phase_")]
        if phases:
            strongest = np.argmax(np.stack([arrays[n].values[-1] for n in phases]), axis=0)
            show_map(panels["phase map"], strongest, extent)
        panels["phase map"].set_title("phase map")
        _series(panels["electrochemistry"], arrays, time_s, "echem_potential_v", "o")
        panels["electrochemistry"].set(title="electrochemistry", xlabel="time (s)")
        for key in ("grains_total", "grains_new", "grains_deceased"):
            _series(panels["grain counts"], arrays, time_s, key, "-o")
        panels["grain counts"].legend(fontsize="small")
        panels["grain counts"].set(title="grain counts", xlabel="time (s)")
        grains = products.tables.get("grains", {})
        if "map_index" in grains and "azimuth_deg" in grains:
            maps = np.asarray(grains["map_index"], int)
            panels["Li grain azimuths"].scatter(time_s[np.clip(maps, 0, len(time_s) - 1)],
                                                grains["azimuth_deg"], s=4)  # fmt: skip
        panels["Li grain azimuths"].set(title="Li grain azimuths", xlabel="time (s)",
                                         ylabel="azimuth (deg)")  # fmt: skip
        _series(panels["Li thickness"], arrays, time_s, "li_thickness_mean", "-o")
        panels["Li thickness"].set(title="Li thickness", xlabel="time (s)", ylabel="µm")
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        figure.tight_layout()
        return figure


def map_extent(products: Products) -> list[float] | None:
    """The ``imshow`` extent of a (z, x) map in µm: pixel edges, not centres.

    Pixel centres are the coordinates; the edges lie half a step outside the first and
    last (a single row or column is given a width of 1 µm).

    Examples
    --------
    >>> from opmap.analysis.products import LabelledArray
    >>> p = Products(coords={"z": LabelledArray(np.array([0.0, 1.0]), ("z",), "um"),
    ...                      "x": LabelledArray(np.array([0.0, 33.0, 66.0]), ("x",), "um")})
    >>> map_extent(p)
    [-16.5, 82.5, -0.5, 1.5]
    """
    coords = products.coords
    if "x" in coords and "z" in coords:
        return [*_edges(coords["x"].values), *_edges(coords["z"].values)]
    return None


def _edges(centres: np.ndarray) -> tuple[float, float]:
    step = (
        float(np.abs(centres[-1] - centres[0]) / (centres.size - 1)) if centres.size > 1 else 1.0
    )
    return float(centres[0]) - step / 2, float(centres[-1]) + step / 2


def z_exaggeration(extent: list[float] | None, *, max_aspect: float = MAX_MAP_ASPECT) -> float:
    """The smallest of 1, 2, 5, 10, 20, ... that brings a map's width/height to ``max_aspect``.

    1 means the map is drawn at the sample's true aspect ratio (1 µm of z as tall as 1 µm
    of x is wide). A thin cathode scanned over mm is 30–80 times wider than high; it is
    then drawn with z stretched by the returned factor, which `show_map` writes on the axis.

    Examples
    --------
    >>> z_exaggeration([0.0, 100.0, 0.0, 50.0])
    1.0
    >>> z_exaggeration([0.0, 1617.0, -0.5, 48.5])  # 33 µm columns, 1 µm rows
    10.0
    """
    if extent is None:
        return 1.0
    width, height = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
    needed = width / (height * max_aspect) if height > 0 else 1.0
    decade = 1.0
    while True:
        for factor in _NICE_FACTORS:
            if factor * decade >= needed:
                return factor * decade
        decade *= 10.0


def show_map(
    ax: Any, values: np.ndarray, extent: list[float] | None, *, max_ticks: int = 4, **imshow: Any
) -> Any:
    """Draw a (z, x) map at the sample's aspect ratio, with ticks that do not collide.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    values : ndarray, shape (n_z, n_x)
        The map; row 0 is the lowest z.
    extent : list of float or None
        ``[x0, x1, z0, z1]`` in µm (`map_extent`); None draws pixel indices at aspect 1.
    max_ticks : int, optional
        At most this many labelled ticks per axis (fewer for narrow panels).
    **imshow
        Passed on (``vmin``, ``vmax``, ``cmap``).

    Returns
    -------
    matplotlib.image.AxesImage
        For a colour bar.
    """
    factor = z_exaggeration(extent)
    image = ax.imshow(values, origin="lower", extent=extent, **imshow)
    ax.set_aspect(factor)  # data units: 1 µm of z drawn `factor` times as tall as 1 µm of x
    ax.xaxis.set_major_locator(_RoomyLocator(max_ticks))
    ax.yaxis.set_major_locator(_RoomyLocator(max_ticks))
    stretch = f", z ×{factor:g}" if factor != 1 else ""
    ax.set(xlabel="x (µm)", ylabel=f"z (µm{stretch})")
    return image


class _RoomyLocator(MaxNLocator):
    """At most ``limit`` intervals, and no more than the drawn axis has room for.

    The room is matplotlib's own estimate (`Axis.get_tick_space`: the axis length over
    three label font sizes along x, two along y), taken at draw time, so a map drawn as a
    short strip gets fewer ticks instead of overlapping labels.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(nbins=limit, steps=[1, 2, 5, 10], min_n_ticks=1)
        self.limit = limit

    def __call__(self) -> Any:
        room = self.axis.get_tick_space() if self.axis is not None else self.limit
        self.set_params(nbins=max(1, min(self.limit, room)))
        return super().__call__()


def _series(ax: Any, arrays: Any, time_s: np.ndarray, key: str, style: str) -> None:
    if key in arrays:
        ax.plot(time_s, arrays[key].values, style, label=key)
