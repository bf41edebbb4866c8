"""Peak models with analytic Jacobians and moment-based starting values (batched).

One Gaussian on a linear background, parameters ``[A, mu, s, b0, b1]``::

    f(q) = A·exp(−(q − mu)² / 2s²) + b0 + b1·(q − q_c)

with ``q_c`` the centre of the q grid (keeps b0 and b1 uncorrelated). Two Gaussians with a
shared width, parameters ``[A1, mu1, A2, mu2, s, b0, b1]``.
"""

from __future__ import annotations

import warnings

import numpy as np

SQRT_2PI = float(np.sqrt(2.0 * np.pi))
#: FWHM = 2·sqrt(2 ln 2)·sigma
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))


def _gauss(q: np.ndarray, amp: np.ndarray, mu: np.ndarray, s: np.ndarray):
    d = q[None, :] - mu[:, None]
    inv_s2 = 1.0 / (s * s)[:, None]
    g = np.exp(-0.5 * d * d * inv_s2)
    return g, d, inv_s2


def gauss_linear(q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values (n, m) and Jacobian (n, m, 5) of one Gaussian plus a linear background."""
    amp, mu, s, b0, b1 = p.T
    qc = q - 0.5 * (q[0] + q[-1])
    g, d, inv_s2 = _gauss(q, amp, mu, s)
    ag = amp[:, None] * g
    values = ag + b0[:, None] + b1[:, None] * qc[None, :]
    jac = np.empty((*values.shape, 5))
    jac[..., 0] = g
    jac[..., 1] = ag * d * inv_s2
    jac[..., 2] = ag * d * d * inv_s2 / s[:, None]
    jac[..., 3] = 1.0
    jac[..., 4] = qc[None, :]
    return values, jac


def two_gauss_linear(q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values (n, m) and Jacobian (n, m, 7) of two Gaussians (shared sigma) plus a line."""
    a1, mu1, a2, mu2, s, b0, b1 = p.T
    qc = q - 0.5 * (q[0] + q[-1])
    g1, d1, inv_s2 = _gauss(q, a1, mu1, s)
    g2, d2, _ = _gauss(q, a2, mu2, s)
    ag1, ag2 = a1[:, None] * g1, a2[:, None] * g2
    values = ag1 + ag2 + b0[:, None] + b1[:, None] * qc[None, :]
    jac = np.empty((*values.shape, 7))
    jac[..., 0] = g1
    jac[..., 1] = ag1 * d1 * inv_s2
    jac[..., 2] = g2
    jac[..., 3] = ag2 * d2 * inv_s2
    jac[..., 4] = (ag1 * d1 * d1 + ag2 * d2 * d2) * inv_s2 / s[:, None]
    jac[..., 5] = 1.0
    jac[..., 6] = qc[None, :]
    return values, jac


def edge_background(q: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Line through the medians of the first and last eighth of each profile: (b0, b1)."""
    m = q.size
    n_edge = max(2, m // 8)
    with warnings.catch_warnings():
        # All-NaN edges are expected for empty profiles; they are flagged downstream.
        warnings.simplefilter("ignore", RuntimeWarning)
        left = np.nanmedian(y[:, :n_edge], axis=1)
        right = np.nanmedian(y[:, -n_edge:], axis=1)
    left = np.where(np.isfinite(left), left, right)
    right = np.where(np.isfinite(right), right, left)
    q_left, q_right = q[:n_edge].mean(), q[-n_edge:].mean()
    b1 = (right - left) / (q_right - q_left)
    qc_left = q_left - 0.5 * (q[0] + q[-1])
    b0 = left - b1 * qc_left
    return np.nan_to_num(b0), np.nan_to_num(b1)


def single_start(q: np.ndarray, y: np.ndarray, s_min: float, s_max: float) -> np.ndarray:
    """Starting values (n, 5) from moments: edge line, peak maximum, area / height width."""
    b0, b1 = edge_background(q, y)
    qc = q - 0.5 * (q[0] + q[-1])
    net = y - (b0[:, None] + b1[:, None] * qc[None, :])
    finite = np.isfinite(net)
    i = np.clip(np.argmax(np.where(finite, net, -np.inf), axis=1), 1, q.size - 2)
    net = np.where(finite, net, 0.0)
    rows = np.arange(y.shape[0])
    left, top, right = net[rows, i - 1], net[rows, i], net[rows, i + 1]
    # Three-point parabola vertex (exact for a parabola, sub-bin for a Gaussian top).
    curv = left - 2.0 * top + right
    safe = np.where(curv < 0, curv, -1.0)
    shift = np.where(curv < 0, 0.5 * (left - right) / safe, 0.0)
    dq = float(np.mean(np.diff(q)))
    mu = q[i] + np.clip(shift, -0.5, 0.5) * dq
    amp = top
    area = np.sum(np.clip(net, 0.0, None), axis=1) * dq
    s = np.where(amp > 0, area / (np.where(amp > 0, amp, 1.0) * SQRT_2PI), s_min)
    return np.stack([amp, mu, np.clip(s, s_min, s_max), b0, b1], axis=1)
