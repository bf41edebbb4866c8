"""Grain identity across consecutive maps by optimal assignment.

Cost of linking grain i (map t−1) to grain j (map t)::

    (Δx / tol_x)² + (Δz / tol_z)² + (Δχ / tol_χ)²     with Δχ the circular difference

Pairs with any |Δ| above its tolerance are forbidden; `linear_sum_assignment` minimises the
total cost of the allowed pairs. Only consecutive maps are linked: a grain absent from one map
is deceased and a later grain at the same place is new (the paper counts grains in
diffraction condition, and a grain leaving it is not observable).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_FORBIDDEN = 1e9


def circular_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest signed difference a − b on the circle (deg, in [−180, 180))."""
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def link_pair(
    prev: dict[str, np.ndarray], cur: dict[str, np.ndarray], *, tol_x_um: float,
    tol_z_um: float, tol_chi_deg: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Indices (i_prev, j_cur) of the linked grains between two maps."""
    n_prev, n_cur = prev["x_um"].size, cur["x_um"].size
    if n_prev == 0 or n_cur == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    dx = (prev["x_um"][:, None] - cur["x_um"][None, :]) / tol_x_um
    dz = (prev["z_um"][:, None] - cur["z_um"][None, :]) / tol_z_um
    dc = circular_diff_deg(prev["azimuth_deg"][:, None], cur["azimuth_deg"][None, :]) / tol_chi_deg
    allowed = (np.abs(dx) <= 1) & (np.abs(dz) <= 1) & (np.abs(dc) <= 1)
    cost = np.where(allowed, dx * dx + dz * dz + dc * dc, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    keep = allowed[rows, cols]
    return rows[keep], cols[keep]
