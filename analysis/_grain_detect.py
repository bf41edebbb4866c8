"""Li (110) spot segmentation in one map: background, threshold, periodic labelling.

Choices where the paper is vague (documented in docs/analysis-products.md):

* Background per frame and q bin: the median over the 360 azimuths of that frame's window
  (the upper middle element, ``np.partition`` at n_chi // 2). Li spots are narrow in azimuth
  and cover far less than half the ring, so the median is a Li-free estimate from the same
  frame (time, z, x), as the paper's "Li-free detector image" requires. A caller can pass
  explicit background frames instead.
* Threshold: a voxel (z, x, χ, q) is a spot voxel when its background-subtracted intensity
  exceeds k × the mean *raw* intensity of that frame's window (k = 10 by default): the paper's
  "10 times the mean intensity ... mostly composed of the remaining contribution from the
  background". A (z, x, χ) pixel is on when any of its q bins is a spot voxel.
* Connectivity: face neighbours (6-connectivity) in (z, x, χ); χ is periodic, so a spot
  crossing 359°/0° is one grain.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def spot_mask(
    window: np.ndarray, *, k: float, background: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean spot mask (n_z, n_x, n_chi) and net intensity summed over q (same shape).

    ``window`` is (n_z, n_x, n_chi, n_q); ``background`` broadcastable to it, default the
    per-frame, per-q median over χ. No array of the full 4-D size is kept besides the input's
    float32 copy and one temporary of the same size.
    """
    w = np.asarray(window, dtype=np.float32)
    if background is None:
        n_chi = w.shape[2]
        bg = np.partition(w, n_chi // 2, axis=2)[:, :, n_chi // 2 : n_chi // 2 + 1, :]
    else:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), w.shape)
    threshold = np.float32(k) * w.mean(axis=(2, 3), dtype=np.float32)
    # net > threshold  <=>  w > bg + threshold; the 4-D comparison is the only temporary.
    mask = (w > bg + threshold[:, :, None, None]).any(axis=3)
    net = w.sum(axis=3) - np.broadcast_to(bg, w.shape).sum(axis=3)
    return mask, net


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
