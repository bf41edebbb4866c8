"""The biphasic front: where, how wide, how fast.

Per map the column-averaged Li-rich fraction f(z) (mean over x, NaN ignored) is fitted with
an error-function step between 0 and 1 (the fractions' physical limits)::

    f(z) = ½·erfc((z − z₀) / (√2·w))      (w > 0: Li-rich below, Li-poor above)

z₀ is the sub-pixel z where f crosses 0.5; the 10–90 % interface width is 2·1.2816·|w|.
The front velocity is the slope of a straight-line fit of z₀ against time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erfc

#: 10–90 % distance of an erf step in units of its Gaussian sigma: 2·Φ⁻¹(0.9)
WIDTH_10_90_PER_SIGMA = 2.0 * 1.2815515655446004


@dataclass(frozen=True)
class FrontResult:
    """Biphasic front per map and its velocity.

    ``position_um`` / ``position_err_um`` / ``width_um`` (10–90 %) have shape (n_maps,),
    NaN where the profile does not cross 0.5 inside the map or the fit failed.
    ``velocity_nm_per_s`` is dz₀/dt (negative = moving down towards the current collector)
    with its standard uncertainty; NaN with fewer than three valid maps.
    """

    time_s: np.ndarray
    position_um: np.ndarray
    position_err_um: np.ndarray
    width_um: np.ndarray
    velocity_nm_per_s: float
    velocity_err_nm_per_s: float


def _step(z: np.ndarray, z0: float, w: float) -> np.ndarray:
    return 0.5 * erfc((z - z0) / (np.sqrt(2.0) * w))


def _fit_one(z: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    ok = np.isfinite(f)
    z, f = z[ok], f[ok]
    above = f > 0.5
    if z.size < 3 or above.all() or not above.any():
        return np.nan, np.nan, np.nan
    k = int(np.flatnonzero(above[:-1] != above[1:])[0])
    z_start = z[k] + (0.5 - f[k]) * (z[k + 1] - z[k]) / (f[k + 1] - f[k])
    w_start = 1.0 if f[0] > f[-1] else -1.0
    try:
        with warnings.catch_warnings():
            # An undetermined covariance means an untrustworthy front: report NaN.
            warnings.simplefilter("error", OptimizeWarning)
            popt, pcov = curve_fit(_step, z, f, p0=(z_start, w_start))
    except (RuntimeError, ValueError, OptimizeWarning):
        return np.nan, np.nan, np.nan
    z0, w = popt
    if not (z.min() <= z0 <= z.max()) or not np.all(np.isfinite(pcov)):
        return np.nan, np.nan, np.nan
    return float(z0), float(np.sqrt(pcov[0, 0])), float(WIDTH_10_90_PER_SIGMA * abs(w))


def front_velocity(time_s: np.ndarray, position_um: np.ndarray) -> tuple[float, float]:
    """Straight-line fit of front position against time.

    Parameters
    ----------
    time_s : (n,) array of float
        Experiment time of each map (s).
    position_um : (n,) array of float
        Front position z₀ (µm); NaN entries are skipped.

    Returns
    -------
    velocity_nm_per_s, velocity_err_nm_per_s : float
        Slope (nm/s) and its standard uncertainty from the residual scatter; NaN when fewer
        than three valid points.

    Examples
    --------
    >>> v, _ = front_velocity(np.array([0.0, 100.0, 200.0]), np.array([20.0, 19.0, 18.0]))
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
    design = np.stack([t[ok], np.ones(ok.sum())], 1)
    coef, *_ = np.linalg.lstsq(design, z[ok], rcond=None)
    resid = z[ok] - design @ coef
    s2 = float(resid @ resid) / (ok.sum() - 2)
    cov = s2 * np.linalg.inv(design.T @ design)
    slope = coef[0]
    return float(slope * 1e3), float(np.sqrt(cov[0, 0]) * 1e3)


def biphasic_front(
    rich_fraction: np.ndarray, *, z_um: np.ndarray, time_s: np.ndarray
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
    counts = np.isfinite(frac).sum(axis=2)
    sums = np.nansum(frac, axis=2)
    column = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    rows = np.array([_fit_one(z, prof) for prof in column]).reshape(-1, 3)
    velocity, velocity_err = front_velocity(t, rows[:, 0])
    return FrontResult(t, rows[:, 0], rows[:, 1], rows[:, 2], velocity, velocity_err)
