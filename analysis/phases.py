"""Phase-intensity maps, layer boundaries, the Ti collector position and the Li thickness.

The Li metal grows *under* the Ti collector, so the Ti layer (and everything above) rises by
the Li thickness: thickness(t, x) = z_Ti(t, x) − z_Ti(reference map, x).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from .lattice import frames_to_maps

__all__ = [
    "LI_MOLAR_VOLUME_CM3_PER_MOL",
    "TiFlag",
    "electrochemical_li_thickness_um",
    "layer_boundaries",
    "li_thickness_from_ti",
    "peak_above_background",
    "phase_maps",
    "stack_displacement",
    "stack_profile",
    "ti_flag_legend",
    "ti_flags",
    "ti_position",
]

FARADAY_C_PER_MOL = 96485.33212
#: Rows each side of a column's maximum left out of its map's noise and background
#: (`ti_flags`): the 0.5 µm Ti layer under a 1 µm beam lights the row of the maximum and at
#: most one neighbour strongly (its tails, ~1 % of the peak on the twin, stay in).
_NOISE_GAP_ROWS = 1
#: Rows beyond those on each side whose median is the column's own background level.
_FLANK_ROWS = 2
#: Column pairs for the noise (`_neighbour_differences`): up to this many columns apart.
_PAIR_OFFSETS = 4
#: The local σ (`_local_noise`): rows within this many of a column's maximum are its layer
#: (the 0.5 µm Ti's tails reach ~2 rows), the next `_LOCAL_ROWS` on each side its noise.
_LOCAL_GAP_ROWS = 2
_LOCAL_ROWS = 5
#: A pair of columns loses its offset (`_without_pair_offset`) only over this many rows.
_MIN_PAIR_ROWS = 10
#: The width test of `ti_flags` never asks a layer to be narrower than this many rows:
#: one thinner than a row lights two at most, its half height half a row into the dark
#: rows on each side.
_MIN_WIDTH_ROWS = 3.0
#: Li metal: 6.941 g/mol / 0.534 g/cm³
LI_MOLAR_VOLUME_CM3_PER_MOL = 6.941 / 0.534


def phase_maps(
    bands: Mapping[str, np.ndarray],
    *,
    n_z: int,
    n_x: int,
    snake: bool = False,
    percentiles: tuple[float, float] = (1.0, 99.5),
) -> dict[str, np.ndarray]:
    """Normalised intensity maps (0–1) of each band, map by map.

    Parameters
    ----------
    bands : mapping name -> (n_frames,) array
        Band intensities per frame, e.g. ``"lco_003"``, ``"ti_100"``, ``"au_111"``,
        ``"li_110"``, ``"parylene"``.
    n_z, n_x, snake
        Map layout (see `opmap.analysis.lattice.frames_to_maps`).
    percentiles : (float, float), optional
        Per map, the low percentile maps to 0 and the high one to 1 (robust against hot
        frames); values are clipped to [0, 1]. NaN frames stay NaN.

    Returns
    -------
    dict name -> (n_maps, n_z, n_x) float array

    Examples
    --------
    >>> m = phase_maps({"ti_100": np.array([0.0, 5.0, 10.0, 10.0])}, n_z=2, n_x=2,
    ...                percentiles=(0, 100))
    >>> m["ti_100"][0].tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    out = {}
    for name, values in bands.items():
        maps = frames_to_maps(np.asarray(values, dtype=float), n_z=n_z, n_x=n_x, snake=snake)
        flat = maps.reshape(maps.shape[0], -1)
        lo = np.nanpercentile(flat, lo_p, axis=1)[:, None, None]
        hi = np.nanpercentile(flat, hi_p, axis=1)[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(hi > lo, (maps - lo) / (hi - lo), 0.0)
        out[name] = np.where(np.isfinite(maps), np.clip(norm, 0.0, 1.0), np.nan)
    return out


def layer_boundaries(
    phase_map: np.ndarray, *, z_um: np.ndarray, level: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper z where each column's intensity crosses ``level`` × its maximum.

    Parameters
    ----------
    phase_map : (..., n_z, n_x) array of float
        Normalised (or raw) intensity of one layer.
    z_um : (n_z,) array of float
        Row heights (µm), increasing.
    level : float, optional
        Fraction of the column maximum defining the edge (0.5: half maximum).

    Returns
    -------
    lower_um, upper_um : (..., n_x) arrays
        Sub-pixel edges by linear interpolation; NaN for an empty column or an edge at the
        map border.

    Examples
    --------
    >>> col = np.array([0, 0, 1, 2, 2, 2, 1, 0, 0.0])[:, None]
    >>> lo, hi = layer_boundaries(col, z_um=np.arange(9.0))
    >>> print(lo, hi)
    [2.] [6.]
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = np.moveaxis(np.asarray(phase_map, dtype=float), -2, -1)  # (..., n_x, n_z)
    z = np.asarray(z_um, dtype=float)
    if a.shape[-1] != z.size:
        raise ValueError(f"z_um must have {a.shape[-1]} entries, got {z.size}")
    with np.errstate(invalid="ignore"):
        thr = level * np.nanmax(np.where(np.isfinite(a), a, -np.inf), axis=-1, keepdims=True)
    above = np.where(np.isfinite(a), a, -np.inf) >= thr
    n = z.size
    first = np.argmax(above, axis=-1)
    last = n - 1 - np.argmax(above[..., ::-1], axis=-1)
    lower = _crossing(a, z, thr[..., 0], first - 1, first)
    upper = _crossing(a, z, thr[..., 0], last + 1, last)
    valid = np.isfinite(thr[..., 0]) & (thr[..., 0] > 0)
    return np.where(valid, lower, np.nan), np.where(valid, upper, np.nan)


def _crossing(a, z, thr, i_out, i_in):
    inside = (i_out >= 0) & (i_out < z.size)
    i_o = np.clip(i_out, 0, z.size - 1)
    v_out = np.take_along_axis(a, i_o[..., None], -1)[..., 0]
    v_in = np.take_along_axis(a, i_in[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (thr - v_out) / (v_in - v_out)
    zc = z[i_o] + frac * (z[i_in] - z[i_o])
    return np.where(inside & np.isfinite(v_out), zc, np.nan)


def peak_above_background(profile: np.ndarray, *, edge_bins: int = 3) -> np.ndarray:
    """Peak intensity of each q profile above a straight background through its end bins.

    A band's mean intensity holds, besides its peak, whatever scatters smoothly in q there:
    the amorphous halo of the layer beside it (LiPON under the pristine Ti), the flat and
    q-dependent background. That background steps from one layer to the next, and a step
    under one side of the Ti profile in z pulls its centroid towards the brighter side
    (−0.3 µm on the pristine twin map, where LiPON lies directly under the Ti). The peak
    above a line through the profile's ``edge_bins`` first and last bins keeps the
    reflection's own intensity only; peak tails in the end bins remove a fixed share of
    the peak, which does not move a centroid.

    Parameters
    ----------
    profile : (..., n_q) array of float
        Intensity per q bin around one reflection (e.g. ``reference:ti_100``), the peak
        inside, its ends on the background; NaN bins (no pixels) are ignored.
    edge_bins : int, optional
        Bins at each end defining the background line (>= 1, 2·edge_bins < n_q).

    Returns
    -------
    (...,) array of float
        Summed intensity above the line over the inner bins (NaN where an end has no bin).

    Examples
    --------
    >>> q = np.arange(24.0)
    >>> peak = np.exp(-0.5 * ((q - 11.5) / 2.0) ** 2)
    >>> halo = 5.0 - 0.1 * q  # a sloping background
    >>> print(np.round(peak_above_background(np.stack([peak, 3 * peak + halo])), 3))
    [ 5.013 15.039]
    """
    p = np.asarray(profile, dtype=float)
    n_q = p.shape[-1]
    if not (isinstance(edge_bins, int | np.integer) and edge_bins >= 1 and 2 * edge_bins < n_q):
        raise ValueError(f"edge_bins must be an integer in [1, {(n_q - 1) // 2}], got {edge_bins}")
    centre = np.arange(n_q, dtype=float)
    x_lo, x_hi = centre[:edge_bins].mean(), centre[-edge_bins:].mean()
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN ends give NaN, as documented
        lo = np.nanmean(p[..., :edge_bins], axis=-1, keepdims=True)
        hi = np.nanmean(p[..., -edge_bins:], axis=-1, keepdims=True)
    line = lo + (hi - lo) * (centre - x_lo) / (x_hi - x_lo)
    inner = (p - line)[..., edge_bins:-edge_bins]
    net = np.nansum(inner, axis=-1)
    return np.where(np.isfinite(lo[..., 0] + hi[..., 0]), net, np.nan)


class TiFlag(IntEnum):
    """Why a column has no Ti position (product ``ti_flag``, legend `ti_flag_legend`)."""

    OK = 0
    NO_DATA = 1
    ABSENT = 2
    NOT_BRACKETED = 3
    TOO_WIDE = 4


_TI_FLAG_MEANING = {
    TiFlag.OK: "Ti position reported",
    TiFlag.NO_DATA: "no finite value above 0 in the column",
    TiFlag.ABSENT: "no Ti layer: the column's maximum is not ti_min_significance times "
    "the frame-to-frame scatter (the map's, or of the rows around it where larger) above "
    "its background (the map's median or its own level beside it, the higher) (a map "
    "whose z range holds no Ti)",
    TiFlag.NOT_BRACKETED: "the maximum lies within the centroid window of the map's first "
    "or last row: the map stops at the layer, whose position it does not bracket",
    TiFlag.TOO_WIDE: "the maximum is wider than a layer: above the column's lower level "
    "beyond layer_max_fwhm_um, it stays over half its height across more than that width "
    "(and 3 rows): another, thicker layer's scattering into the band (the cathode's in the "
    "Au band), or the corner of a plateau",
}


def ti_flag_legend() -> dict[str, str]:
    """``{"<code>": "<NAME>: <meaning>"}`` of `TiFlag` for the products' metadata.

    Examples
    --------
    >>> ti_flag_legend()["2"].split(":")[0]
    'ABSENT'
    """
    return {str(int(code)): f"{code.name}: {text}" for code, text in _TI_FLAG_MEANING.items()}


def ti_flags(
    ti_map: np.ndarray,
    *,
    half_window: int = 2,
    method: str = "centroid",
    min_significance: float = 5.0,
    z_um: np.ndarray | None = None,
    max_fwhm_um: float | None = None,
) -> np.ndarray:
    """`TiFlag` of every column: does it show a Ti layer whose position the map brackets?

    A column shows the layer where its maximum stands ``min_significance`` σ above its
    background, σ being the map's frame-to-frame noise. Both are measured on the map
    itself, on the values more than one row from their column's maximum (the rows of the
    layer left out):

    - σ from the differences between the columns of a row (pairs up to 4 columns apart:
      all pairs of a map of up to 5 columns; the same layers,
      so the layers' structure along z cancels and only the frames' noise is left; a
      pair compared over 10 rows or more first loses its median difference, the offset
      between two columns' background levels):
      1.4826 × their median absolute value / √2, pooled over the map's rows (a short map,
      8 rows, leaves too few rows per column for a scatter of its own); a map of one
      column uses the differences between neighbouring rows. Where the noise grows with
      the intensity (Poisson), the pooled σ is that of the quietest rows, so each column
      takes the larger of it and the σ of the 5 rows each side of its maximum beyond 2
      (differences to its neighbours there, their own layer rows left out).
    - The background is the higher of the map's median and the column's own level on
      either side of the layer (median of the 2 rows beyond, below and above): a layer
      on a background that steps between the layers below and above it must stand above
      the higher step, and a plateau of background wider than the window is no peak.

    Pure Gaussian noise, simulated (`tests/analysis/test_ti_presence.py`): 5 σ lets a
    column of noise through with a probability of about 1.5e-3 in an 8 × 5 or 16 × 3 map,
    2e-4 in 16 × 5, below 1e-5 in 49 × 49 (none of 720 000 columns), but 2.5e-2 in 8 × 2
    (the σ of few values is less certain); a Ti layer stands hundreds of σ above the noise.

    Parameters
    ----------
    ti_map : (..., n_z, n_x) array of float
        As for `ti_position`; each (n_z, n_x) is one map, its own noise.
    half_window, method
        As for `ti_position` (the rows the maximum must keep from the map's ends).
    min_significance : float, optional
        σ the column maximum needs above its background (>= 0; default 5, a detection
        threshold: see above). 0: any maximum above its background.
    z_um : (n_z,) array of float, optional
        Row heights (µm), equally spaced; needed with ``max_fwhm_um``.
    max_fwhm_um : float or None, optional
        The width test (> 0; None, the default: none): a layer's excess falls to half
        its height within this full width (µm), or within 3 rows where the rows are
        coarser (a layer thinner than a row lights two at most, and its half height lies
        half a row into the dark rows on each side). The excess is over the
        column's level just beyond that width (the lower side: a layer on a step passes
        where it stands higher above the step than the step itself). A thicker layer
        scattering into the band (the cathode's (006) in the Au (111) band) gives a broad
        maximum, or the corner of a plateau, that can stand many σ above its near flanks,
        and is no layer. A map reaching no row beyond that width on either side is not
        tested.

    Returns
    -------
    (..., n_x) array of uint8
        NO_DATA (no finite value above 0), ABSENT (maximum within the noise; also where
        no value is left to measure the noise: a map of too few rows), NOT_BRACKETED
        (a significant maximum within ``half_window`` rows of the first or last row, 1 for
        ``"gaussian"``), TOO_WIDE (a significant maximum wider than ``max_fwhm_um``), else
        OK.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(0.0, 1.0, (12, 6))  # a map without Ti: 12 rows, 6 columns
    >>> [TiFlag(f).name for f in ti_flags(noise)]
    ['ABSENT', 'ABSENT', 'ABSENT', 'ABSENT', 'ABSENT', 'ABSENT']
    >>> layer = 20.0 * np.exp(-0.5 * ((np.arange(12.0) - 5.3) / 0.6) ** 2)[:, None]
    >>> ti_flags(noise + layer).tolist()  # the same noise under a Ti layer of 20 σ
    [0, 0, 0, 0, 0, 0]

    A maximum 6 rows wide stands as many σ above its flanks, but is no 1 µm layer seen
    by a 1 µm beam (rows of 1 µm):

    >>> broad = 30.0 * np.exp(-0.5 * ((np.arange(12.0) - 5.3) / 2.5) ** 2)[:, None]
    >>> z = np.arange(12.0)
    >>> ti_flags(noise + broad).tolist(), ti_flags(noise + broad, z_um=z, max_fwhm_um=3.0)[0]
    ([0, 0, 0, 0, 0, 0], np.uint8(4))
    >>> ti_flags(noise + layer, z_um=z, max_fwhm_um=3.0).tolist()
    [0, 0, 0, 0, 0, 0]
    """
    if method not in ("centroid", "centroid_line", "gaussian"):
        raise ValueError(
            f"method must be 'centroid', 'centroid_line' or 'gaussian', got {method!r}"
        )
    if half_window < 1:
        raise ValueError(f"half_window must be >= 1, got {half_window}")
    if not (np.isfinite(min_significance) and min_significance >= 0):
        raise ValueError(f"min_significance must be finite and >= 0, got {min_significance}")
    row_um = _row_step_um(z_um, np.shape(ti_map)[-2], max_fwhm_um)
    a = np.moveaxis(np.asarray(ti_map, dtype=float), -2, -1)  # (..., n_x, n_z)
    if a.ndim < 2:
        raise ValueError(f"ti_map must be (..., n_z, n_x), got shape {a.shape}")
    filled = np.where(np.isfinite(a), a, -np.inf)
    peak, top = np.argmax(filled, axis=-1), np.max(filled, axis=-1)
    background, sigma = _background_and_noise(a, peak)
    with np.errstate(invalid="ignore"):
        significant = top > background + min_significance * sigma
    reach = 1 if method == "gaussian" else half_window
    n_z = a.shape[-1]
    out = np.full(top.shape, TiFlag.OK, np.uint8)
    if max_fwhm_um is not None:
        max_rows = max(max_fwhm_um / row_um, _MIN_WIDTH_ROWS)
        out[_excess_fwhm_rows(a, peak, max_rows) > max_rows] = TiFlag.TOO_WIDE
    out[(peak < reach) | (peak > n_z - 1 - reach)] = TiFlag.NOT_BRACKETED
    out[~significant] = TiFlag.ABSENT
    out[~np.isfinite(top) | (top <= 0)] = TiFlag.NO_DATA
    return out


def _row_step_um(z_um: np.ndarray | None, n_z: int, max_fwhm_um: float | None) -> float:
    """Row step (µm) of ``z_um`` for the width test of `ti_flags`; checks both inputs."""
    if max_fwhm_um is None:
        return float("nan")
    if not (np.isfinite(max_fwhm_um) and max_fwhm_um > 0):
        raise ValueError(f"max_fwhm_um must be finite and > 0, or None; got {max_fwhm_um}")
    if z_um is None:
        raise ValueError("z_um (the rows' heights, µm) is needed with max_fwhm_um")
    z = np.asarray(z_um, dtype=float)
    if z.shape != (n_z,) or n_z < 2 or not np.all(np.diff(z) > 0):
        raise ValueError(f"z_um must be {n_z} increasing row heights (µm), got {z_um!r}")
    return float(np.median(np.diff(z)))


def _excess_fwhm_rows(columns: np.ndarray, peak: np.ndarray, max_rows: float) -> np.ndarray:
    """(..., n_x) full width (rows) at which the excess of each column of (..., n_x, n_z)
    falls to half its value at ``peak``, interpolated between rows; inf where it does not
    fall to half within the map; 0 where the map reaches no row beyond ``max_rows``.

    The excess is over the column's level beyond the largest width a layer may have (the
    median of the 2 rows from ``ceil(max_rows)`` on, the lower side; the only side a map
    reaches): a maximum wider than a layer is measured from below its shoulders, not from
    its flanks' median near the top (which would leave it as narrow as its tip), and the
    corner of a step (a plateau whose highest row is its first) is a plateau, not a layer.
    A layer on a step between two levels passes where it stands higher above the step
    than the step itself.
    """
    reach = int(np.ceil(max_rows))
    distance = np.abs(np.arange(columns.shape[-1]) - peak[..., None])
    below = np.arange(columns.shape[-1]) < peak[..., None]
    far = (distance >= reach) & (distance < reach + _FLANK_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a side beyond the map: NaN
        level = np.fmin(
            np.nanmedian(np.where(far & below, columns, np.nan), axis=-1),
            np.nanmedian(np.where(far & ~below, columns, np.nan), axis=-1),
        )
    excess = columns - level[..., None]
    half = 0.5 * np.take_along_axis(excess, peak[..., None], -1)
    width = _half_width_rows(excess, half, peak, +1) + _half_width_rows(excess, half, peak, -1)
    return np.where(np.isfinite(level), width, 0.0)


def _half_width_rows(
    excess: np.ndarray, half: np.ndarray, peak: np.ndarray, direction: int
) -> np.ndarray:
    """Rows from ``peak`` (in ``direction``, +1 up or -1 down) to where ``excess`` first
    falls to ``half``, linear between rows (a NaN row: half a row on); inf if it never does."""
    n_z = excess.shape[-1]
    distance = (np.arange(n_z) - peak[..., None]) * direction
    fallen = (distance > 0) & ~(excess > half)  # a NaN row ends the layer too
    first = np.where(fallen, distance, n_z).min(axis=-1)
    found = first < n_z
    first = np.where(found, first, 1)
    rows = np.clip(peak[..., None] + direction * np.stack([first, first - 1], -1), 0, n_z - 1)
    at, before = np.moveaxis(np.take_along_axis(excess, rows, -1), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = (before - half[..., 0]) / (before - at)
    fraction = np.where(np.isfinite(at), np.clip(np.nan_to_num(fraction), 0.0, 1.0), 0.5)
    return np.where(found, first - 1 + fraction, np.inf)


def _neighbour_differences(away: np.ndarray) -> np.ndarray:
    """(..., 2 D, n_x, n_z) differences of each column of (..., n_x, n_z) to the columns
    1..D = `_PAIR_OFFSETS` either side (NaN beyond the map): every pair of a small map (the
    soak's 5 columns), ~4 n_x pairs of a wide one instead of n_x² / 2; each pair twice,
    with both signs, which leaves the median of their absolute values as it is."""
    n_x = away.shape[-2]
    differences = []
    for d in range(1, min(n_x - 1, _PAIR_OFFSETS) + 1):
        pad = np.full((*away.shape[:-2], d, away.shape[-1]), np.nan)
        differences.append(away - np.concatenate([away[..., d:, :], pad], axis=-2))
        differences.append(away - np.concatenate([pad, away[..., :-d, :]], axis=-2))
    return _without_pair_offset(np.stack(differences, axis=-3))


def _without_pair_offset(differences: np.ndarray) -> np.ndarray:
    """Each pair's differences (..., n_z) minus their median over the rows, scaled by
    √(n / (n − 1)) for the n rows it is taken from: two columns whose background levels
    differ (the beam's path through the cell changes along x) differ by more than their
    noise, which would count as noise; a structure both columns share (a step between
    layers, even at slightly different rows) leaves the median at 0. The scale keeps the
    noise of few rows (8 in the soak's maps) at its size."""
    n = np.sum(np.isfinite(differences), axis=-1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty pair stays NaN
        level = np.nanmedian(differences, axis=-1, keepdims=True)
    centred = (differences - level) * np.sqrt(n / np.maximum(n - 1, 1))
    return np.where(n >= _MIN_PAIR_ROWS, centred, differences)


def _background_and_noise(columns: np.ndarray, peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., n_x) background under each column's ``peak`` and (..., n_x) frame-to-frame σ
    of each map of (..., n_x, n_z) (`ti_flags`); NaN where no value is left to measure.

    σ is the larger of the map's (pooled over its rows) and that of the rows around the
    column's maximum: where the noise grows with the intensity (Poisson), the pooled σ is
    that of the quietest rows, and the noise of a bright plateau would pass for a layer.
    """
    offset = np.arange(columns.shape[-1]) - peak[..., None]
    away = np.where(np.abs(offset) > _NOISE_GAP_ROWS, columns, np.nan)
    if columns.shape[-2] > 1:  # pairs of columns, row by row
        steps = _neighbour_differences(away).reshape(*away.shape[:-2], -1, away.shape[-1])
    else:  # one column: neighbouring rows
        steps = away[..., 1:] - away[..., :-1]
    flank = _FLANK_ROWS + _NOISE_GAP_ROWS
    below = np.where((offset < -_NOISE_GAP_ROWS) & (offset >= -flank), columns, np.nan)
    above = np.where((offset > _NOISE_GAP_ROWS) & (offset <= flank), columns, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nothing left: NaN, as documented
        flat = steps.reshape(*steps.shape[:-2], -1)
        sigma = 1.4826 * np.nanmedian(np.abs(flat), axis=-1) / np.sqrt(2.0)
        level = np.nanmedian(away.reshape(*away.shape[:-2], -1), axis=-1)[..., None]
        sides = np.fmax(np.nanmedian(below, axis=-1), np.nanmedian(above, axis=-1))
        local = _local_noise(columns, offset)
    return np.fmax(level, sides), np.fmax(sigma[..., None], local)


def _local_noise(columns: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(..., n_x) σ of the `_LOCAL_ROWS` rows each side of a column's maximum beyond
    `_LOCAL_GAP_ROWS`: differences to the columns up to `_PAIR_OFFSETS` away in those rows,
    each column's own layer rows (within `_LOCAL_GAP_ROWS` of its maximum) left out, so
    that neighbouring layers at other heights do not count as noise."""
    n_x = columns.shape[-2]
    if n_x < 2:  # one column: the pooled σ of its rows stands
        return np.full(columns.shape[:-1], np.nan)
    distance = np.abs(offset)
    away = np.where(distance > _LOCAL_GAP_ROWS, columns, np.nan)
    window = (distance > _LOCAL_GAP_ROWS) & (distance <= _LOCAL_GAP_ROWS + _LOCAL_ROWS)
    near = np.where(window[..., None, :, :], np.abs(_neighbour_differences(away)), np.nan)
    near = np.moveaxis(near, -3, -2).reshape(*away.shape[:-1], -1)
    return 1.4826 * np.nanmedian(near, axis=-1) / np.sqrt(2.0)


def ti_position(
    ti_map: np.ndarray,
    *,
    z_um: np.ndarray,
    half_window: int = 2,
    method: str = "centroid",
    min_significance: float = 5.0,
    max_fwhm_um: float | None = None,
) -> np.ndarray:
    """Sub-pixel z of the Ti collector in every column.

    Parameters
    ----------
    ti_map : (..., n_z, n_x) array of float
        Ti (100) band intensity (raw or normalised), e.g. (n_maps, n_z, n_x).
    z_um : (n_z,) array of float
        Row heights (µm), equally spaced and increasing.
    half_window : int, optional
        Rows each side of the column maximum used by the centroid.
    method : {"centroid", "centroid_line", "gaussian"}, optional
        Intensity-weighted centroid after subtracting the window minimum; the same after
        subtracting the line through the window's end rows (opt-in: the layers below and
        above the Ti can put different backgrounds into its band, a step the minimum leaves
        under one side of the peak; a peak wider than the window loses its tails to the
        line); or the vertex of a parabola through the logarithms of the three top rows
        (exact for a Gaussian).
    min_significance : float, optional
        A column has a Ti position only where its maximum stands this many robust
        standard deviations of the map's frame-to-frame noise above the map's median
        (`ti_flags`; default 5): a map whose z range holds no Ti has none, where the
        centroid of its noise would report one.
    max_fwhm_um : float or None, optional
        The width test of `ti_flags` (None, the default: none): a maximum wider than a
        layer is not the Ti.

    Returns
    -------
    (..., n_x) array of float
        z of the Ti layer (µm); NaN wherever `ti_flags` is not OK: empty columns, a
        maximum within the noise (no Ti in the column), and a maximum closer to the map's
        first or last row than the window (``half_window`` rows for the centroid, 1 for
        the Gaussian): the layer is not bracketed by the map (a map that stops below the
        Ti), and the edge row is not its position.

    Examples
    --------
    >>> z = np.arange(10.0)
    >>> col = np.exp(-0.5 * ((z - 4.3) / 0.8) ** 2)[:, None]
    >>> print(np.round(ti_position(col, z_um=z, method="gaussian"), 6))
    [4.3]

    A map ending below the layer (the intensity still rising at its top row) has no Ti:

    >>> print(ti_position(col[:5], z_um=z[:5]))
    [nan]

    Nor has a map of noise only (its z range holds no Ti), where the centroid around each
    column's largest value gives a height without the test; the same noise under a layer
    30 times its scatter keeps the layer's position:

    >>> noise = np.random.default_rng(7).normal(0.0, 1.0, (10, 3))
    >>> print(ti_position(noise, z_um=z), ti_position(noise, z_um=z, min_significance=0).round(1))
    [nan nan nan] [4.8 1.7 3.5]
    >>> print(ti_position(noise + 30 * col, z_um=z).round(1))
    [4.3 4.2 4.2]
    """
    flags = ti_flags(
        ti_map, half_window=half_window, method=method, min_significance=min_significance,
        z_um=z_um, max_fwhm_um=max_fwhm_um,
    )  # fmt: skip
    a = np.moveaxis(np.asarray(ti_map, dtype=float), -2, -1)  # (..., n_x, n_z)
    z = np.asarray(z_um, dtype=float)
    if a.shape[-1] != z.size:
        raise ValueError(f"z_um must have {a.shape[-1]} entries, got {z.size}")
    dz = float(np.mean(np.diff(z)))
    peak = np.argmax(np.where(np.isfinite(a), a, -np.inf), axis=-1)
    empty = flags != TiFlag.OK
    offsets = np.arange(-half_window, half_window + 1)
    idx = np.clip(peak[..., None] + offsets, 0, z.size - 1)
    win = np.nan_to_num(np.take_along_axis(a, idx, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "centroid":
            w = win - win.min(axis=-1, keepdims=True)
            shift = (w * offsets).sum(-1) / w.sum(-1)
        elif method == "centroid_line":
            t = (offsets + half_window) / (2 * half_window)
            line = win[..., :1] + (win[..., -1:] - win[..., :1]) * t
            w = np.clip(win - line, 0.0, None)
            shift = (w * offsets).sum(-1) / w.sum(-1)
        else:
            lm, l0, lp = (np.log(np.clip(win[..., half_window + d], 1e-300, None))
                          for d in (-1, 0, 1))  # fmt: skip
            shift = 0.5 * (lm - lp) / (lm - 2 * l0 + lp)
    return np.where(empty, np.nan, z[peak] + shift * dz)


def li_thickness_from_ti(ti_z_um: np.ndarray, *, reference_index: int = 0) -> np.ndarray:
    """Li thickness per map and column: Ti displacement from the reference map.

    Parameters
    ----------
    ti_z_um : (n_maps, n_x) array of float
        Ti position per map and column (`ti_position`).
    reference_index : int, optional
        Map without plated Li (default the first).

    Returns
    -------
    (n_maps, n_x) array of float
        Thickness (µm); take ``np.nanmean(..., axis=1)`` for the cell average.

    Examples
    --------
    >>> li_thickness_from_ti(np.array([[30.0, 30.2], [33.4, 33.6]]))[1].tolist()
    [3.4, 3.4]
    """
    z = np.asarray(ti_z_um, dtype=float)
    if z.ndim != 2 or not -z.shape[0] <= reference_index < z.shape[0]:
        raise ValueError(
            f"ti_z_um must be (n_maps, n_x) and reference_index in range, got {z.shape}, "
            f"{reference_index}"
        )
    return np.round(z - z[reference_index], 12)


def stack_profile(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """Upper-stack row profile per column: each band minus its column minimum, divided by its
    column sum, summed over the bands.

    The column sum of a layer's row response does not depend on where the layer sits
    relative to the rows (its maximum does, for a layer thinner than a row), so every band
    keeps one shape up to the shift.

    Parameters
    ----------
    bands : mapping name -> (..., n_z, n_x) array of float
        Raw band intensities of layers that move together above the Li (``"ti_100"``,
        ``"au_111"``).

    Returns
    -------
    (..., n_z, n_x) array of float
        Each band sums to 1 per column; NaN rows stay NaN.

    Examples
    --------
    >>> col = np.array([1.0, 3.0, 5.0])[:, None]
    >>> np.round(stack_profile({"ti": col, "au": 2 * col}).ravel(), 3).tolist()
    [0.0, 0.667, 1.333]
    """
    total = None
    for values in bands.values():
        a = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            lo = np.nanmin(np.where(np.isfinite(a), a, np.inf), axis=-2, keepdims=True)
            net = a - lo
            area = np.nansum(net, axis=-2, keepdims=True)
            norm = np.where(area > 0, net / area, 0.0)
        total = norm if total is None else total + norm
    if total is None:
        raise ValueError("bands must name at least one band")
    return total


def stack_displacement(
    profile: np.ndarray,
    reference: np.ndarray,
    *,
    z_um: np.ndarray,
    half_window: int | None = 3,
) -> np.ndarray:
    """Upward shift of each column's stack profile relative to the reference profile.

    The shift is the difference of the profiles' centroids (over ``half_window`` rows each
    side of the column maximum, or all rows). With a top-hat beam one row high, the row
    response of a layer one row thick is a triangle two rows wide, whose sampled centroid is
    its centre for every sub-row position: the 1 µm Au layer keeps the sub-row shift that
    the 0.5 µm Ti layer (a single row over half of the positions) loses.

    Parameters
    ----------
    profile, reference : (..., n_z, n_x) and (n_z, n_x) arrays of float
        Stack profiles (`stack_profile`, baseline 0) of the maps and of the reference map.
    z_um : (n_z,) array of float
        Row heights (µm), increasing.
    half_window : int or None, optional
        Rows each side of the maximum in the centroid (>= 1); None: all rows.

    Returns
    -------
    (..., n_x) array of float
        Shift (µm, positive = the stack moved up); NaN for empty columns.

    Examples
    --------
    >>> z = np.arange(30.0)
    >>> tri = lambda c: np.clip(1 - np.abs(z - c), 0, None)[:, None]
    >>> print(np.round(stack_displacement(tri(13.37), tri(10.0), z_um=z), 3))
    [3.37]
    """
    z = np.asarray(z_um, dtype=float)
    cur = np.asarray(profile, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if cur.shape[-2] != z.size or ref.shape != cur.shape[-2:]:
        raise ValueError(
            f"profile (..., n_z, n_x) and reference (n_z, n_x) must have n_z = {z.size} rows "
            f"and equal n_x, got {np.shape(profile)} and {np.shape(reference)}"
        )
    if half_window is not None and half_window < 1:
        raise ValueError(f"half_window must be >= 1 or None, got {half_window}")
    return _centroid(cur, z, half_window) - _centroid(ref, z, half_window)


def _centroid(a: np.ndarray, z: np.ndarray, half_window: int | None) -> np.ndarray:
    """Intensity-weighted z per column of (..., n_z, n_x), weights clipped at 0."""
    w = np.clip(np.nan_to_num(np.moveaxis(a, -2, -1)), 0.0, None)  # (..., n_x, n_z)
    if half_window is not None:
        rows = np.arange(z.size)
        peak = np.argmax(w, axis=-1)[..., None]
        w = np.where(np.abs(rows - peak) <= half_window, w, 0.0)
    total = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * z).sum(-1) / total, np.nan)


def electrochemical_li_thickness_um(
    charge_mah_per_cm2: np.ndarray | float,
    *,
    molar_volume_cm3_per_mol: float = LI_MOLAR_VOLUME_CM3_PER_MOL,
) -> np.ndarray:
    """Thickness of dense Li metal plated by an areal charge (Faraday's law).

    t = Q·3.6 (C per mAh) / F · V_m: 1.4 mAh/cm² ↔ 6.8 µm, 0.8 mAh/cm² ↔ 3.9 µm.

    Parameters
    ----------
    charge_mah_per_cm2 : float or array
        Plated areal charge (mAh/cm², positive = charge of the cell).
    molar_volume_cm3_per_mol : float, optional
        Li molar volume (default 6.941 / 0.534 = 13.0 cm³/mol).

    Returns
    -------
    array of float
        Thickness (µm).

    Examples
    --------
    >>> print(np.round(electrochemical_li_thickness_um(np.array([1.4, 0.8])), 1))
    [6.8 3.9]
    """
    if not molar_volume_cm3_per_mol > 0:
        raise ValueError(f"molar_volume_cm3_per_mol must be > 0, got {molar_volume_cm3_per_mol}")
    q = np.asarray(charge_mah_per_cm2, dtype=float)
    mol_per_cm2 = q * 3.6 / FARADAY_C_PER_MOL
    return mol_per_cm2 * molar_volume_cm3_per_mol * 1e4
