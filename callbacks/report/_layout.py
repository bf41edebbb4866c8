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

__all__ = ["Panel", "assemble", "map_markers", "skip", "stacked_axes"]

logger = logging.getLogger(__name__)

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


def stacked_axes(figure: Figure, cell: Any, count: int) -> list[Any]:
    """``count`` axes stacked in ``cell``, sharing x: maps of a wide, thin sample.

    A map 30–80 times wider than high is drawn as a full-width strip; stacking keeps each
    strip as wide as the cell instead of dividing the width between them.
    """
    grid = cell.subgridspec(count, 1, hspace=0.15)
    first = figure.add_subplot(grid[0])
    return [first] + [figure.add_subplot(grid[i], sharex=first) for i in range(1, count)]
