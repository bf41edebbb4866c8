"""Why a per-pixel value is NaN: one uint8 code per pixel and product, and coverage.

Codes (stored as uint8, documented in the products' metadata under ``pixel_flags``):

====  ================  =================================================================
code  name              meaning
====  ================  =================================================================
0     OK                value reported
1     MASKED            no data: too few finite profile bins (masked / missing frame)
2     ABSENT            reflection absent: no peak significant against the local
                        background noise, or none centred inside the profile window
                        with a width inside the fit's bounds (e.g. a neighbour's tail)
3     FAINT             significant but below ``min_relative_area`` of the map's strong
                        peaks: signal from outside the family's volume (interface rows)
4     FIT_FAILED        the fit did not converge
5     OUT_OF_RANGE      x_Li only: c outside the calibrated range (never clamped)
6     NO_CALIBRATION    x_Li only: no calibration for this family
7     NO_C              x_Li only: c itself is not reported (see the c flag)
====  ================  =================================================================
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .fitting import FitFlag

__all__ = ["PixelFlag", "coverage", "peak_flags", "pixel_flag_legend"]


class PixelFlag(IntEnum):
    """Per-pixel reason code of a lattice / x_Li product (see the module table)."""

    OK = 0
    MASKED = 1
    ABSENT = 2
    FAINT = 3
    FIT_FAILED = 4
    OUT_OF_RANGE = 5
    NO_CALIBRATION = 6
    NO_C = 7


_MEANING = {
    PixelFlag.OK: "value reported",
    PixelFlag.MASKED: "no data (too few finite profile bins: masked or missing frame)",
    PixelFlag.ABSENT: "reflection absent: no peak significant against the local background "
    "noise, or none centred inside the profile window with a width inside the fit bounds",
    PixelFlag.FAINT: "significant but below min_relative_area of the map's strong peaks",
    PixelFlag.FIT_FAILED: "the fit did not converge",
    PixelFlag.OUT_OF_RANGE: "c outside the calibrated range of x(c) (not clamped)",
    PixelFlag.NO_CALIBRATION: "no x(c) calibration for this family",
    PixelFlag.NO_C: "c not reported for this pixel (see the c flag)",
}


def pixel_flag_legend() -> dict[str, str]:
    """``{"<code>": "<NAME>: <meaning>"}`` for the products' metadata.

    Examples
    --------
    >>> pixel_flag_legend()["2"].split(":")[0]
    'ABSENT'
    """
    return {str(int(code)): f"{code.name}: {text}" for code, text in _MEANING.items()}


def coverage(flags: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Share of pixels flagged OK, per map, over the selected rows.

    Parameters
    ----------
    flags : (n_maps, n_z, n_x) array of uint8
        `PixelFlag` codes.
    rows : (n_z,) array of bool, optional
        Rows that belong to the family's layer (e.g. the cathode); None: all rows.

    Returns
    -------
    (n_maps,) array of float
        OK pixels / selected pixels, in [0, 1]; NaN when no row is selected.

    Examples
    --------
    >>> f = np.array([[[0, 0], [2, 0]], [[5, 5], [0, 0]]], np.uint8)
    >>> coverage(f).tolist(), coverage(f, np.array([True, False])).tolist()
    ([0.75, 0.5], [1.0, 0.0])
    """
    flags = np.asarray(flags)
    if flags.ndim != 3:
        raise ValueError(f"flags must be (n_maps, n_z, n_x), got shape {flags.shape}")
    rows = np.ones(flags.shape[1], bool) if rows is None else np.asarray(rows, bool)
    if rows.shape != (flags.shape[1],):
        raise ValueError(f"rows must be ({flags.shape[1]},) bool, got shape {rows.shape}")
    selected = flags[:, rows, :]
    if selected.size == 0:
        return np.full(flags.shape[0], np.nan)
    return (selected == PixelFlag.OK).mean(axis=(1, 2))


def peak_flags(
    fit_flag: np.ndarray,
    significance: np.ndarray,
    centred: np.ndarray,
    relative_ok: np.ndarray,
    *,
    min_sigma: float,
) -> np.ndarray:
    """`PixelFlag` of each single-peak fit (uint8, shape of the inputs).

    Parameters
    ----------
    fit_flag : array of uint8
        `opmap.analysis.fitting.FitFlag` of each fit.
    significance, centred : arrays
        From `opmap.analysis.fitting.peak_significance`.
    relative_ok : array of bool
        The peak reaches ``min_relative_area`` of the map's strong peaks.
    min_sigma : float
        Significance a present peak needs (> 0).

    Returns
    -------
    array of uint8
        MASKED (no data); ABSENT (no significant peak: significance below ``min_sigma``,
        not centred in the window, or the fit's position / width out of range); FIT_FAILED
        (not converged); FAINT; else OK.

    Examples
    --------
    >>> flags = peak_flags(np.array([0, 0, 0, 4, 5], np.uint8), np.array([9.0, 3.0, 9.0, 0, 0]),
    ...                    np.ones(5, bool), np.array([True, True, False, False, False]),
    ...                    min_sigma=5.0)
    >>> [PixelFlag(f).name for f in flags]
    ['OK', 'ABSENT', 'FAINT', 'MASKED', 'FIT_FAILED']
    """
    if not min_sigma > 0:
        raise ValueError(f"min_sigma must be > 0, got {min_sigma!r}")
    fit_flag = np.asarray(fit_flag)
    out = np.full(fit_flag.shape, PixelFlag.OK, np.uint8)
    with np.errstate(invalid="ignore"):
        significant = np.asarray(significance) >= min_sigma
    out[~np.asarray(relative_ok, bool)] = PixelFlag.FAINT
    out[~(significant & np.asarray(centred, bool))] = PixelFlag.ABSENT
    out[fit_flag == FitFlag.NOT_CONVERGED] = PixelFlag.FIT_FAILED
    out[np.isin(fit_flag, (FitFlag.WEAK, FitFlag.NO_PEAK, FitFlag.OUT_OF_RANGE))] = (
        PixelFlag.ABSENT
    )
    out[fit_flag == FitFlag.NAN_INPUT] = PixelFlag.MASKED
    return out
