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

from opmap.analysis.products import Products

__all__ = ["PANELS", "LiveFigures", "map_extent"]

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
            image = ax.imshow(
                arrays[name].values[-1], origin="lower", aspect="auto", extent=extent
            )
            figure.colorbar(image, ax=ax, label="c (Å)")
            ax.set(title=f"c map {name[2:]}", xlabel="x (µm)", ylabel="z (µm)")
        time_s = arrays["time_s"].values if "time_s" in arrays else np.arange(1)
        panels = dict(zip(PANELS, axes[len(families) :], strict=False))
        phases = [n for n in arrays if n.startswith("phase_")]
        if phases:
            panels["phase map"].imshow(
                np.argmax(np.stack([arrays[n].values[-1] for n in phases]), axis=0),
                origin="lower", aspect="auto", extent=extent,
            )  # fmt: skip
        panels["phase map"].set(title="phase map", xlabel="x (µm)", ylabel="z (µm)")
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
    coords = products.coords
    if "x" in coords and "z" in coords:
        x, z = coords["x"].values, coords["z"].values
        return [float(x[0]), float(x[-1]), float(z[0]), float(z[-1])]
    return None


def _series(ax: Any, arrays: Any, time_s: np.ndarray, key: str, style: str) -> None:
    if key in arrays:
        ax.plot(time_s, arrays[key].values, style, label=key)
