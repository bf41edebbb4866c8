"""Batched Levenberg–Marquardt: many small least-squares problems solved at once.

Every profile is an independent problem with the same number of parameters ``k`` and the same
abscissa ``q`` (``m`` points). Per iteration we build the Jacobians ``J`` (n, m, k), the normal
matrices ``JᵀJ`` (n, k, k) with one batched matmul, and solve all damped systems with one
batched ``np.linalg.solve``; there is no Python loop over profiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: model(q (m,), params (n, k)) -> (values (n, m), jacobian (n, m, k))
Model = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
#: project(params (n, k)) -> params (n, k) satisfying the bounds (applied in place is allowed)
Projector = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LmSolution:
    """Raw output of `solve_lm` (internal; public results wrap it).

    ``params`` (n, k); ``covariance`` (n, k, k) = s²·(JᵀJ)⁻¹ with s² = RSS / (m_valid − k_free);
    ``rss`` (n,); ``dof`` (n,) degrees of freedom; ``converged`` (n,) bool.
    """

    params: np.ndarray
    covariance: np.ndarray
    rss: np.ndarray
    dof: np.ndarray
    converged: np.ndarray


def _normal_equations(
    jac: np.ndarray, resid: np.ndarray, valid: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # Invalid (NaN) points and fixed parameters contribute nothing.
    jw = jac * valid[:, :, None] * free[None, None, :]
    jtj = np.matmul(jw.transpose(0, 2, 1), jw)
    grad = np.matmul(jw.transpose(0, 2, 1), (resid * valid)[:, :, None])[:, :, 0]
    return jtj, grad


def _rss(model: Model, q: np.ndarray, y: np.ndarray, valid: np.ndarray, p: np.ndarray):
    values, jac = model(q, p)
    resid = np.where(valid, y - values, 0.0)
    return np.einsum("nm,nm->n", resid, resid), resid, jac


def solve_lm(
    model: Model,
    q: np.ndarray,
    y: np.ndarray,
    p0: np.ndarray,
    *,
    free: np.ndarray | None = None,
    project: Projector | None = None,
    max_iter: int = 40,
    rtol: float = 1e-8,
) -> LmSolution:
    """Minimise ``sum((y - model(q, p))**2)`` for every row of ``y`` (NaN points ignored)."""
    n, k = p0.shape
    free = np.ones(k, dtype=bool) if free is None else np.asarray(free, dtype=bool)
    valid = np.isfinite(y)
    y0 = np.where(valid, y, 0.0)
    p = p0.copy()
    lam = np.full(n, 1e-3)
    rss, resid, jac = _rss(model, q, y0, valid, p)
    converged = np.zeros(n, dtype=bool)
    eye = np.eye(k)
    fixed_diag = eye * (~free)[None, :]
    for _ in range(max_iter):
        active = ~converged
        if not active.any():
            break
        idx = np.flatnonzero(active)
        jtj, grad = _normal_equations(jac[idx], resid[idx], valid[idx], free)
        diag = np.einsum("nkk->nk", jtj)
        # Marquardt scaling; fixed parameters get a unit diagonal so the system stays regular.
        damped = jtj + lam[idx, None, None] * (diag[:, :, None] * eye) + fixed_diag
        damped += 1e-30 * eye
        try:
            step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.matmul(np.linalg.pinv(damped), grad[:, :, None])[:, :, 0]
        trial = p[idx] + step
        if project is not None:
            trial = project(trial)
        rss_t, resid_t, jac_t = _rss(model, q, y0[idx], valid[idx], trial)
        better = np.isfinite(rss_t) & (rss_t <= rss[idx])
        # Settled: the cost changes by less than rtol, whether or not the step was taken.
        small = np.abs(rss[idx] - rss_t) <= rtol * (rss[idx] + 1e-300)
        acc = idx[better]
        p[acc], rss[acc], resid[acc], jac[acc] = (
            trial[better],
            rss_t[better],
            resid_t[better],
            jac_t[better],
        )
        lam[idx] = np.where(better, lam[idx] * 0.3, lam[idx] * 10.0)
        converged[idx[small]] = True
        converged[idx[lam[idx] > 1e12]] = True
    jtj, _ = _normal_equations(jac, resid, valid, free)
    dof = valid.sum(axis=1) - int(free.sum())
    s2 = np.where(dof > 0, rss / np.maximum(dof, 1), np.nan)
    both_free = free[:, None] & free[None, :]
    cov = np.where(both_free, _safe_inverse(jtj + fixed_diag), 0.0) * s2[:, None, None]
    # lam > 1e12: even tiny gradient steps fail to lower the cost, i.e. a numerical minimum.
    return LmSolution(p, cov, rss, dof, converged)


def _safe_inverse(mat: np.ndarray) -> np.ndarray:
    """Batched inverse; singular matrices give NaN rather than an exception.

    Jacobi-scaled first (parameters differ by many orders of magnitude: amplitudes ~1e4,
    positions in Å⁻¹), so the conditioning test sees the correlations, not the units. A
    parameter the data do not constrain at all (zero column, e.g. the position of a peak of
    zero amplitude) gets NaN variance and no covariance with the others.
    """
    diag = np.einsum("nkk->nk", mat)
    dead = ~(diag > 0)
    scale = 1.0 / np.sqrt(np.where(dead, 1.0, diag))
    scaled = mat * scale[:, :, None] * scale[:, None, :]
    scaled = np.where(dead[:, :, None] | dead[:, None, :], 0.0, scaled)
    scaled = scaled + np.eye(mat.shape[1]) * dead[:, None, :]
    out = np.full_like(mat, np.nan)
    cond = np.linalg.cond(scaled)
    ok = np.isfinite(cond) & (cond < 1e12)
    if ok.any():
        inv = np.linalg.inv(scaled[ok]) * scale[ok, :, None] * scale[ok, None, :]
        dead_ok = dead[ok]
        inv = np.where(dead_ok[:, :, None] | dead_ok[:, None, :], 0.0, inv)
        idx = np.arange(mat.shape[1])
        inv[:, idx, idx] = np.where(dead_ok, np.nan, inv[:, idx, idx])
        out[ok] = inv
    return out


def propagate(grad: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Standard uncertainty of a derived quantity: sqrt(∇g · C · ∇gᵀ), shapes (n, k), (n, k, k).

    Parameters with NaN variance only poison the result when the gradient involves them.
    """
    undefined = np.isnan(np.einsum("nkk->nk", cov))
    var = np.einsum("nk,nkl,nl->n", grad, np.nan_to_num(cov, nan=0.0), grad)
    bad = np.any(undefined & (grad != 0), axis=1) | np.all(undefined, axis=1)
    return np.sqrt(np.where((var >= 0) & ~bad, var, np.nan))
