"""x in LixCoO2 from the c lattice parameter: the paper's calibration lines (SI, Fig. S4).

The supporting information derives two straight lines from printed anchor points:

* metallic (solid solution, x < 0.75): through (14.43 Å, 0.45) and (14.21 Å, 0.75), printed
  as x = 20.13 − c·0.3/0.22;
* biphasic (x ≥ 0.75, with c̄ the phase-fraction weighted mean c): through (14.21 Å, 0.75)
  and (14.03 Å, 1.00), printed as x̄ = 20.49 − c̄·0.25/0.18.

We evaluate the lines through the anchors (the printed intercepts are those lines rounded to
0.01; they differ by ≤ 0.004 in x, inside the uncertainty below). The calibrated range is
the anchors' c range, 14.03–14.43 Å: outside it x is NaN, never clamped or extrapolated
(c = 14.00 Å would read x = 1.046).

Uncertainty of the calibration itself: the anchors are printed to 0.01 (Å and x), so each
anchor coordinate carries a rounding uncertainty of 0.005/√3. For x on the segment between
anchors (c₁, x₁) and (c₂, x₂), with u = (c − c₁)/(c₂ − c₁) and slope s,
σ²_cal = (σ_x² + s²σ_c²)·((1 − u)² + u²) (first-order propagation through the two-point line).
Total x_err² = (s·σ_c(measured))² + σ²_cal + ``extra_x_err``².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PAPER_CALIBRATION", "PAPER_TRANSFER_X_ERR", "LiCalibration", "li_fraction_from_c"]

#: Standard uncertainty of a number printed to two decimals (uniform rounding error).
_ROUNDING_0_01 = 0.005 / np.sqrt(3.0)


@dataclass(frozen=True, kw_only=True)
class LiCalibration:
    """Piecewise-linear x(c) through anchor points; NaN outside the anchors' c range.

    Parameters
    ----------
    c_angstrom : tuple of float
        Anchor c (Å), strictly increasing, at least two.
    x_li : tuple of float
        x at each anchor (dimensionless), in [0, 1].
    c_err_angstrom, x_err : float
        Standard uncertainty of every anchor's c and x (≥ 0).
    extra_x_err : float
        Further calibration uncertainty added in quadrature (≥ 0).
    source : str
        Where the anchors come from (recorded with the products).

    Examples
    --------
    >>> cal = LiCalibration(c_angstrom=(14.0, 14.3), x_li=(1.0, 0.5), source="test")
    >>> round(cal.slope_at(14.1), 4), cal.c_range_angstrom
    (-1.6667, (14.0, 14.3))
    """

    c_angstrom: tuple[float, ...]
    x_li: tuple[float, ...]
    c_err_angstrom: float = 0.0
    x_err: float = 0.0
    extra_x_err: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        c = np.asarray(self.c_angstrom, float)
        x = np.asarray(self.x_li, float)
        if c.ndim != 1 or c.size < 2 or c.shape != x.shape:
            raise ValueError(
                f"c_angstrom and x_li must be equal-length sequences of >= 2 anchors, got "
                f"{len(self.c_angstrom)} and {len(self.x_li)}"
            )
        if not (np.all(np.isfinite(c)) and np.all(np.diff(c) > 0)):
            raise ValueError(f"c_angstrom must be finite and strictly increasing, got {c}")
        if not np.all((x >= 0) & (x <= 1)):
            raise ValueError(f"x_li must lie in [0, 1], got {x}")
        for name in ("c_err_angstrom", "x_err", "extra_x_err"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")

    @property
    def c_range_angstrom(self) -> tuple[float, float]:
        """Calibrated c range (Å): the first and last anchor."""
        return float(self.c_angstrom[0]), float(self.c_angstrom[-1])

    def slope_at(self, c_angstrom: float) -> float:
        """dx/dc (per Å) of the segment holding ``c_angstrom`` (NaN outside the range)."""
        _, _, slope, _ = self._segment(np.asarray([c_angstrom], float))
        return float(slope[0])

    def covers(self, c_angstrom: np.ndarray) -> np.ndarray:
        """bool mask: finite c inside the calibrated range (anchors included)."""
        c = np.asarray(c_angstrom, float)
        lo, hi = self.c_range_angstrom
        with np.errstate(invalid="ignore"):
            return np.isfinite(c) & (c >= lo) & (c <= hi)

    def _segment(self, c: np.ndarray):
        """Per value: anchor index k of its segment, fraction u along it, slope, inside."""
        anchors = np.asarray(self.c_angstrom, float)
        x = np.asarray(self.x_li, float)
        inside = self.covers(c)
        k = np.clip(np.searchsorted(anchors, np.where(inside, c, anchors[0])) - 1, 0, x.size - 2)
        width = anchors[k + 1] - anchors[k]
        u = (np.where(inside, c, anchors[k]) - anchors[k]) / width
        slope = np.where(inside, (x[k + 1] - x[k]) / width, np.nan)
        return k, u, slope, inside


#: Transfer uncertainty of the paper's calibration to its thin film, from the paper's own
#: numbers: its end-of-charge LCO⊥ c, 14.32 Å (main text), reads x = 0.60 on the calibration,
#: where the charge passed gives Li0.5 (main text: 1.4 mAh/cm², "average stoichiometry
#: Li0.5CoO2"); its Li-poor c at the end of the biphasic stage, 14.13 Å, reads 0.86 where the
#: transition ends at 0.75. The calibration comes from porous electrodes (ref. 24), whose c
#: changes by 0.17 Å across the transition against the film's 0.13 Å.
PAPER_TRANSFER_X_ERR = 0.10

#: The paper's LCO⊥ calibration (SI, Fig. S4): anchors printed to 0.01, and its transfer
#: uncertainty to the film (`PAPER_TRANSFER_X_ERR`).
PAPER_CALIBRATION = LiCalibration(
    c_angstrom=(14.03, 14.21, 14.43),
    x_li=(1.0, 0.75, 0.45),
    c_err_angstrom=_ROUNDING_0_01,
    x_err=_ROUNDING_0_01,
    extra_x_err=PAPER_TRANSFER_X_ERR,
    source="paper SI section 4, Fig. S4 (LCO perp): lines through (14.03, 1), (14.21, 0.75), "
    "(14.43, 0.45); +-0.10 in x for its transfer to the film (end of charge: 14.32 A reads "
    "0.60 where the charge passed gives 0.5)",
)


def li_fraction_from_c(
    c_angstrom: np.ndarray,
    c_err: np.ndarray | None = None,
    *,
    calibration: LiCalibration = PAPER_CALIBRATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Li content x of LixCoO2 from c (or from the mean c in the biphasic region).

    Parameters
    ----------
    c_angstrom : array of float
        c lattice parameter (Å), any shape.
    c_err : array of float, optional
        Its standard uncertainty (Å); without it x_err holds the calibration part only.
    calibration : LiCalibration, optional
        Anchors; default the paper's (`PAPER_CALIBRATION`).

    Returns
    -------
    x, x_err : arrays of float, shape of the input (dimensionless)
        NaN where c is NaN or outside ``calibration.c_range_angstrom`` (see
        `LiCalibration.covers` to tell the two apart).

    Examples
    --------
    >>> x, x_err = li_fraction_from_c(np.array([14.00, 14.03, 14.21, 14.43, 14.5]))
    >>> print(np.round(x, 2))
    [ nan 1.   0.75 0.45  nan]
    >>> print(np.round(x_err[1:4], 4))
    [0.1001 0.1001 0.1001]
    """
    c = np.asarray(c_angstrom, dtype=np.float64)
    x_anchor = np.asarray(calibration.x_li, float)
    k, u, slope, inside = calibration._segment(c)
    x = np.where(inside, x_anchor[k] + u * (x_anchor[k + 1] - x_anchor[k]), np.nan)
    cal = calibration
    var_cal = (cal.x_err**2 + slope**2 * cal.c_err_angstrom**2) * ((1 - u) ** 2 + u**2)
    var = var_cal + cal.extra_x_err**2
    if c_err is not None:
        var = var + (slope * np.asarray(c_err, dtype=np.float64)) ** 2
    return x, np.where(inside, np.sqrt(var), np.nan)
