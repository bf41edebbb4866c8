"""Li (110) spot segmentation in one map: background, threshold, periodic labelling.

Choices where the paper is vague (documented in docs/analysis-products.md):

* Background per frame and q bin: the median over the azimuths of that frame's window
  (every 4th bin by default, the upper middle element of ``np.partition``). Li spots are
  narrow in azimuth and cover far less than half the ring, so the median is a Li-free estimate
  from the same
  frame (time, z, x), as the paper's "Li-free detector image" requires. A caller can pass
  explicit background frames instead.
* Threshold: a voxel (z, x, χ, q) is a spot voxel when its background-subtracted intensity
  exceeds k × the mean *raw* intensity of that frame's window (k = 10 by default): the paper's
  "10 times the mean intensity ... mostly composed of the remaining contribution from the
  background". A (z, x, χ) pixel is on when any of its q bins is a spot voxel.
* Noise floor (`poisson_floor`; not in the paper, a statistical guard): on a detector with
  few counts per bin (the unbinned Eiger, ~0.15 counts per pixel per frame under the Li
  ring) a single photon exceeds k × the mean, so a voxel must also be unlikely as Poisson
  noise of the background: its equivalent counts ``I / v`` (v: the bin's Poisson variance
  factor from the reduction) must exceed the upper ``false_alarm`` quantile of a Poisson law
  of mean ``level / v``, ``level`` the frame's mean over χ of that q bin. Where many counts
  fall in a bin (the 4 × 4-binned readout) the floor lies far below k × the mean and
  changes nothing.
* Connectivity: face neighbours (6-connectivity) in (z, x, χ); χ is periodic, so a spot
  crossing 359°/0° is one grain.
* Optional column split (`split_columns`; opt-in, tuned on the twin, not in the paper): a
  grain is columnar and a few µm wide, narrower than a 33 µm map column, so a component
  spanning several columns is cut into its column parts, and parts in neighbouring columns
  are joined again only when their azimuths agree within a tolerance (one grain straddling
  a column boundary shows the same χ in both).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Background means (equivalent counts per bin) on which the Poisson quantile is tabulated.
_FLOOR_LAMBDA = np.geomspace(1e-4, 1e5, 361)


def poisson_floor(
    background: np.ndarray, variance: np.ndarray, *, false_alarm: float
) -> np.ndarray:
    """Smallest intensity a bin must exceed not to be Poisson noise of its background.

    Parameters
    ----------
    background : array of float
        Li-free intensity of each bin (any shape broadcastable with ``variance``).
    variance : array of float
        Poisson variance factor v of each bin (`opmap.analysis.reduction.ReducedFrames`:
        intensity variance = intensity · v); NaN for empty bins (floor NaN: never a spot).
    false_alarm : float
        Probability, per bin, that background noise alone exceeds the floor, in (0, 0.5).

    Returns
    -------
    numpy.ndarray
        float32 intensity: ``v · c*`` with c* the upper ``false_alarm`` quantile of a Poisson
        law of mean ``background / v`` counts (tabulated on a log grid, interpolated).

    Examples
    --------
    >>> floor = poisson_floor(np.array([0.15, 50.0]), np.array([0.5, 0.5]), false_alarm=1e-7)
    >>> print(np.round(floor, 1))      # mean 0.3 counts -> 6 counts; 100 counts -> 156
    [ 3. 78.]
    """
    if not 0.0 < false_alarm < 0.5:
        raise ValueError(f"false_alarm must be in (0, 0.5), got {false_alarm}")
    quantile = stats.poisson.isf(false_alarm, _FLOOR_LAMBDA)
    v = np.asarray(variance, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.clip(np.asarray(background, dtype=np.float64) / v, _FLOOR_LAMBDA[0], None)
        counts = np.interp(np.log(lam), np.log(_FLOOR_LAMBDA), quantile)
    return (counts * v).astype(np.float32)


def spot_mask(
    window: np.ndarray, *, k: float, background: np.ndarray | None = None, chi_step: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean spot mask (n_z, n_x, n_chi) and net intensity summed over q (same shape).

    ``window`` is (n_z, n_x, n_chi, n_q); ``background`` broadcastable to it, default the
    per-frame, per-q median over every ``chi_step``-th azimuth bin (4: 90 of 360 samples, a
    4× cheaper median whose extra noise, ~1/√90 of the background's spread, is negligible
    next to a threshold of k × the mean; 1: all bins). Besides the input's float32 copy the
    only full-size temporary is one boolean comparison.
    """
    (mask,), net = spot_masks(window, ks=(k,), background=background, chi_step=chi_step)
    return mask, net


