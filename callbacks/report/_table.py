"""Recovered-versus-truth table of a rehearsal against the analysis targets (issue 10).

Error definitions (one row per figure of merit and family):

- per-pixel RMS (c, x_Li): the worst map's sqrt(mean((recovered − truth)²)) over its pixels
  known on both sides;
- x_Li beyond 2 x_li_err: the worst map's share of those pixels whose |x − x_true| exceeds
  twice the standard uncertainty the analysis stated for it (``x_li_err``); ~0.05 when the
  stated uncertainty holds;
- map-mean (c, a) and per-map (front position, Li thickness): the worst map, max |Δ| of the
  per-map means over the pixels known on both sides;
- front speed: |v − v_true| / |v_true| of the straight-line fits;
- grains in diffraction per map: the worst map, max |n − n_true| / n_true (maps with
  n_true > 0);
- new / deceased grains: |Σn − Σn_true| / Σn_true over the maps after the first (per-map
  counts are small; the total is the rate the paper quotes).

``recovered`` and ``truth`` are the means over the compared entries. ``coverage`` is the
share of the truth's entries (cathode pixels with a finite truth, maps with a truth) where
the recovered value is finite, on the worst map for per-pixel figures; for x_Li only the
pixels whose true c lies inside the calibrated range count (elsewhere the paper's method
gives NaN by design), and ``excluded`` is the share of the truth's pixels (all maps) left out
that way (0 for every other figure). A figure passes only
if its error meets the target AND its coverage is at least `MIN_COVERAGE`; the front speed
also needs at least `MIN_FRONT_MAPS` maps.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from opmap.analysis.products import Products

from ._data import families, map_mean
from ._truth import (
    Pair,
    front_pairs,
    grain_pairs,
    lattice_pair,
    pair_mean,
    thickness_pair,
    x_li_z_pair,
)

__all__ = [
    "COLUMNS",
    "MIN_COVERAGE",
    "MIN_FRONT_MAPS",
    "TARGETS",
    "report_table",
    "write_table_csv",
    "write_table_markdown",
]

logger = logging.getLogger(__name__)

#: Columns of a table row, in order.
COLUMNS = (
    "figure", "recovered", "truth", "error", "target", "units", "coverage", "excluded", "pass",
)  # fmt: skip
#: Targets of issue 10: (error kind, target, units of the error).
TARGETS: dict[str, tuple[str, float, str]] = {
    "c per pixel RMS": ("worst_map_rms", 0.003, "angstrom"),
    "c map mean": ("worst_map", 0.002, "angstrom"),
    "a map mean": ("worst_map", 0.0005, "angstrom"),
    "x_Li per pixel RMS": ("worst_map_rms", 0.03, ""),
    "x_Li beyond 2 x_li_err": ("worst_map_share_beyond_2", 0.05, ""),
    "front position": ("worst_map", 1.0, "um"),
    "front speed": ("relative", 0.10, ""),
    "grains per map": ("worst_map_relative", 0.15, ""),
    "new grains": ("total_relative", 0.20, ""),
    "deceased grains": ("total_relative", 0.20, ""),
    "Li thickness": ("worst_map", 0.3, "um"),
}
#: A figure passes only where the recovered values cover this share of the truth's entries.
MIN_COVERAGE = 0.95
#: The front speed passes only when fitted over at least this many maps.
MIN_FRONT_MAPS = 5


def report_table(products: Products) -> list[dict[str, Any]]:
    """Recovered-versus-truth figures of merit of a rehearsal, with the issue's targets.

    Parameters
    ----------
    products : Products
        Analysis products holding ``truth_*`` arrays (see `opmap.callbacks.report`).

    Returns
    -------
    list of dict
        One row per figure of merit with keys `COLUMNS`: ``figure`` (e.g.
        ``"c map mean perp"``), ``recovered``, ``truth``, ``error``, ``target``, ``units``
        (of recovered/truth), ``coverage``, ``excluded`` (x_Li: share of the pixels whose
        true c is outside the calibrated range) and ``pass`` (error ≤ target and coverage ≥
        `MIN_COVERAGE`; the front speed also from ≥ `MIN_FRONT_MAPS` maps). Quantities
        without truth are left out (logged); empty for products without truth. A
        quantity with a truth and no recovered value at all is a failing row of coverage
        0 with NaN values (e.g. the Li thickness of maps that hold no Ti).
    """
    rows: list[dict[str, Any]] = []
    lattice = (("c", ("c per pixel RMS", "c map mean")), ("a", ("a map mean",)),
               ("x_li", ("x_Li per pixel RMS",)))  # fmt: skip
    for family in families(products):
        for prefix, kinds in lattice:
            pair = lattice_pair(products, prefix, family)
            for kind in kinds:
                _add(rows, kind, pair, f"{kind} {family}")
        kind = "x_Li beyond 2 x_li_err"  # pair: the x_Li pair, the loop's last
        _add(rows, kind, x_li_z_pair(products, family, pair), f"{kind} {family}")
    fronts = front_pairs(products)
    _add(rows, "front position", None if fronts is None else fronts[0])
    _add(rows, "front speed", None if fronts is None else fronts[1])
    grains = grain_pairs(products)
    _add(rows, "grains per map", grains.get("total"))
    _add(rows, "new grains", _after_first(grains.get("new")))
    _add(rows, "deceased grains", _after_first(grains.get("deceased")))
    _add(rows, "Li thickness", thickness_pair(products))
    return rows


def _after_first(pair: Pair | None) -> Pair | None:
    if pair is None:
        return None
    return Pair(pair.recovered[1:], pair.truth[1:], pair.units, pair.coverage, pair.n_maps,
                pair.excluded)  # fmt: skip


def _add(rows: list[dict[str, Any]], kind: str, pair: Pair | None, label: str = "") -> None:
    label = label or kind
    method, target, _ = TARGETS[kind]
    if pair is not None and pair.n == 0 and pair.coverage == 0:
        # a truth to compare and nothing recovered (every value NaN, e.g. a map whose z
        # range holds no Ti): a failing row of coverage 0, not a row left out
        nan = float("nan")
        values = (label, nan, nan, nan, target, pair.units, 0.0, pair.excluded, False)
        rows.append(dict(zip(COLUMNS, values, strict=True)))
        return
    if pair is None or pair.n == 0:
        logger.info("report table: %s skipped (no recovered value with a truth to compare)", label)
        return
    error = _ERRORS[method](pair)
    if not math.isfinite(error):
        logger.info("report table: %s skipped (error undefined: truth is zero)", label)
        return
    recovered, truth = pair_mean(pair)
    coverage = pair.coverage
    passed = error <= target and coverage >= MIN_COVERAGE
    if kind == "front speed":
        passed = passed and pair.n_maps >= MIN_FRONT_MAPS
    values = (label, recovered, truth, error, target, pair.units, coverage, pair.excluded,
              bool(passed))  # fmt: skip
    rows.append(dict(zip(COLUMNS, values, strict=True)))


def _rms(pair: Pair) -> float:
    return float(np.sqrt(np.nanmean(np.square(pair.recovered - pair.truth))))


def _worst_map_rms(pair: Pair) -> float:
    if pair.recovered.ndim < 2:
        return _rms(pair)
    axes = tuple(range(1, pair.recovered.ndim))
    squares = np.square(pair.recovered - pair.truth)
    known = np.isfinite(squares)
    count = known.sum(axis=axes)
    total = np.where(known, squares, 0.0).sum(axis=axes)
    return float(np.sqrt((total[count > 0] / count[count > 0]).max()))


def _worst_map(pair: Pair) -> float:
    per_map = pair if pair.recovered.ndim == 1 else Pair(
        map_mean(pair.recovered), map_mean(pair.truth), pair.units
    )  # fmt: skip
    return float(np.nanmax(np.abs(per_map.recovered - per_map.truth)))


def _relative(pair: Pair) -> float:
    truth = float(pair.truth[0])
    return abs(float(pair.recovered[0]) - truth) / abs(truth) if truth else math.nan


def _worst_map_relative(pair: Pair) -> float:
    ok = np.isfinite(pair.truth) & (pair.truth > 0)
    if not ok.any():
        return math.nan
    return float(np.max(np.abs(pair.recovered[ok] - pair.truth[ok]) / pair.truth[ok]))


def _total_relative(pair: Pair) -> float:
    truth = float(np.nansum(pair.truth))
    return abs(float(np.nansum(pair.recovered)) - truth) / truth if truth > 0 else math.nan


def _worst_map_share_beyond_2(pair: Pair) -> float:
    """Worst map's share of known entries with |recovered − truth| > 2 (errors in σ)."""
    beyond = np.abs(pair.recovered - pair.truth) > 2.0
    known = np.isfinite(pair.recovered)
    if pair.recovered.ndim < 2:
        return float(beyond[known].mean()) if known.any() else math.nan
    axes = tuple(range(1, pair.recovered.ndim))
    count = known.sum(axis=axes)
    shares = (beyond & known).sum(axis=axes)[count > 0] / count[count > 0]
    return float(shares.max()) if shares.size else math.nan


_ERRORS = {
    "rms": _rms,
    "worst_map_rms": _worst_map_rms,
    "worst_map": _worst_map,
    "relative": _relative,
    "worst_map_relative": _worst_map_relative,
    "total_relative": _total_relative,
    "worst_map_share_beyond_2": _worst_map_share_beyond_2,
}


def write_table_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the table as CSV (header `COLUMNS`, full-precision numbers)."""
    with Path(path).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (numbers to 4 significant digits)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row[column]) for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_table_markdown(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the table as a Markdown file."""
    Path(path).write_text(format_table(rows))
    return Path(path)
