"""The paper's front: from the depth profile of the Li content, x(z), of per-pixel c.

The paper (main text, Fig. 2f and SI Fig. S4) converts c of LCO⊥ to x with its calibration
line and compares the experimental x(z) profiles across the electrode with a model: "(1)
position of the phase boundary, (2) its constant propagation speed of 10 nm.s⁻¹", and "a
broad interface (6 µm) between Li-rich and Li-poor phases". It does not print an estimator;
ours, per map:

1. the profile: mean over x of each cathode row's per-pixel c (NaN pixels ignored);
2. a step between two plateaus is fitted to it,
   c(z) = c_below + (c_above − c_below)·½(1 + erf((z − z₀)/(√2·w))), w > 0;
   the plateaus are the two phases' c (fitted, not assumed: the Li-poor phase is out of
   equilibrium, its c drifts);
3. the front is z₀, where the profile crosses the midpoint between the two phases, and the
   interface width the 10–90 % distance 2.563·w.

x(c) is linear on each branch of the calibration, so the crossing of the midpoint between the
two phases' x is the crossing of the midpoint between their c: the front does not depend on
the calibration (nor need the Li-rich c = 14.00 Å lie inside its range, 14.03–14.43 Å).

A front is reported only if the step is real (|c_above − c_below| ≥ ``min_step_angstrom`` and
≥ ``min_step_sigma`` of its uncertainty), the profile reaches both sides (below 0.5 −
``contrast`` and above 0.5 + ``contrast`` of the step), and z₀ lies inside the cathode.
The speed: `front_velocity` over the longest run of consecutive maps with a front.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erf

from ._fit_front import (
    CATHODE_Z_UM,
    WIDTH_10_90_PER_SIGMA,
    FrontResult,
    _longest_run,
    front_velocity,
)

__all__ = ["ProfileFrontResult", "depth_profile", "x_profile_front"]


@dataclass(frozen=True)
class ProfileFrontResult(FrontResult):
    """`FrontResult` plus the profiles it came from.

    ``profile_c_angstrom`` (n_maps, n_z): row means of c (NaN outside the cathode rows);
    ``c_below_angstrom`` / ``c_above_angstrom`` (n_maps,): fitted plateaus below and above
    the front (NaN where no front).
    """

    profile_c_angstrom: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    c_below_angstrom: np.ndarray = field(default_factory=lambda: np.zeros(0))
    c_above_angstrom: np.ndarray = field(default_factory=lambda: np.zeros(0))


def depth_profile(values: np.ndarray) -> np.ndarray:
    """Mean over x of each row, NaN ignored: (n_maps, n_z, n_x) → (n_maps, n_z).

    Examples
    --------
    >>> depth_profile(np.array([[[1.0, np.nan], [2.0, 4.0]]])).tolist()
    [[1.0, 3.0]]
    """
    values = np.asarray(values, dtype=float)
    counts = np.isfinite(values).sum(axis=-1)
    sums = np.nansum(values, axis=-1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _step(z: np.ndarray, z0: float, w: float, below: float, above: float) -> np.ndarray:
    return below + (above - below) * 0.5 * (1.0 + erf((z - z0) / (np.sqrt(2.0) * w)))


_NO_FRONT = (np.nan,) * 5


def _start(z: np.ndarray, c: np.ndarray) -> tuple[float, float, float, float]:
    below, above = float(c[:3].mean()), float(c[-3:].mean())
    f = (c - below) / (above - below) if above != below else np.zeros_like(c)
    crossing = np.flatnonzero((f[:-1] < 0.5) != (f[1:] < 0.5))
    k = int(crossing[np.argmin(np.abs(crossing - c.size / 2))]) if crossing.size else c.size // 2
    return float(z[k]), 1.0, below, above


def _fit_map(z, c, bounds, contrast, min_step, min_step_sigma):
    """(z₀, σz₀, 10–90 % width, c_below, c_above) of one profile, NaN when no front."""
    ok = np.isfinite(c) & (z >= bounds[0]) & (z <= bounds[1])
    z, c = z[ok], c[ok]
    if z.size < 6:
        return _NO_FRONT
    span = float(z[-1] - z[0])
    lo = (z[0], 0.05, -np.inf, -np.inf)
    hi = (z[-1], span, np.inf, np.inf)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            popt, pcov = curve_fit(_step, z, c, p0=_start(z, c), bounds=(lo, hi))
    except (RuntimeError, ValueError, OptimizeWarning):
        return _NO_FRONT
    z0, w, below, above = popt
    step = above - below
    step_err = np.sqrt(max(pcov[2, 2] + pcov[3, 3] - 2 * pcov[2, 3], 0.0))
    f = (c - below) / step if step != 0 else np.zeros_like(c)
    real = abs(step) >= min_step and abs(step) >= min_step_sigma * step_err
    both_sides = f.min() <= 0.5 - contrast and f.max() >= 0.5 + contrast
    if not (real and both_sides and np.all(np.isfinite(pcov)) and bounds[0] <= z0 <= bounds[1]):
        return _NO_FRONT
    return float(z0), float(np.sqrt(pcov[0, 0])), WIDTH_10_90_PER_SIGMA * w, below, above


def x_profile_front(
    c_angstrom: np.ndarray,
    *,
    z_um: np.ndarray,
    time_s: np.ndarray,
    cathode_z_um: tuple[float, float] | None = CATHODE_Z_UM,
    contrast: float = 0.2,
    min_step_angstrom: float = 0.02,
    min_step_sigma: float = 5.0,
    time_window_s: tuple[float, float] | None = None,
) -> ProfileFrontResult:
    """Front position, width and speed from per-pixel c maps (the paper's x(z) method).

    Parameters
    ----------
    c_angstrom : (n_maps, n_z, n_x) array of float
        c per pixel of one family (Å), NaN where not reported.
    z_um : (n_z,) array of float
        Height of each row (µm), strictly increasing.
    time_s : (n_maps,) array of float
        Experiment time of each map (s).
    cathode_z_um : (float, float) or None, optional
        Rows inside [bottom, top] (µm) form the profile; the front must lie inside.
    contrast : float, optional
        The profile must reach 0.5 − contrast and 0.5 + contrast of the fitted step, [0, 0.5).
    min_step_angstrom : float, optional
        Smallest c difference between the two phases (Å, > 0); LCO∥ changes by 0.04 Å.
    min_step_sigma : float, optional
        The step must exceed this many of its standard uncertainties (> 0).
    time_window_s : (float, float) or None, optional
        Maps inside enter the speed; None: the longest run of consecutive maps with a front.

    Returns
    -------
    ProfileFrontResult

    Examples
    --------
    >>> from scipy.special import erf
    >>> z, t = np.arange(0.0, 20.0), np.array([0.0, 300.0, 600.0])
    >>> z0 = 15 - 0.01 * t[:, None]
    >>> c = 14.03 + 0.1 * 0.5 * (1 + erf((z[None] - z0) / (np.sqrt(2) * 2.0)))
    >>> res = x_profile_front(np.repeat(c[:, :, None], 4, axis=2), z_um=z, time_s=t)
    >>> print(np.round(res.position_um, 3), round(res.velocity_nm_per_s, 3))
    [15. 12.  9.] -10.0
    """
    c, z, t = (np.asarray(a, dtype=float) for a in (c_angstrom, z_um, time_s))
    bounds = _check(c, z, t, cathode_z_um, contrast, time_window_s)
    if not (min_step_angstrom > 0 and min_step_sigma > 0):
        raise ValueError(
            f"min_step_angstrom and min_step_sigma must be > 0, got {min_step_angstrom!r}, "
            f"{min_step_sigma!r}"
        )
    profile = depth_profile(c)
    profile[:, (z < bounds[0]) | (z > bounds[1])] = np.nan
    args = (bounds, contrast, min_step_angstrom, min_step_sigma)
    rows = np.array([_fit_map(z, p, *args) for p in profile]).reshape(-1, 5)
    valid = np.isfinite(rows[:, 0])
    if time_window_s is None:
        used = _longest_run(valid)
    else:
        used = valid & (t >= time_window_s[0]) & (t <= time_window_s[1])
    speed, speed_err = front_velocity(t, np.where(used, rows[:, 0], np.nan))
    window = (float(t[used].min()), float(t[used].max())) if used.any() else (np.nan, np.nan)
    return ProfileFrontResult(
        t, rows[:, 0], rows[:, 1], rows[:, 2], speed, speed_err, used, window,
        profile_c_angstrom=profile, c_below_angstrom=rows[:, 3], c_above_angstrom=rows[:, 4],
    )  # fmt: skip


def _check(c, z, t, cathode_z_um, contrast, time_window_s) -> tuple[float, float]:
    """Validate the `x_profile_front` inputs; return the cathode bounds."""
    if c.ndim != 3 or c.shape[1] != z.size or c.shape[0] != t.size:
        raise ValueError(
            f"c_angstrom must be (n_maps, n_z, n_x) = ({t.size}, {z.size}, n_x), got {c.shape}"
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
    return bounds
