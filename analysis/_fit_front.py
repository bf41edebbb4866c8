"""The biphasic front from the Li-rich fraction (opt-in), and the front speed (both methods).

The default front is the paper's x(z) method (`opmap.analysis.lattice.x_profile_front`);
this module's `biphasic_front` works on the two-phase fit's Li-rich fraction instead
(``front_method = "rich_fraction"``). `front_velocity` serves both.

Per map the column-averaged Li-rich fraction f(z) (mean over x, NaN ignored) inside the
cathode is fitted with an error-function step between 0 and 1 (the fractions' physical
limits)::

    f(z) = ½·erfc((z − z₀) / (√2·w))      (w > 0: Li-rich below, Li-poor above)

z₀ is the sub-pixel z where f crosses 0.5; the 10–90 % interface width is 2·1.2816·|w|.
Robustness (choices, see docs/analysis-products.md):

* only rows inside the cathode (``cathode_z_um``, default 0–20 µm) enter the fit, and a
  front whose z₀ falls outside it is rejected (NaN): partial rows at the Pt and LiPON
  interfaces give fractions of a weak, mixed signal, not of a phase;
* a front exists only when the profile reaches both phases: max f ≥ 0.5 + ``contrast`` and
  min f ≤ 0.5 − ``contrast`` inside the cathode;
* the speed is fitted over the biphasic stage only: the longest run of consecutive maps with
  a front (or a caller's time window), by a Theil–Sen line, then least squares over the
  points within 3 robust standard deviations (at least 0.5 µm) of it.

Sign: dz₀/dt. During charge the Li-poor phase grows from the electrolyte side (z = 20 µm)
downwards, so the front speed is negative (≈ −10 nm/s in the paper).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erfc
from scipy.stats import theilslopes

#: 10–90 % distance of an erf step in units of its Gaussian sigma: 2·Φ⁻¹(0.9)
WIDTH_10_90_PER_SIGMA = 2.0 * 1.2815515655446004
#: Default cathode extent (µm): LiCoO2 from its Pt collector (z = 0) to the LiPON (z = 20).
CATHODE_Z_UM = (0.0, 20.0)


@dataclass(frozen=True)
class FrontResult:
    """Biphasic front per map and its velocity.

    ``position_um`` / ``position_err_um`` / ``width_um`` (10–90 %) have shape (n_maps,),
    NaN where no front lies inside the cathode or the fit failed.
    ``velocity_nm_per_s`` is dz₀/dt (negative = moving down from the electrolyte side towards
    the Pt collector, as in charge) with its standard uncertainty; NaN with fewer than three
    maps in the biphasic stage. ``used`` (n_maps,) marks the maps of that fit and
    ``time_window_s`` their first and last time (NaN, NaN when none).
    """

    time_s: np.ndarray
    position_um: np.ndarray
    position_err_um: np.ndarray
    width_um: np.ndarray
    velocity_nm_per_s: float
    velocity_err_nm_per_s: float
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    time_window_s: tuple[float, float] = (np.nan, np.nan)


def _step(z: np.ndarray, z0: float, w: float) -> np.ndarray:
    return 0.5 * erfc((z - z0) / (np.sqrt(2.0) * w))


_NO_FRONT = (np.nan, np.nan, np.nan)


def _fit_one(
    z: np.ndarray, f: np.ndarray, bounds: tuple[float, float], contrast: float
) -> tuple[float, float, float]:
    ok = np.isfinite(f) & (z >= bounds[0]) & (z <= bounds[1])
    z, f = z[ok], f[ok]
    if z.size < 4 or f.max() < 0.5 + contrast or f.min() > 0.5 - contrast:
        return _NO_FRONT
    # Start at the 0.5 crossing with the largest contrast across it (noise can add others).
    above = f > 0.5
    crossings = np.flatnonzero(above[:-1] != above[1:])
    lo_side = np.array([f[max(k - 2, 0) : k + 1].mean() for k in crossings])
    hi_side = np.array([f[k + 1 : k + 4].mean() for k in crossings])
    k = int(crossings[np.argmax(np.abs(lo_side - hi_side))])
    z_start = z[k] + (0.5 - f[k]) * (z[k + 1] - z[k]) / (f[k + 1] - f[k])
    span = float(z[-1] - z[0])
    w_start = 1.0 if lo_side.max() > hi_side.min() and f[k] > f[k + 1] else -1.0
    try:
        with warnings.catch_warnings():
            # An undetermined covariance means an untrustworthy front: report NaN.
            warnings.simplefilter("error", OptimizeWarning)
            popt, pcov = curve_fit(_step, z, f, p0=(z_start, w_start))
    except (RuntimeError, ValueError, OptimizeWarning):
        return _NO_FRONT
    z0, w = popt
    inside = bounds[0] <= z0 <= bounds[1]
    if not inside or abs(w) > span or not np.all(np.isfinite(pcov)):
        return _NO_FRONT
    return float(z0), float(np.sqrt(pcov[0, 0])), float(WIDTH_10_90_PER_SIGMA * abs(w))


def front_velocity(
    time_s: np.ndarray, position_um: np.ndarray, *, robust: bool = True
) -> tuple[float, float]:
    """Straight-line fit of front position against time.

    Parameters
    ----------
    time_s : (n,) array of float
        Experiment time of each map (s).
    position_um : (n,) array of float
        Front position z₀ (µm); NaN entries are skipped.
    robust : bool, optional
        Theil–Sen line first, then least squares over the points within 3 robust standard
        deviations (1.4826 × median absolute deviation, at least 0.5 µm) of it; ``False``:
        plain least squares over all points.

    Returns
    -------
    velocity_nm_per_s, velocity_err_nm_per_s : float
        Slope (nm/s) and its standard uncertainty from the residual scatter; NaN when fewer
        than three valid points.

    Examples
    --------
    >>> t = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    >>> v, _ = front_velocity(t, np.array([20.0, 19.0, 18.0, 3.0, 16.0]))
    >>> print(round(v, 6))
    -10.0
    """
    t = np.asarray(time_s, dtype=float)
    z = np.asarray(position_um, dtype=float)
    if t.shape != z.shape or t.ndim != 1:
        raise ValueError(
            f"time_s and position_um must be 1-D of equal length, got {t.shape} and {z.shape}"
        )
    ok = np.isfinite(t) & np.isfinite(z)
    if ok.sum() < 3:
        return np.nan, np.nan
    if robust and ok.sum() >= 4:
        slope = theilslopes(z[ok], t[ok]).slope
        resid = z - slope * t
        resid -= np.median(resid[ok])  # the joint intercept: robust to the outliers too
        mad = float(np.median(np.abs(resid[ok] - np.median(resid[ok]))))
        keep = ok & (np.abs(resid) <= max(3.0 * 1.4826 * mad, 0.5))
        ok = keep if keep.sum() >= 3 else ok
    design = np.stack([t[ok], np.ones(ok.sum())], 1)
    coef, *_ = np.linalg.lstsq(design, z[ok], rcond=None)
    resid = z[ok] - design @ coef
    dof = ok.sum() - 2
    s2 = float(resid @ resid) / dof if dof > 0 else np.nan
    cov = s2 * np.linalg.inv(design.T @ design)
    return float(coef[0] * 1e3), float(np.sqrt(cov[0, 0]) * 1e3)


def _longest_run(valid: np.ndarray) -> np.ndarray:
    """Mask of the longest run of consecutive True entries (the first of equal runs)."""
    best = np.zeros_like(valid)
    start = None
    for i, v in enumerate([*valid.tolist(), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best.sum():
                best[:] = False
                best[start:i] = True
            start = None
    return best


def biphasic_front(
    rich_fraction: np.ndarray,
    *,
    z_um: np.ndarray,
    time_s: np.ndarray,
    cathode_z_um: tuple[float, float] | None = CATHODE_Z_UM,
    contrast: float = 0.2,
    time_window_s: tuple[float, float] | None = None,
) -> FrontResult:
    """Front position, 10–90 % width and velocity from Li-rich fraction maps.

    Parameters
    ----------
    rich_fraction : (n_maps, n_z, n_x) array of float
        Li-rich phase fraction per pixel (NaN outside the cathode or where the fit failed).
    z_um : (n_z,) array of float
        Height of each map row (µm), increasing.
    time_s : (n_maps,) array of float
        Experiment time of each map (s).
    cathode_z_um : (float, float) or None, optional
        Rows inside [bottom, top] (µm) enter the fit and a front must lie inside; None: all
        rows of the map. Default 0–20 µm.
    contrast : float, optional
        The profile must reach 0.5 + contrast and 0.5 − contrast inside the cathode for a
        front to exist (both phases present), in [0, 0.5).
    time_window_s : (float, float) or None, optional
        Maps whose time lies inside enter the speed fit; None: the longest run of
        consecutive maps with a front (the biphasic stage).

    Returns
    -------
    FrontResult

    Examples
    --------
    >>> from scipy.special import erfc
    >>> z = np.arange(0.0, 20.0)
    >>> t = np.array([0.0, 300.0, 600.0])
    >>> f = 0.5 * erfc((z[None, :] - (15 - 0.01 * t[:, None])) / (np.sqrt(2) * 2.0))
    >>> res = biphasic_front(np.repeat(f[:, :, None], 4, axis=2), z_um=z, time_s=t)
    >>> print(np.round(res.position_um, 3), round(res.velocity_nm_per_s, 3))
    [15. 12.  9.] -10.0
    """
    frac = np.asarray(rich_fraction, dtype=float)
    z = np.asarray(z_um, dtype=float)
    t = np.asarray(time_s, dtype=float)
    if frac.ndim != 3 or frac.shape[1] != z.size or frac.shape[0] != t.size:
        raise ValueError(
            f"rich_fraction must be (n_maps, n_z, n_x) = ({t.size}, {z.size}, n_x), "
            f"got {frac.shape}"
        )
    if not np.all(np.diff(z) > 0):
        raise ValueError("z_um must be strictly increasing")
    if not 0.0 <= contrast < 0.5:
        raise ValueError(f"contrast must be in [0, 0.5), got {contrast!r}")
    bounds = (-np.inf, np.inf) if cathode_z_um is None else tuple(map(float, cathode_z_um))
    if not bounds[0] < bounds[1]:
        raise ValueError(f"cathode_z_um must be (bottom, top) with bottom < top, got {bounds}")
    if time_window_s is not None and not time_window_s[0] < time_window_s[1]:
        raise ValueError(f"time_window_s must be (start, stop), start < stop: {time_window_s}")
    counts = np.isfinite(frac).sum(axis=2)
    sums = np.nansum(frac, axis=2)
    column = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    rows = np.array([_fit_one(z, prof, bounds, contrast) for prof in column]).reshape(-1, 3)
    valid = np.isfinite(rows[:, 0])
    if time_window_s is None:
        used = _longest_run(valid)
    else:
        used = valid & (t >= time_window_s[0]) & (t <= time_window_s[1])
    velocity, velocity_err = front_velocity(t, np.where(used, rows[:, 0], np.nan))
    window = (float(t[used].min()), float(t[used].max())) if used.any() else (np.nan, np.nan)
    return FrontResult(t, rows[:, 0], rows[:, 1], rows[:, 2], velocity, velocity_err, used, window)
