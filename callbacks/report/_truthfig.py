"""Recovered-versus-truth figure of a rehearsal: per-pixel c, map means, front, grains, Li."""

from __future__ import annotations

from typing import Any

import numpy as np

from opmap.analysis.products import Products

from ._cathode import MINUTE_S
from ._data import families, map_mean, map_times_s
from ._layout import Panel, skip
from ._truth import Pair, front_pairs, grain_pairs, lattice_pair, thickness_pair

__all__ = ["truth_panels"]


def truth_panels(products: Products) -> list[Panel]:
    """Panels comparing the recovered products with the twin's ground truth."""
    time_s = map_times_s(products)
    if time_s is None:
        return [skip("truth", "no time_s array")]
    panels = [_scatter(f, lattice_pair(products, "c", f)) for f in families(products)]
    for prefix in ("c", "a"):
        pairs = {f: lattice_pair(products, prefix, f) for f in families(products)}
        panels.append(_versus_time(f"map-mean {prefix} ({'Å'})", time_s, pairs, reduce=True))
    fronts = front_pairs(products)
    panels.append(_versus_time("front position (µm)", time_s,
                               {"front": None if fronts is None else fronts[0]}))  # fmt: skip
    panels.append(_versus_time("grains in diffraction per map", time_s,
                               {k: v for k, v in grain_pairs(products).items()}))  # fmt: skip
    panels.append(_versus_time("Li thickness (µm)", time_s, {"Li": thickness_pair(products)}))
    return panels


def _scatter(family: str, pair: Pair | None) -> Panel:
    title = f"c per pixel, {family}"
    if pair is None or pair.n == 0:
        return skip(title, f"no c_{family} with a truth_c_{family} to compare")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        ax.plot(pair.truth.ravel(), pair.recovered.ravel(), ".", ms=3, alpha=0.5)
        low, high = np.nanmin(pair.truth), np.nanmax(pair.truth)
        ax.plot([low, high], [low, high], "k-", lw=0.8, label="recovered = truth")
        ax.set(title=title, xlabel="truth c (Å)", ylabel="recovered c (Å)")
        ax.legend(fontsize="small")

    return Panel(title, draw)


def _versus_time(
    title: str, time_s: np.ndarray, pairs: dict[str, Pair | None], *, reduce: bool = False
) -> Panel:
    known = {k: p for k, p in pairs.items() if p is not None and p.n > 0}
    if not known:
        return skip(title, "no recovered value with a truth to compare")

    def draw(figure: Any, cell: Any) -> None:
        ax = figure.add_subplot(cell)
        for i, (label, pair) in enumerate(known.items()):
            rec, tru = (map_mean(pair.recovered), map_mean(pair.truth)) if reduce else (
                pair.recovered, pair.truth)  # fmt: skip
            ax.plot(time_s / MINUTE_S, rec, "o", color=f"C{i}", label=f"{label} recovered")
            ax.plot(time_s / MINUTE_S, tru, "-", color=f"C{i}", label=f"{label} truth")
        ax.set(title=title, xlabel="time (min)")
        ax.legend(fontsize="small")

    return Panel(title, draw)
