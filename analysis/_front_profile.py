"""The paper's front: from the depth profile of the Li content, x(z), of per-pixel c.

The paper (main text, Fig. 2f and SI Fig. S4) converts c of LCO⊥ to x with its calibration
line and compares the experimental x(z) profiles across the electrode with a model: "(1)
position of the phase boundary, (2) its constant propagation speed of 10 nm.s⁻¹", and "a
broad interface (6 µm) between Li-rich and Li-poor phases". It does not print an estimator;
ours: the profile is the mean over x of each cathode row's per-pixel c (NaN pixels ignored),
and the front is where it crosses the midpoint between the two phases' c — where the
Li-rich share is one half by the lever rule.

x(c) is linear on each branch of the calibration, so the crossing of the midpoint between the
two phases' x is the crossing of the midpoint between their c: the front does not depend on
the calibration (nor need the Li-rich c = 14.00 Å lie inside its range, 14.03–14.43 Å).

Two passes (`x_profile_front`):

1. **Both phases in view.** Each map's profile is fitted with an erf step between two free
   plateaus, c(z) = c_below + (c_above − c_below)·½(1 + erf((z − z₀)/(√2·w))). A map shows
   both phases when the step is real (|c_above − c_below| ≥ ``min_step_angstrom`` and ≥
   ``min_step_sigma`` of its uncertainty), the profile reaches both sides (below 0.5 −
   ``contrast`` and above 0.5 + ``contrast`` of the step), z₀ lies inside the cathode, and
   its lower plateau lies below the midpoint of the series' plateaus (a step inside the
   Li-poor phase is not the Li-rich phase). The series' two phases at the boundary are the
   medians of these maps' lower (Li-rich: smaller c) and upper plateaus. Physical ground:
   the paper finds the Li-rich phase at equilibrium and the Li-poor one out of equilibrium,
   its c drifting away from the boundary; the upper plateau next to a front is the Li-poor
   phase where it meets the Li-rich one.
2. **Every map: the midpoint crossing.** The midpoint is between the series' two phases,
   in every map: a front near a cathode edge shows one plateau only, and a map's own far
   plateau need not be the phase at the boundary (during discharge the Li-poor side is a
   gradient: its far plateau, 14.18 Å in the twin, put the front 0.8 µm low, the series'
   Li-poor c 0.3 µm high). The price: the Li-poor c drifts during a charge (its plateau
   14.08–14.13 Å over the twin's maps), so a map far from the median is placed up to
   ~0.4 µm off. The front is the profile's crossing of the midpoint, interpolated linearly
   between the rows around it (the steepest crossing if noise adds others): not the erf's
   centre, since the twin's profiles are not symmetric about the boundary (steep on the
   Li-rich side), and nothing makes real ones so. Its side gives the stage: Li-rich below
   (charge) or above (discharge). It is reported only with at least ``min_side_rows`` rows
   on each side lying ≥ ``side_sigma`` standard errors of their row mean (scatter over x /
   √n) on their phase's side of the midpoint; a c gradient inside one phase that never comes
   halfway to the Li-rich c is not a two-phase boundary: NaN, flag ``SINGLE_PHASE``
   (`FrontFlag`). The width is the 10–90 % width of an erf between the two phases' c fitted
   to the profile.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erf, erfc

from ._fit_front import (
    CATHODE_Z_UM,
    WIDTH_10_90_PER_SIGMA,
    FrontResult,
    _longest_run,
    front_velocity,
)

__all__ = [
    "FrontFlag",
    "ProfileFrontResult",
    "depth_profile",
    "front_flag_legend",
    "x_profile_front",
]


class FrontFlag(IntEnum):
    """Why a map has no front (product ``front_flag``, legend `front_flag_legend`)."""

    OK = 0
    TOO_FEW_ROWS = 1
    NO_RICH_REFERENCE = 2
    NO_STEP = 3
    SINGLE_PHASE = 4


_FLAG_MEANING = {
    FrontFlag.OK: "front reported",
    FrontFlag.TOO_FEW_ROWS: "fewer than 6 cathode rows with a finite c profile",
    FrontFlag.NO_RICH_REFERENCE: "no map of the series shows both phases: the two phases' c "
    "are unknown",
    FrontFlag.NO_STEP: "the two phases' c differ by less than min_step_angstrom",
    FrontFlag.SINGLE_PHASE: "no two-phase boundary: the profile does not cross the midpoint "
    "between the two phases' c inside the cathode with min_side_rows rows on each side, "
    "each side_sigma standard errors of its row mean beyond it",
}


def front_flag_legend() -> dict[str, str]:
    """``{"<code>": "<NAME>: <meaning>"}`` of `FrontFlag` for the products' metadata.

    Examples
    --------
    >>> front_flag_legend()["4"].split(":")[0]
    'SINGLE_PHASE'
    """
    return {str(int(code)): f"{code.name}: {text}" for code, text in _FLAG_MEANING.items()}


@dataclass(frozen=True)
class ProfileFrontResult(FrontResult):
    """`FrontResult` plus the profiles it came from.

    ``profile_c_angstrom`` (n_maps, n_z): row means of c (NaN outside the cathode rows);
    ``c_below_angstrom`` / ``c_above_angstrom`` (n_maps,): plateaus below and above the front
    (the series' two phases, whose midpoint placed the front; NaN where no front); ``flag``
    (n_maps,) `FrontFlag` codes; ``rich_c_angstrom`` / ``poor_c_angstrom``: the series'
    Li-rich and Li-poor c at the boundary (NaN when no map shows both phases).
    """

    profile_c_angstrom: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    c_below_angstrom: np.ndarray = field(default_factory=lambda: np.zeros(0))
    c_above_angstrom: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flag: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    rich_c_angstrom: float = np.nan
    poor_c_angstrom: float = np.nan


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


def _row_sem(values: np.ndarray) -> np.ndarray:
    """Standard error of each row mean (scatter over x / √n); NaN with fewer than 2 pixels."""
    counts = np.isfinite(values).sum(axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(values, axis=-1, ddof=1)
        return np.where(counts >= 2, std / np.sqrt(np.maximum(counts, 1)), np.nan)


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
    """Pass 1, both plateaus free: (z₀, σz₀, 10–90 % width, c_below, c_above) of a profile
    that shows both phases, else NaN."""
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


def _phases(first_pass: np.ndarray) -> tuple[float, float]:
    """The series' Li-rich and Li-poor c at the boundary.

    Medians of the lower and upper plateaus over the maps whose free fit found a step; a
    step whose lower plateau lies above the midpoint of those medians is a gradient inside
    the Li-poor phase, not the Li-rich phase: that map is left out and the medians taken
    again. NaN, NaN when none remains.
    """
    shown = np.isfinite(first_pass[:, 0])
    lower = np.fmin(first_pass[:, 3], first_pass[:, 4])
    upper = np.fmax(first_pass[:, 3], first_pass[:, 4])
    if not shown.any():
        return np.nan, np.nan
    mid = 0.5 * (np.median(lower[shown]) + np.median(upper[shown]))
    shown &= lower < mid
    if not shown.any():
        return np.nan, np.nan
    return float(np.median(lower[shown])), float(np.median(upper[shown]))


def _steepest_crossing(c: np.ndarray, mid: float) -> int | None:
    """Row k where the profile crosses ``mid`` between rows k and k + 1, the steepest of
    several (noise near a plateau adds shallow ones); None without a crossing."""
    d = np.sign(c - mid)
    k = np.flatnonzero(d[:-1] * d[1:] < 0)
    if k.size == 0:
        return None
    return int(k[np.argmax(np.abs(c[k + 1] - c[k]))])


def _crosses(z, c, sem, mid: float, z0: float, side: float, rows: int, n_sigma: float) -> bool:
    """True when ≥ ``rows`` rows on each side of z₀ lie ≥ ``n_sigma`` row standard errors on
    their phase's side of the midpoint (Li-rich: below the midpoint in c)."""
    rich_side = side * (z - z0) < 0
    with np.errstate(invalid="ignore", divide="ignore"):
        away = np.where(rich_side, mid - c, c - mid) / sem
    significant = ~np.isnan(away) & (away >= n_sigma)  # noise-free rows: ±inf
    n_rich = int((significant & rich_side).sum())
    return n_rich >= rows and int((significant & ~rich_side).sum()) >= rows


def _width_um(z, c, rich: float, poor: float, side: float, z_front: float) -> float:
    """10–90 % width of an erf step between the two phases' c fitted to the profile."""

    def model(z: np.ndarray, z0: float, w: float) -> np.ndarray:
        return poor + (rich - poor) * 0.5 * erfc(side * (z - z0) / (np.sqrt(2.0) * w))

    span = float(z[-1] - z[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(
                model, z, c, p0=(z_front, 1.0), bounds=((z[0], 0.05), (z[-1], span))
            )
    except (RuntimeError, ValueError):
        return np.nan
    return float(WIDTH_10_90_PER_SIGMA * popt[1])


def _locate(z, c, sem, phases, bounds, criteria) -> tuple[tuple[float, ...], FrontFlag]:
    """Pass 2 of one profile: ((z_front, σ, width, c_below, c_above), flag)."""
    min_step, rows, n_sigma = criteria
    ok = np.isfinite(c) & (z >= bounds[0]) & (z <= bounds[1])
    z, c, sem = z[ok], c[ok], sem[ok]
    rich, poor = phases
    if z.size < 6:
        return _NO_FRONT, FrontFlag.TOO_FEW_ROWS
    if not np.isfinite(rich):
        return _NO_FRONT, FrontFlag.NO_RICH_REFERENCE
    if not poor - rich >= min_step:
        return _NO_FRONT, FrontFlag.NO_STEP
    mid = 0.5 * (rich + poor)
    k = _steepest_crossing(c, mid)
    if k is None:
        return _NO_FRONT, FrontFlag.SINGLE_PHASE
    side = 1.0 if c[k] < mid else -1.0  # +1: Li-rich below the front (charge)
    u = (mid - c[k]) / (c[k + 1] - c[k])
    z_front = float(z[k] + u * (z[k + 1] - z[k]))
    if not _crosses(z, c, sem, mid, z_front, side, rows, n_sigma):
        return _NO_FRONT, FrontFlag.SINGLE_PHASE
    err = (z[k + 1] - z[k]) * np.hypot((1 - u) * sem[k], u * sem[k + 1]) / abs(c[k + 1] - c[k])
    width = _width_um(z, c, rich, poor, side, z_front)
    below, above = (rich, poor) if side > 0 else (poor, rich)
    return (z_front, float(err), width, below, above), FrontFlag.OK


def x_profile_front(
    c_angstrom: np.ndarray,
    *,
    z_um: np.ndarray,
    time_s: np.ndarray,
    cathode_z_um: tuple[float, float] | None = CATHODE_Z_UM,
    contrast: float = 0.2,
    min_step_angstrom: float = 0.02,
    min_step_sigma: float = 5.0,
    min_side_rows: int = 1,
    side_sigma: float = 3.0,
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
        Pass 1: a map shows both phases when its profile reaches 0.5 − contrast and
        0.5 + contrast of its free step, [0, 0.5).
    min_step_angstrom : float, optional
        Smallest c difference between the two phases (Å, > 0); LCO∥ changes by 0.04 Å.
    min_step_sigma : float, optional
        The step must exceed this many of its standard uncertainties (> 0).
    min_side_rows : int, optional
        Pass 2: rows needed on each side of the midpoint crossing (≥ 1).
    side_sigma : float, optional
        Pass 2: standard errors of a row mean by which a row must lie on its side (> 0).
    time_window_s : (float, float) or None, optional
        Maps inside enter the speed; None: the longest run of consecutive maps with a front
        on the same side (Li-rich below: charge; above: discharge).

    Returns
    -------
    ProfileFrontResult

    Examples
    --------
    >>> from scipy.special import erf
    >>> z, t = np.arange(0.0, 20.0), np.array([0.0, 300.0, 600.0])
    >>> z0 = 15 - 0.01 * t[:, None]
    >>> c = 14.03 + 0.1 * 0.5 * (1 + erf((z[None] - z0) / (np.sqrt(2) * 2.0)))
    >>> noise = np.random.default_rng(0).normal(0, 1e-3, (3, 20, 4))
    >>> res = x_profile_front(c[:, :, None] + noise, z_um=z, time_s=t)
    >>> print(np.round(res.position_um, 1), round(res.velocity_nm_per_s, 1))
    [15. 12.  9.] -10.0
    """
    c, z, t = (np.asarray(a, dtype=float) for a in (c_angstrom, z_um, time_s))
    bounds = _check(c, z, t, cathode_z_um, contrast, time_window_s)
    _check_criteria(min_step_angstrom, min_step_sigma, min_side_rows, side_sigma)
    profile = depth_profile(c)
    profile[:, (z < bounds[0]) | (z > bounds[1])] = np.nan
    sem = _row_sem(c)
    args = (bounds, contrast, min_step_angstrom, min_step_sigma)
    first = np.array([_fit_map(z, p, *args) for p in profile]).reshape(-1, 5)
    series = _phases(first)
    criteria = (min_step_angstrom, min_side_rows, side_sigma)
    fits = [_locate(z, p, s, series, bounds, criteria) for p, s in zip(profile, sem, strict=True)]
    rows = np.array([r for r, _ in fits], dtype=float).reshape(-1, 5)
    flag = np.array([f for _, f in fits], dtype=np.uint8)
    used, speed, speed_err, window = _speed(t, rows, time_window_s)
    return ProfileFrontResult(
        t, rows[:, 0], rows[:, 1], rows[:, 2], speed, speed_err, used, window,
        profile_c_angstrom=profile, c_below_angstrom=rows[:, 3], c_above_angstrom=rows[:, 4],
        flag=flag, rich_c_angstrom=series[0], poor_c_angstrom=series[1],
    )  # fmt: skip


def _speed(t, rows, time_window_s):
    """(used, speed, its error, time window) over the longest run or the caller's window.

    A run is consecutive maps with a front on the same side: the Li-rich phase below it
    (charge) or above it (discharge), never one stage's maps with the other's.
    """
    position = rows[:, 0]
    valid = np.isfinite(position)
    if time_window_s is None:
        rich_below = rows[:, 3] < rows[:, 4]
        runs = [_longest_run(valid & rich_below), _longest_run(valid & ~rich_below)]
        used = max(runs, key=lambda run: int(run.sum()))
    else:
        used = valid & (t >= time_window_s[0]) & (t <= time_window_s[1])
    speed, speed_err = front_velocity(t, np.where(used, position, np.nan))
    window = (float(t[used].min()), float(t[used].max())) if used.any() else (np.nan, np.nan)
    return used, speed, speed_err, window


def _check_criteria(min_step, min_step_sigma, min_side_rows, side_sigma) -> None:
    if not (min_step > 0 and min_step_sigma > 0):
        raise ValueError(
            f"min_step_angstrom and min_step_sigma must be > 0, got {min_step!r}, "
            f"{min_step_sigma!r}"
        )
    if not (int(min_side_rows) == min_side_rows and min_side_rows >= 1 and side_sigma > 0):
        raise ValueError(
            f"min_side_rows must be an integer >= 1 and side_sigma > 0, got "
            f"{min_side_rows!r}, {side_sigma!r}"
        )


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
