"""Panels and their assembly into one report figure (matplotlib `Figure`, no pyplot state).

A figure builder returns a list of `Panel`; a panel either draws itself into a grid cell or
carries the reason it cannot be drawn (a missing product). `assemble` logs every skipped
panel and lays out the rest, so a report never crashes on, nor invents, a missing product.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from opmap.callbacks.plots import z_exaggeration

__all__ = [
    "CELL_ASPECT",
    "Panel",
    "assemble",
    "count_axis",
    "label_map_axes",
    "map_axes",
    "map_columns",
    "map_markers",
    "skip",
]

logger = logging.getLogger(__name__)

#: Width over height of one panel's cell in `assemble` (6.0 x 4.2 inches).
CELL_ASPECT = 6.0 / 4.2
#: Share of the cell's height each row of maps loses to its title and tick labels.
_ROW_OVERHEAD = 0.12

#: Draws a panel into ``cell`` (a `SubplotSpec`) of ``figure``.
Draw = Callable[[Figure, Any], None]


@dataclass(frozen=True)
class Panel:
    """One panel of a report figure: a title and a drawing function, or why it is skipped."""

    title: str
    draw: Draw | None = None
    reason: str = ""


def skip(title: str, reason: str) -> Panel:
    """A panel that cannot be drawn, with the reason."""
    return Panel(title, None, reason)


def assemble(name: str, panels: list[Panel], *, columns: int = 2) -> Figure | None:
    """Lay the drawable ``panels`` out on a grid; None (logged) when none is drawable."""
    for panel in panels:
        if panel.draw is None:
            logger.warning("report %s: panel %r skipped: %s", name, panel.title, panel.reason)
    drawable = [panel for panel in panels if panel.draw is not None]
    if not drawable:
        logger.warning("report %s: figure skipped: no panel can be drawn", name)
        return None
    columns = min(columns, len(drawable))
    rows = math.ceil(len(drawable) / columns)
    figure = Figure(figsize=(6.0 * columns, 4.2 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, columns)
    for index, panel in enumerate(drawable):
        assert panel.draw is not None
        panel.draw(figure, grid[index // columns, index % columns])
    figure.suptitle(name)
    return figure


def map_markers(ax: Any, time_s: np.ndarray | None, *, scale: float = 1.0) -> None:
    """Thin vertical lines at the maps' times (``time_s / scale`` on the x axis)."""
    for t in () if time_s is None else np.asarray(time_s, float) / scale:
        if np.isfinite(t):
            ax.axvline(t, color="0.6", lw=0.6, ls=":", zorder=0)


def map_axes(
    figure: Figure, cell: Any, count: int, *, title: str, extent: list[float] | None
) -> tuple[Any, list[Any]]:
    """``count`` map axes in their own sub-figure of ``cell``, titled ``title``.

    The number of columns is the one that draws each map largest in the cell (maps keep
    their drawn aspect, z exaggeration included; each row loses room to its title and
    ticks): wide strips stack, compact maps go side by side. The title is the
    sub-figure's, above every map title, so the two never overlap. Axes share x and y;
    call :func:`label_map_axes` once the maps are drawn.

    Returns
    -------
    (SubFigure, list of Axes)
        The sub-figure (for its colour bar) and the axes, row by row.
    """
    sub = figure.add_subfigure(cell)
    sub.suptitle(title, fontsize="medium")
    columns = map_columns(count, _drawn_aspect(extent))
    grid = sub.add_gridspec(math.ceil(count / columns), columns)
    first = sub.add_subplot(grid[0, 0])
    axes = [first] + [
        sub.add_subplot(grid[i // columns, i % columns], sharex=first, sharey=first)
        for i in range(1, count)
    ]
    return sub, axes


def map_columns(count: int, aspect: float) -> int:
    """Columns that draw ``count`` maps of drawn width/height ``aspect`` largest in a cell.

    Examples
    --------
    >>> map_columns(4, 40.0), map_columns(4, 1.0), map_columns(1, 1.0)
    (1, 2, 1)
    """

    def width(columns: int) -> float:
        rows = math.ceil(count / columns)
        height = max(1.0 - rows * _ROW_OVERHEAD, 0.05) / rows
        return min(CELL_ASPECT / columns, height * aspect)

    return max(range(1, count + 1), key=lambda columns: (width(columns), -columns))


def label_map_axes(sub: Any, axes: list[Any]) -> None:
    """Tick labels on the outer maps only; z labels on the first column, x on the last row."""
    for ax in axes:
        ax.label_outer()  # hides inner tick labels and axis labels


def count_axis(ax: Any) -> None:
    """An axis of counts: integer ticks from 0 (also when every count is 0)."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))


def _drawn_aspect(extent: list[float] | None) -> float:
    if extent is None:
        return 1.0
    x0, x1, z0, z1 = extent
    return abs(x1 - x0) / max(abs(z1 - z0) * z_exaggeration(extent), 1e-12)
