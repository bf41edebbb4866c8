"""Li metal grains from the (110) window: detection, identity across maps, statistics.

The paper's recipe (Methods) with every vague step made explicit: see ``_grain_detect`` for
background and threshold, ``_grain_link`` for identity, and docs/analysis-products.md.
Maps are processed one at a time, so a 100 × 49 × 49 × 360 × 10 experiment never needs a
5-D temporary; the input may be a list, a generator, a NumPy memmap or a 5-D array.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from ._grain_detect import label_periodic, split_columns, spot_mask, spot_masks
from ._grain_link import circular_diff_deg, link_pair
from ._grain_props import grain_properties

__all__ = [
    "GrainCounts",
    "GrainTable",
    "LinkTolerances",
    "azimuth_histogram",
    "find_grains",
    "find_grains_for_thresholds",
    "find_grains_in_maps",
    "grain_counts",
    "grain_sensitivity",
    "lifetime_classes",
    "link_grains",
    "texture_share",
]

EPHEMERAL, UNSTABLE, STABLE = 0, 1, 2


@dataclass(frozen=True)
class GrainTable:
    """One row per grain observation; every field is a 1-D array of the same length.

    ``map_index`` (int), ``label`` (1..n within its map), ``track_id`` (identity across maps,
    −1 before `link_grains`), intensity-weighted ``z_um``, ``x_um``, bounding extents
    ``z_min_um``…``x_max_um`` (pixel centres), ``azimuth_deg`` in [0, 360), ``intensity``
    (background-subtracted counts summed over the grain's voxels), ``size_voxels`` ((z, x, χ)
    voxels) and ``n_pixels`` ((z, x) pixels).
    """

    map_index: np.ndarray
    label: np.ndarray
    track_id: np.ndarray
    z_um: np.ndarray
    x_um: np.ndarray
    z_min_um: np.ndarray
    z_max_um: np.ndarray
    x_min_um: np.ndarray
    x_max_um: np.ndarray
    azimuth_deg: np.ndarray
    intensity: np.ndarray
    size_voxels: np.ndarray
    n_pixels: np.ndarray

    def __len__(self) -> int:
        return int(self.map_index.size)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns by name (for a DataFrame or a Tiled table)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def rows(self, map_index: int) -> dict[str, np.ndarray]:
        """The columns restricted to one map."""
        sel = self.map_index == map_index
        return {k: v[sel] for k, v in self.to_dict().items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> GrainTable:
    names = [f.name for f in fields(GrainTable)]
    if not parts:
        return GrainTable(**{n: np.zeros(0) for n in names})
    return GrainTable(**{n: np.concatenate([p[n] for p in parts]) for n in names})


def _validate_window(window: np.ndarray, z_um, x_um, chi_deg, k: float):
    if window.ndim != 4:
        raise ValueError(f"window must be (n_z, n_x, n_chi, n_q), got shape {window.shape}")
    n_z, n_x, n_chi, _ = window.shape
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    z = np.arange(n_z, dtype=float) if z_um is None else np.asarray(z_um, dtype=float)
    x = np.arange(n_x, dtype=float) if x_um is None else np.asarray(x_um, dtype=float)
    chi = np.arange(n_chi, dtype=float) * 360.0 / n_chi if chi_deg is None else chi_deg
    chi = np.asarray(chi, dtype=float)
    for name, arr, size in (("z_um", z, n_z), ("x_um", x, n_x), ("chi_deg", chi, n_chi)):
        if arr.shape != (size,):
            raise ValueError(f"{name} must have shape ({size},), got {arr.shape}")
    return z, x, chi


def find_grains(
    window: np.ndarray,
    *,
    z_um: np.ndarray | None = None,
    x_um: np.ndarray | None = None,
    chi_deg: np.ndarray | None = None,
    k: float = 10.0,
    background: np.ndarray | None = None,
    background_chi_step: int = 4,
    map_index: int = 0,
    min_voxels: int = 1,
    split_chi_tol_deg: float | None = None,
) -> GrainTable:
    """Segment Li (110) spots of one map into grains.

    Parameters
    ----------
    window : (n_z, n_x, n_chi, n_q) array
        The Li window of every frame of the map (e.g. 49 × 49 × 360 × 10, q 2.53–2.55 Å⁻¹).
    z_um, x_um : (n_z,), (n_x,) arrays of float, optional
        Pixel centres (µm); default the indices.
    chi_deg : (n_chi,) array of float, optional
        Azimuth of each χ bin (deg, [0, 360), equally spaced, periodic); default 0, 1, … .
    k : float, optional
        Threshold factor: spot voxels exceed k × the frame's mean window intensity after
        background subtraction (paper: 10).
    background : array broadcastable to ``window``, optional
        Li-free background; default the per-frame, per-q median over χ.
    background_chi_step : int, optional
        The default background uses every n-th azimuth bin (4: 90 of 360, 4× faster with
        negligible extra noise; 1: all bins).
    map_index : int, optional
        Stored in the table's ``map_index`` column.
    min_voxels : int, optional
        Grains with fewer (z, x, χ) voxels are dropped (1: keep all; 2 drops isolated noise
        voxels), >= 1.
    split_chi_tol_deg : float or None, optional
        Cut components into x-column parts and rejoin neighbouring parts whose azimuths
        agree within this tolerance (deg; `opmap.analysis._grain_detect.split_columns`);
        None: plain connected components (the paper's labelling).

    Returns
    -------
    GrainTable
        One row per grain, ``track_id`` −1.

    Examples
    --------
    >>> w = np.ones((3, 4, 360, 10), dtype=np.float32)
    >>> w[1, 2, 358:, :] = w[1, 2, :2, :] = 50.0   # one spot across 359°/0°
    >>> g = find_grains(w)
    >>> print(len(g), g.size_voxels.tolist(), round(float(g.azimuth_deg[0]), 1))
    1 [4] 359.5
    """
    z, x, chi = _validate_window(np.asarray(window), z_um, x_um, chi_deg, k)
    _check_detect_options(chi.size, background_chi_step, min_voxels)
    mask, net = spot_mask(window, k=k, background=background, chi_step=background_chi_step)
    return _grains_from_mask(mask, net, z, x, chi, map_index, min_voxels, split_chi_tol_deg)


def _grains_from_mask(
    mask: np.ndarray, net: np.ndarray, z: np.ndarray, x: np.ndarray, chi: np.ndarray,
    map_index: int, min_voxels: int, split_chi_tol_deg: float | None,
) -> GrainTable:  # fmt: skip
    """Label a (z, x, χ) spot mask and measure its grains (`find_grains` after the mask)."""
    labels, n = label_periodic(mask)
    if split_chi_tol_deg is not None:
        labels, n = split_columns(labels, net, chi, tol_deg=split_chi_tol_deg)
    if min_voxels > 1 and n:
        size = np.bincount(labels.ravel(), minlength=n + 1)
        keep = size >= min_voxels
        keep[0] = False
        lut = np.zeros(n + 1, np.int32)
        lut[keep] = np.arange(1, keep.sum() + 1)
        labels, n = lut[labels], int(keep.sum())
    cols = grain_properties(labels, n, net, z_um=z, x_um=x, chi_deg=chi)
    cols["map_index"] = np.full(n, map_index, dtype=np.int64)
    cols["label"] = np.arange(1, n + 1, dtype=np.int64)
    cols["track_id"] = np.full(n, -1, dtype=np.int64)
    return _concat([cols])


def _check_detect_options(n_chi: int, background_chi_step: int, min_voxels: int) -> None:
    if not 1 <= background_chi_step <= n_chi // 8:
        raise ValueError(
            f"background_chi_step must be in [1, n_chi // 8 = {n_chi // 8}], "
            f"got {background_chi_step}"
        )
    if not (isinstance(min_voxels, int | np.integer) and min_voxels >= 1):
        raise ValueError(f"min_voxels must be an integer >= 1, got {min_voxels!r}")


def find_grains_for_thresholds(
    window: np.ndarray,
    ks: tuple[float, ...],
    *,
    z_um: np.ndarray | None = None,
    x_um: np.ndarray | None = None,
    chi_deg: np.ndarray | None = None,
    background_chi_step: int = 4,
    map_index: int = 0,
    min_voxels: int = 1,
    split_chi_tol_deg: float | None = None,
    variance: np.ndarray | None = None,
    false_spots_per_map: float | None = None,
) -> dict[float, GrainTable]:
    """`find_grains` of one map for several thresholds k, sharing the background.

    Parameters
    ----------
    window : (n_z, n_x, n_chi, n_q) array
        The Li window of every frame of the map.
    ks : tuple of float
        Threshold factors (each > 0), e.g. the sensitivity grid (6, 8, 10, 12, 15).
    z_um, x_um, chi_deg, background_chi_step, map_index, min_voxels, split_chi_tol_deg
        As in `find_grains`.
    variance : (n_chi, n_q) array, optional
        Poisson variance factor of each window bin
        (`opmap.analysis.reduction.ReducedFrames.li_window_variance`).
    false_spots_per_map : float, optional
        With ``variance``: a spot voxel must also exceed the Poisson noise floor of its
        background (`opmap.analysis._grain_detect.poisson_floor`), set so that background
        noise alone gives this many spot voxels per map on average (> 0); None: no floor.

    Returns
    -------
    dict float -> GrainTable
        One unlinked table per k.

    Examples
    --------
    >>> w = np.ones((3, 4, 360, 10), dtype=np.float32)
    >>> w[1, 2, 90, :] = 9.0      # a weak spot: found at k = 6, not at k = 10
    >>> w[0, 0, 200, :] = 50.0    # a strong one
    >>> {k: len(t) for k, t in find_grains_for_thresholds(w, (6.0, 10.0)).items()}
    {6.0: 2, 10.0: 1}
    """
    ks = tuple(float(k) for k in ks)
    z, x, chi = _validate_window(np.asarray(window), z_um, x_um, chi_deg, min(ks, default=1.0))
    if not ks:
        raise ValueError("ks must hold at least one threshold factor")
    _check_detect_options(chi.size, background_chi_step, min_voxels)
    false_alarm = _false_alarm(np.shape(window), variance, false_spots_per_map)
    masks, net = spot_masks(
        window, ks=ks, chi_step=background_chi_step, variance=variance, false_alarm=false_alarm
    )
    return {
        k: _grains_from_mask(m, net, z, x, chi, map_index, min_voxels, split_chi_tol_deg)
        for k, m in zip(ks, masks, strict=True)
    }


def _false_alarm(
    shape: tuple[int, ...], variance: np.ndarray | None, false_spots_per_map: float | None
) -> float | None:
    """Per-voxel false-alarm probability of the noise floor (None: no floor)."""
    if false_spots_per_map is None or variance is None:
        return None
    if not 0.0 < false_spots_per_map < 1e3:
        raise ValueError(f"false_spots_per_map must be in (0, 1000), got {false_spots_per_map}")
    if np.shape(variance) != tuple(shape[2:]):
        raise ValueError(
            f"variance must have the window's (n_chi, n_q) shape {tuple(shape[2:])}, "
            f"got {np.shape(variance)}"
        )
    return min(false_spots_per_map / float(np.prod(shape)), 0.25)


def find_grains_in_maps(
    windows: Iterable[np.ndarray],
    *,
    z_um: np.ndarray | None = None,
    x_um: np.ndarray | None = None,
    chi_deg: np.ndarray | None = None,
    k: float = 10.0,
    background_chi_step: int = 4,
) -> GrainTable:
    """`find_grains` on a sequence of maps, processed one map at a time.

    Parameters
    ----------
    windows : iterable of (n_z, n_x, n_chi, n_q) arrays, or a 5-D array
        One Li window block per map, in time order.
    z_um, x_um, chi_deg, k, background_chi_step
        As in `find_grains`.

    Returns
    -------
    GrainTable
        Rows of all maps, ``map_index`` = position in ``windows``.

    Examples
    --------
    >>> w = np.ones((2, 3, 3, 360, 10), dtype=np.float32)
    >>> w[:, 1, 1, 90, :] = 80.0
    >>> find_grains_in_maps(w).map_index.tolist()
    [0, 1]
    """
    parts = [
        find_grains(
            w,
            z_um=z_um,
            x_um=x_um,
            chi_deg=chi_deg,
            k=k,
            background_chi_step=background_chi_step,
            map_index=i,
        ).to_dict()
        for i, w in enumerate(windows)
    ]
    return _concat(parts)


def link_grains(
    table: GrainTable,
    *,
    time_s: np.ndarray | None = None,
    tol_x_um: float = 16.5,
    tol_z_um: float = 2.0,
    tol_chi_deg: float = 1.0,
    rotation_deg_per_min: float = 1.0,
    drift_um_per_min: float = 2.0,
    max_move_um: float = 5.0,
) -> GrainTable:
    """Give grains an identity (``track_id``) across consecutive maps, following rotation
    and drift.

    Between maps t − 1 and t, Δt = time_s[t] − time_s[t − 1] apart, a grain may turn by
    up to ``tol_chi_deg + rotation_deg_per_min · Δt`` in azimuth and move by up to
    ``tol_x_um + min(drift_um_per_min · Δt, max_move_um)`` in x (``tol_z_um + …`` in z).
    Rotation grows with Δt without bound: a grain turns in place, at a steady rate while
    the current drives it. Its centre does not: in a dense columnar layer a grain's
    centre shifts only by boundary migration, by about its own width at most, so after
    long gaps (the rehearsal's 30 min) the move saturates at ``max_move_um`` instead of
    taking in grains born two columns away (which linked a dying grain to a new one, and
    undercounted both by ~40 % at 30-min gaps). Among the allowed pairs, one-to-one
    matches minimise the summed squared moves in units of these tolerances (Hungarian
    assignment, `scipy.optimize.linear_sum_assignment`), so a grain never takes a
    neighbour's identity because it came first.

    Parameters
    ----------
    table : GrainTable
        Grains of all maps (`find_grains_in_maps`).
    time_s : (n_maps,) array of float, optional
        Time of each map (s), indexed by ``map_index``, increasing; None: Δt = 0 (the
        tolerances are the floors alone).
    tol_x_um, tol_z_um, tol_chi_deg : float, optional
        Floors of the tolerances (> 0): position and azimuth scatter of a grain that did not
        move (defaults half a 33 µm column, two 1 µm rows, 1° — one χ bin).
    rotation_deg_per_min, drift_um_per_min : float, optional
        Largest rotation rate (deg/min, about the beam: a change of azimuth) and drift speed
        (µm/min) of a grain, >= 0 (defaults 1 deg/min and 2 µm/min: the paper's grains turn
        within minutes, "most grains rotate/move out of diffraction conditions in a few
        minutes").
    max_move_um : float, optional
        Largest move of a grain's centre between two maps however long apart (µm, >= 0;
        default 5 µm: a grain's width, the paper's "large crystallographic coherent
        domains in Li metal (> 5 microns)"; `numpy.inf` gives the unbounded drift).

    Returns
    -------
    GrainTable
        The same rows with ``track_id`` set (0, 1, … in order of first appearance).

    Examples
    --------
    >>> w = np.ones((3, 3, 3, 360, 10), dtype=np.float32)
    >>> w[0, 1, 1, 90, :] = w[1, 1, 1, 96, :] = 80.0  # one grain turning 6° in 5 min
    >>> w[2, 1, 1, 200, :] = 80.0                     # another grain in map 2
    >>> t = np.array([0.0, 300.0, 600.0])
    >>> link_grains(find_grains_in_maps(w), time_s=t).track_id.tolist()
    [0, 0, 1]
    >>> link_grains(find_grains_in_maps(w), time_s=t, rotation_deg_per_min=0).track_id.tolist()
    [0, 1, 2]
    """
    dt_min = _map_intervals_min(table, time_s)
    for name, value in (("tol_x_um", tol_x_um), ("tol_z_um", tol_z_um),
                        ("tol_chi_deg", tol_chi_deg)):  # fmt: skip
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    for name, value in (("rotation_deg_per_min", rotation_deg_per_min),
                        ("drift_um_per_min", drift_um_per_min)):  # fmt: skip
        if not 0 <= value < np.inf:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if not max_move_um >= 0:
        raise ValueError(f"max_move_um must be >= 0, got {max_move_um}")
    order = np.lexsort((table.label, table.map_index))
    cols = {k: v[order] for k, v in table.to_dict().items()}
    track = np.full(order.size, -1, dtype=np.int64)
    next_id, prev_idx = 0, np.zeros(0, dtype=int)
    for m in np.unique(cols["map_index"]):
        cur_idx = np.flatnonzero(cols["map_index"] == m)
        if prev_idx.size and m - 1 == cols["map_index"][prev_idx[0]]:
            dt = dt_min[m] if dt_min is not None else 0.0
            move_um = min(drift_um_per_min * dt, max_move_um)
            i, j = link_pair(
                {k: cols[k][prev_idx] for k in ("x_um", "z_um", "azimuth_deg")},
                {k: cols[k][cur_idx] for k in ("x_um", "z_um", "azimuth_deg")},
                tol_x_um=tol_x_um + move_um,
                tol_z_um=tol_z_um + move_um,
                tol_chi_deg=min(tol_chi_deg + rotation_deg_per_min * dt, 180.0),
            )
            track[cur_idx[j]] = track[prev_idx[i]]
        fresh = cur_idx[track[cur_idx] < 0]
        track[fresh] = np.arange(next_id, next_id + fresh.size)
        next_id += fresh.size
        prev_idx = cur_idx
    cols["track_id"] = track
    return GrainTable(**cols)


def _map_intervals_min(table: GrainTable, time_s: np.ndarray | None) -> np.ndarray | None:
    """(n_maps,) minutes since the previous map (entry 0 unused), or None without times."""
    if time_s is None:
        return None
    t = np.asarray(time_s, dtype=float)
    n_needed = int(table.map_index.max(initial=-1)) + 1
    if t.ndim != 1 or t.size < n_needed or not np.all(np.isfinite(t)):
        raise ValueError(
            f"time_s must be a finite 1-D array with one entry per map "
            f"(>= {n_needed}), got shape {t.shape}"
        )
    if np.any(np.diff(t) <= 0):
        raise ValueError("time_s must increase from map to map")
    return np.concatenate([[0.0], np.diff(t) / 60.0])


@dataclass(frozen=True)
class GrainCounts:
    """Per-map counts (n_maps,): grains in diffraction condition, new ones, deceased ones.

    ``new[t]``: tracks first seen in map t (all grains of map 0). ``deceased[t]``: tracks
    seen in map t − 1 and not in map t (0 for map 0).
    """

    total: np.ndarray
    new: np.ndarray
    deceased: np.ndarray


def grain_counts(table: GrainTable, *, n_maps: int) -> GrainCounts:
    """Total, new and deceased grains per map from a linked table.

    Parameters
    ----------
    table : GrainTable
        Linked grains (`link_grains`).
    n_maps : int
        Number of maps analysed (maps without grains count 0).

    Returns
    -------
    GrainCounts

    Examples
    --------
    >>> w = np.ones((3, 3, 3, 360, 10), dtype=np.float32)
    >>> w[:2, 1, 1, 90, :] = 80.0
    >>> w[2, 1, 1, 200, :] = 80.0
    >>> c = grain_counts(link_grains(find_grains_in_maps(w)), n_maps=3)
    >>> print(c.total.tolist(), c.new.tolist(), c.deceased.tolist())
    [1, 1, 1] [1, 0, 1] [0, 0, 1]
    """
    _require_linked(table)
    total = np.bincount(table.map_index, minlength=n_maps)[:n_maps]
    first = _track_first_last(table)[0]
    new = np.bincount(first, minlength=n_maps)[:n_maps]
    present = np.zeros((n_maps, int(table.track_id.max(initial=-1)) + 1), dtype=bool)
    present[table.map_index, table.track_id] = True
    deceased = np.zeros(n_maps, dtype=np.int64)
    deceased[1:] = (present[:-1] & ~present[1:]).sum(axis=1)
    return GrainCounts(total, new, deceased)


@dataclass(frozen=True)
class LinkTolerances:
    """Linking tolerances of `link_grains` (floors and rates), scalable as one set.

    Examples
    --------
    >>> LinkTolerances().scaled(2.0).rotation_deg_per_min
    2.0
    """

    tol_x_um: float = 16.5
    tol_z_um: float = 2.0
    tol_chi_deg: float = 1.0
    rotation_deg_per_min: float = 1.0
    drift_um_per_min: float = 2.0
    max_move_um: float = 5.0

    def scaled(self, factor: float) -> LinkTolerances:
        """Every tolerance and rate multiplied by ``factor`` (> 0)."""
        if not factor > 0:
            raise ValueError(f"link tolerance scale must be > 0, got {factor}")
        return LinkTolerances(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def as_kwargs(self) -> dict[str, float]:
        """Keyword arguments of `link_grains`."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def grain_sensitivity(
    tables_by_k: Mapping[float, GrainTable],
    *,
    n_maps: int,
    time_s: np.ndarray | None = None,
    link: LinkTolerances = LinkTolerances(),
    link_scales: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> dict[str, np.ndarray]:
    """Grain counts per map for every threshold k × link-tolerance scale.

    Parameters
    ----------
    tables_by_k : mapping k -> GrainTable
        Unlinked grains of all maps found with threshold k (`find_grains_for_thresholds`).
    n_maps : int
        Number of maps.
    time_s : (n_maps,) array of float, optional
        Map times (s) for the time-scaled tolerances (see `link_grains`).
    link : LinkTolerances, optional
        The reference tolerances (the analysis defaults).
    link_scales : tuple of float, optional
        Factors applied to every tolerance and rate of ``link`` (> 0).

    Returns
    -------
    dict of (n_k · n_scales · n_maps,) columns
        ``k``, ``link_scale``, ``tol_chi_deg``, ``rotation_deg_per_min``,
        ``drift_um_per_min``, ``max_move_um``, ``map_index``, ``total``, ``new``,
        ``deceased`` (counts as in `grain_counts`); rows ordered by k, then scale, then map.

    Examples
    --------
    >>> w = np.ones((2, 3, 3, 360, 10), dtype=np.float32)
    >>> w[:, 1, 1, 90, :] = 80.0          # a strong grain in both maps
    >>> w[1, 0, 0, 200, :] = 9.0          # a weak one in map 1 (found with k = 6 only)
    >>> by_k = {}
    >>> for i, win in enumerate(w):
    ...     for k, t in find_grains_for_thresholds(win, (6.0, 10.0), map_index=i).items():
    ...         by_k.setdefault(k, []).append(t)
    >>> by_k = {k: _concat([t.to_dict() for t in ts]) for k, ts in by_k.items()}
    >>> tab = grain_sensitivity(by_k, n_maps=2, link_scales=(1.0,))
    >>> print(tab["k"].tolist(), tab["total"].tolist(), tab["new"].tolist())
    [6.0, 6.0, 10.0, 10.0] [1, 2, 1, 1] [1, 1, 1, 0]
    """
    if not (isinstance(n_maps, int | np.integer) and n_maps >= 1):
        raise ValueError(f"n_maps must be an integer >= 1, got {n_maps!r}")
    rows: dict[str, list[np.ndarray]] = {}
    for k in sorted(tables_by_k):
        for scale in link_scales:
            tol = link.scaled(scale)
            linked = link_grains(tables_by_k[k], time_s=time_s, **tol.as_kwargs())
            counts = grain_counts(linked, n_maps=n_maps)
            columns = {
                "k": np.full(n_maps, float(k)),
                "link_scale": np.full(n_maps, float(scale)),
                "tol_chi_deg": np.full(n_maps, tol.tol_chi_deg),
                "rotation_deg_per_min": np.full(n_maps, tol.rotation_deg_per_min),
                "drift_um_per_min": np.full(n_maps, tol.drift_um_per_min),
                "max_move_um": np.full(n_maps, tol.max_move_um),
                "map_index": np.arange(n_maps),
                "total": counts.total,
                "new": counts.new,
                "deceased": counts.deceased,
            }
            for name, values in columns.items():
                rows.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in rows.items()}


def _require_linked(table: GrainTable) -> None:
    if len(table) and np.any(table.track_id < 0):
        raise ValueError("table has unlinked rows (track_id -1): call link_grains first")


def _track_first_last(table: GrainTable) -> tuple[np.ndarray, np.ndarray]:
    n_tracks = int(table.track_id.max(initial=-1)) + 1
    first = np.full(n_tracks, np.iinfo(np.int64).max)
    last = np.full(n_tracks, -1)
    np.minimum.at(first, table.track_id, table.map_index)
    np.maximum.at(last, table.track_id, table.map_index)
    return first, last


def lifetime_classes(
    table: GrainTable, *, n_maps: int, stable_min_maps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lifetime (maps seen) and class of every track.

    Parameters
    ----------
    table : GrainTable
        Linked grains.
    n_maps : int
        Number of maps analysed (pass the plating maps for the paper's "most of plating").
    stable_min_maps : int, optional
        Lifetime from which a grain is stable; default more than half of ``n_maps``.

    Returns
    -------
    lifetime_maps : (n_tracks,) int
        Number of maps in which the track was seen.
    grain_class : (n_tracks,) int
        0 ephemeral (1 map), 1 unstable (2 … stable_min_maps − 1), 2 stable.

    Examples
    --------
    >>> w = np.ones((3, 3, 3, 360, 10), dtype=np.float32)
    >>> w[:, 1, 1, 90, :] = 80.0
    >>> w[1, 0, 0, 200, :] = 80.0
    >>> life, cls = lifetime_classes(link_grains(find_grains_in_maps(w)), n_maps=3)
    >>> print(life.tolist(), cls.tolist())
    [3, 1] [2, 0]
    """
    _require_linked(table)
    stable_min = n_maps // 2 + 1 if stable_min_maps is None else stable_min_maps
    if not 2 <= stable_min <= max(n_maps, 2):
        raise ValueError(f"stable_min_maps must be in [2, n_maps={n_maps}], got {stable_min}")
    life = np.bincount(table.track_id, minlength=int(table.track_id.max(initial=-1)) + 1)
    cls = np.where(life <= 1, EPHEMERAL, np.where(life >= stable_min, STABLE, UNSTABLE))
    return life, cls


def azimuth_histogram(
    table: GrainTable, *, n_maps: int, bin_width_deg: float = 5.0, weighted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of grain azimuths per map.

    Parameters
    ----------
    table : GrainTable
        Grains (linked or not).
    n_maps : int
        Number of maps (rows of the result).
    bin_width_deg : float, optional
        Bin width; must divide 360.
    weighted : bool, optional
        Sum intensities instead of counting grains.

    Returns
    -------
    hist : (n_maps, 360 / bin_width_deg) array
    edges_deg : (360 / bin_width_deg + 1,) array

    Examples
    --------
    >>> w = np.ones((1, 3, 3, 360, 10), dtype=np.float32)
    >>> w[0, 1, 1, 62, :] = 80.0
    >>> h, e = azimuth_histogram(find_grains_in_maps(w), n_maps=1, bin_width_deg=30)
    >>> h[0].tolist()[:4]
    [0, 0, 1, 0]
    """
    n_bins = 360.0 / bin_width_deg
    if not (bin_width_deg > 0 and abs(n_bins - round(n_bins)) < 1e-9):
        raise ValueError(f"bin_width_deg must divide 360, got {bin_width_deg}")
    n_bins = round(n_bins)
    b = np.minimum((table.azimuth_deg % 360.0) // bin_width_deg, n_bins - 1).astype(np.int64)
    w = table.intensity if weighted else None
    flat = np.bincount(table.map_index * n_bins + b, weights=w, minlength=n_maps * n_bins)
    return flat[: n_maps * n_bins].reshape(n_maps, n_bins), np.linspace(0, 360, n_bins + 1)


def texture_share(
    table: GrainTable,
    *,
    n_maps: int,
    centres_a_deg: tuple[float, ...] = (0.0, 60.0, 120.0, 180.0),
    centres_b_deg: tuple[float, ...] = (30.0, 90.0, 150.0),
    half_width_deg: float = 7.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Share of each map's grains near the Burgers azimuths versus the 30°-shifted set.

    Parameters
    ----------
    table : GrainTable
        Grains.
    n_maps : int
        Number of maps.
    centres_a_deg, centres_b_deg : tuple of float, optional
        Azimuth centres of both sets (paper: 0/60/120/180 early in plating, 30/90/150 later).
    half_width_deg : float, optional
        Half-width of each window (deg); must be < 15 so the sets do not overlap.

    Returns
    -------
    share_a, share_b : (n_maps,) arrays
        Fraction of the map's grains within ±half-width of a centre of each set (NaN for a map
        without grains). For azimuths uniform on the circle: 4·15/360 and 3·15/360.

    Examples
    --------
    >>> w = np.ones((1, 3, 3, 360, 10), dtype=np.float32)
    >>> w[0, 1, 1, 60, :] = w[0, 0, 0, 95, :] = w[0, 2, 2, 250, :] = 80.0
    >>> a, b = texture_share(find_grains_in_maps(w), n_maps=1)
    >>> print(np.round(a, 3), np.round(b, 3))
    [0.333] [0.333]
    """
    if not 0 < half_width_deg < 15:
        raise ValueError(f"half_width_deg must be in (0, 15), got {half_width_deg}")

    def near(centres: tuple[float, ...]) -> np.ndarray:
        d = circular_diff_deg(table.azimuth_deg[:, None], np.asarray(centres)[None, :])
        return np.any(np.abs(d) <= half_width_deg, axis=1)

    total = np.bincount(table.map_index, minlength=n_maps)[:n_maps].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_a = np.bincount(table.map_index, near(centres_a_deg), minlength=n_maps)[:n_maps]
        share_b = np.bincount(table.map_index, near(centres_b_deg), minlength=n_maps)[:n_maps]
        return share_a / total, share_b / total