def spot_masks(
    window: np.ndarray,
    *,
    ks: tuple[float, ...],
    background: np.ndarray | None = None,
    chi_step: int = 4,
    variance: np.ndarray | None = None,
    false_alarm: float | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """`spot_mask` for several thresholds ``ks`` sharing one background and net intensity.

    With ``variance`` (n_chi, n_q) and ``false_alarm``, a spot voxel must also exceed the
    `poisson_floor` of its background. Returns the masks (one (n_z, n_x, n_chi) boolean
    array per k, in the order of ``ks``) and the net intensity (n_z, n_x, n_chi).
    """
    w = np.asarray(window, dtype=np.float32)
    n_z, n_x, n_chi, n_q = w.shape
    if background is None:
        sub = w[:, :, ::chi_step, :]
        mid = sub.shape[2] // 2
        bg = np.partition(sub, mid, axis=2)[:, :, mid : mid + 1, :]
    else:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), w.shape)
    # No BLAS here: a threaded BLAS matmul's float32 sums depend on how many threads it used
    # for the call, which changes with concurrent callers, so two runs of one seed would count
    # different grains. numpy's own reductions sum in a fixed order (float64 for the frame,
    # einsum's loop over the short q axis: ~4x faster than ``sum(axis=3)``).
    frame_mean = w.reshape(n_z * n_x, n_chi * n_q).sum(axis=1, dtype=np.float64)

    def threshold_of(k: float) -> np.ndarray:
        return (k / (n_chi * n_q) * frame_mean).astype(np.float32).reshape(n_z, n_x)

    test = w  # the intensities compared with the thresholds; ``net`` keeps ``w``
    if variance is not None and false_alarm is not None:
        test = _below_floor_as_background(
            w, bg, threshold_of(min(ks)), np.asarray(variance), false_alarm
        )
    if len(ks) == 1:
        # net > threshold  <=>  w > bg + threshold; any() over q as a uint8 dot product.
        above = test > bg + threshold_of(ks[0])[:, :, None, None]
        small_q = n_q < 256  # the uint8 dot product cannot overflow
        masks = [
            np.asarray(
                (above.view(np.uint8) @ np.ones(n_q, np.uint8)) > 0
                if small_q
                else above.any(axis=3)
            )
        ]
    else:  # one max over q, then one cheap (z, x, χ) comparison per k
        peak = (test - bg).max(axis=3)
        masks = [peak > threshold_of(k)[:, :, None] for k in ks]
    net = np.einsum("zxcq->zxc", w) - np.einsum("zxcq->zxc", bg)
    return masks, net


def _below_floor_as_background(
    w: np.ndarray, bg: np.ndarray, lowest_threshold: np.ndarray, variance: np.ndarray,
    false_alarm: float,
) -> np.ndarray:  # fmt: skip
    """``w`` with the voxels that pass the lowest k threshold but not their `poisson_floor`
    set to their background (so they are never spots).

    The floor's Poisson mean is the frame's mean over χ of each q bin, not the median ``bg``:
    at ~1 count per bin most bins hold 0 counts and the median is 0, which would put the
    floor at the quantile of an empty law (spots make the mean slightly high: a
    conservative floor). It is evaluated only on the candidates (a small share of the
    window): a full-window floor costs ~8× the rest of the detection.
    """
    full_bg = np.broadcast_to(bg, w.shape)
    candidate = np.nonzero(w > full_bg + lowest_threshold[:, :, None, None])
    level = w.mean(axis=2, keepdims=True, dtype=np.float64)
    floor = poisson_floor(
        level[candidate[0], candidate[1], 0, candidate[3]],
        variance[candidate[2], candidate[3]],
        false_alarm=false_alarm,
    )
    noise = ~(w[candidate] > floor)  # NaN floor (an empty bin): never a spot
    if not noise.any():
        return w
    test = w.copy()
    hit = tuple(index[noise] for index in candidate)
    test[hit] = full_bg[hit]
    return test


def label_periodic(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label (z, x, χ) connected components with χ (last axis) periodic.

    Returns labels (int32, 0 = background, grains 1..n) and n.
    """
    labels, n = ndimage.label(mask)
    first, last = labels[..., 0], labels[..., -1]
    touch = (first > 0) & (last > 0)
    if n == 0 or not touch.any():
        return labels.astype(np.int32), n
    # Union labels that meet across 359° | 0°: components of the label adjacency graph.
    a, b = first[touch], last[touch]
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    # Renumber components of labels 1..n to 1..n_new in order of first appearance.
    _, new_ids = np.unique(comp[1:], return_inverse=True)
    lut = np.concatenate([[0], new_ids + 1]).astype(np.int32)
    return lut[labels], int(new_ids.max() + 1)


def split_columns(
    labels: np.ndarray, net: np.ndarray, chi_deg: np.ndarray, *, tol_deg: float
) -> tuple[np.ndarray, int]:
    """Cut (z, x, χ) components into x-column parts; rejoin neighbouring parts whose
    intensity-weighted azimuths differ by at most ``tol_deg``.

    ``labels`` (n_z, n_x, n_chi) from `label_periodic`, ``net`` the same shape (weights,
    clipped at 0). Returns new labels (int32, 1..n) and n.
    """
    if not tol_deg >= 0:
        raise ValueError(f"tol_deg must be >= 0, got {tol_deg}")
    sel = labels > 0
    if not sel.any():
        return labels.astype(np.int32), 0
    _, xi, ci = np.nonzero(sel)
    key = labels[sel].astype(np.int64) * labels.shape[1] + xi
    parts, part = np.unique(key, return_inverse=True)
    w = np.clip(net[sel], 0.0, None).astype(np.float64) + 1e-12
    rad = np.deg2rad(np.asarray(chi_deg, dtype=float)[ci])
    sin = np.bincount(part, w * np.sin(rad), minlength=parts.size)
    cos = np.bincount(part, w * np.cos(rad), minlength=parts.size)
    azimuth = np.rad2deg(np.arctan2(sin, cos))
    # Parts are sorted by (label, column): neighbours of one component are consecutive.
    comp, col = parts // labels.shape[1], parts % labels.shape[1]
    pair = (comp[1:] == comp[:-1]) & (col[1:] == col[:-1] + 1)
    d_chi = np.abs((azimuth[1:] - azimuth[:-1] + 180.0) % 360.0 - 180.0)
    join = np.flatnonzero(pair & (d_chi <= tol_deg))
    graph = coo_matrix((np.ones(join.size), (join, join + 1)), shape=(parts.size, parts.size))
    n, group = connected_components(graph, directed=False)
    out = np.zeros(labels.shape, np.int32)
    out[sel] = group[part] + 1
    return out, int(n)
