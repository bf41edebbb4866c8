"""The paper's distance correction: peak positions rescaled by the reference reflections.

"Sample-to-detector distance calibration was corrected using the Ti current collector peaks"
(paper, Methods). The PONI distance D belongs to the calibrant's position; the cell sits Δ
further along the beam (Δ > 0: closer to the detector), so a ring of true scattering angle 2θ
lands at radius r = (D − Δ)·tan 2θ, and the integration (which assumes D) reports

    tan 2θ_apparent = s · tan 2θ_true,     s = (D − Δ) / D.

A reference reflection of known d-spacing (Ti (100), d = 2.556 Å; Au (111), 2.354 Å) measured
in a pixel gives s there; every peak of that pixel is then corrected with
tan 2θ = tan 2θ_apparent / s before lattice parameters are computed. A 100 µm offset at
D ≈ 100 mm is s − 1 = −1e−3, i.e. ~0.014 Å in c. The detector is taken perpendicular to the
beam for this ratio (its tilt is in the PONI; the residual of a tilt of a few degrees on s is
second order).

The reference peaks exist only in their layer's rows, so s is fitted over the map as a model
in (x, z) (`fit_distance_scale`): constant, linear in x (the cell turned about z, so the
offset changes along x: the default), or a plane in (x, z) (needs references at two heights).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

__all__ = [
    "REFERENCE_D_ANGSTROM",
    "correct_q",
    "distance_scale",
    "fit_distance_scale",
    "sample_offset_um",
]

#: d-spacings (Å) of the reference reflections (DOMAIN.md): Ti hcp a = 2.951 Å (100), Au fcc
#: a = 4.078 Å (111).
REFERENCE_D_ANGSTROM = {"ti_100": 2.951 * np.sqrt(3.0) / 2.0, "au_111": 4.078 / np.sqrt(3.0)}

DistanceModel = Literal["constant", "linear_x", "plane"]
_MODEL_TERMS = {"constant": 1, "linear_x": 2, "plane": 3}


def _tan_two_theta(q: np.ndarray, wavelength_angstrom: float) -> np.ndarray:
    sin_theta = np.asarray(q, dtype=float) * wavelength_angstrom / (4.0 * np.pi)
    return np.tan(2.0 * np.arcsin(sin_theta))


def _q_from_tan_two_theta(t: np.ndarray, wavelength_angstrom: float) -> np.ndarray:
    return 4.0 * np.pi / wavelength_angstrom * np.sin(0.5 * np.arctan(t))


def _check_wavelength(wavelength_angstrom: float) -> None:
    if not 0 < wavelength_angstrom < 10:
        raise ValueError(f"wavelength_angstrom must be in (0, 10) Å, got {wavelength_angstrom}")


def distance_scale(
    q_measured: np.ndarray, q_true: float | np.ndarray, *, wavelength_angstrom: float
) -> np.ndarray:
    """Scale s = tan 2θ_measured / tan 2θ_true of a reference reflection.

    Parameters
    ----------
    q_measured : array of float
        Fitted reference peak position (Å⁻¹), any shape; NaN stays NaN.
    q_true : float or array broadcastable to ``q_measured``
        The reflection's q from its known d-spacing, 2π/d (Å⁻¹).
    wavelength_angstrom : float
        X-ray wavelength (Å; 0.6888 at 18 keV).

    Returns
    -------
    array of float
        s = (D − Δ)/D for a sample Δ downstream of the calibrated position.

    Examples
    --------
    >>> q_ti = 2 * np.pi / REFERENCE_D_ANGSTROM["ti_100"]
    >>> s = distance_scale(np.array([q_ti, 0.999 * q_ti]), q_ti, wavelength_angstrom=0.6888)
    >>> print(np.round(s, 5))
    [1.      0.99894]
    """
    _check_wavelength(wavelength_angstrom)
    return _tan_two_theta(q_measured, wavelength_angstrom) / _tan_two_theta(
        q_true, wavelength_angstrom
    )


def correct_q(
    q: np.ndarray, scale: float | np.ndarray, *, wavelength_angstrom: float
) -> np.ndarray:
    """Peak positions with the distance correction: tan 2θ = tan 2θ_apparent / s.

    Parameters
    ----------
    q : array of float
        Apparent peak positions (Å⁻¹), any shape.
    scale : float or array broadcastable to ``q``
        s of the same pixels (`distance_scale`, `fit_distance_scale`), > 0.
    wavelength_angstrom : float
        X-ray wavelength (Å).

    Returns
    -------
    array of float
        Corrected q (Å⁻¹); NaN where q or s is NaN.

    Examples
    --------
    A sample 100 µm downstream of the calibrant at D = 100 mm: (003) at c = 14.1 Å appears
    at a larger c; the correction restores it.

    >>> q_true = 6 * np.pi / 14.1
    >>> s = (100e-3 - 100e-6) / 100e-3
    >>> q_app = 4 * np.pi / 0.6888 * np.sin(0.5 * np.arctan(
    ...     s * np.tan(2 * np.arcsin(q_true * 0.6888 / (4 * np.pi)))))
    >>> c_corrected = 6 * np.pi / correct_q(q_app, s, wavelength_angstrom=0.6888)
    >>> print(round(6 * np.pi / q_app - 14.1, 4), abs(c_corrected - 14.1) < 1e-9)
    0.0139 True
    """
    _check_wavelength(wavelength_angstrom)
    s = np.asarray(scale, dtype=float)
    if np.any(s <= 0):
        raise ValueError("scale must be > 0 (s = (D - offset) / D)")
    return _q_from_tan_two_theta(_tan_two_theta(q, wavelength_angstrom) / s, wavelength_angstrom)


def sample_offset_um(scale: np.ndarray | float, *, distance_m: float) -> np.ndarray:
    """Sample offset along the beam, Δ = D·(1 − s) in µm (> 0: towards the detector).

    Examples
    --------
    >>> print(np.round(sample_offset_um(0.999, distance_m=0.1), 6))
    100.0
    """
    if not distance_m > 0:
        raise ValueError(f"distance_m must be > 0, got {distance_m}")
    return (1.0 - np.asarray(scale, dtype=float)) * distance_m * 1e6


def fit_distance_scale(
    q_reference: Mapping[str, np.ndarray],
    *,
    z_um: np.ndarray,
    x_um: np.ndarray,
    wavelength_angstrom: float,
    q_reference_err: Mapping[str, np.ndarray] | None = None,
    q_reference_area: Mapping[str, np.ndarray] | None = None,
    min_area_fraction: float = 0.5,
    model: DistanceModel = "linear_x",
    reject_sigma: float = 5.0,
    max_scale_err: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit s over a map from the reference peaks measured in its pixels.

    Parameters
    ----------
    q_reference : mapping name -> (n_z, n_x) array of float
        Fitted positions (Å⁻¹) of reference reflections named as in
        `REFERENCE_D_ANGSTROM` (NaN where the reflection is absent).
    z_um, x_um : (n_z,), (n_x,) arrays of float
        Row heights and column positions (µm).
    wavelength_angstrom : float
        X-ray wavelength (Å).
    q_reference_err : mapping name -> (n_z, n_x) array of float, optional
        Standard uncertainties of those positions (Å⁻¹): weights of the fit and the basis
        of its uncertainty; default equal weights, uncertainty from the scatter.
    q_reference_area : mapping name -> (n_z, n_x) array of float, optional
        Fitted peak areas of those reflections. Given, only the layer's core rows are used:
        pixels whose area is at least ``min_area_fraction`` of the largest area of that
        reflection in their column. The layer's edge rows (a sliver of it in the beam's
        tail) and stray weak peaks that passed the SNR gate elsewhere in the column bias s
        by tens of µm of offset, and on a narrow map tilt the a + b·x fit.
    min_area_fraction : float, optional
        See ``q_reference_area`` (in [0, 1]; default 0.5: the layer fills at least half of
        what it fills at its best row).
    model : {"constant", "linear_x", "plane"}, optional
        s − 1 as a constant, a + b·x (default: offset and a turn about z), or a + b·x + c·z.
    reject_sigma : float, optional
        Pixels whose normalised residual exceeds this (in units of the robust scatter, MAD ×
        1.4826) are dropped and the fit repeated once (> 0).
    max_scale_err : float, optional
        Largest accepted standard uncertainty of s at any pixel of the map (default 1e-4:
        10 µm at D = 0.1 m); a worse fit (noise, no reference layer in the map) gives NaN.

    Returns
    -------
    scale : (n_z, n_x) array of float
        s in every pixel; NaN when the fit is under-determined or too uncertain.
    coefficients : (n_terms,) array of float
        a, b (per µm of x), c (per µm of z) of s − 1; NaN as above.

    Examples
    --------
    >>> z, x = np.arange(4.0), np.arange(5) * 33.0
    >>> q_ti = 2 * np.pi / REFERENCE_D_ANGSTROM["ti_100"]
    >>> s_true = 1 - (50e-6 + 1e-7 * x) / 0.1                 # 50 µm + a tilt along x
    >>> q = np.full((4, 5), np.nan)
    >>> q[2] = correct_q(q_ti, 1 / s_true, wavelength_angstrom=0.6888)  # Ti row only
    >>> err = np.full((4, 5), 1e-5)
    >>> s, coef = fit_distance_scale({"ti_100": q}, q_reference_err={"ti_100": err}, z_um=z,
    ...                              x_um=x, wavelength_angstrom=0.6888)
    >>> print(np.allclose(s, s_true[None, :], atol=1e-9), np.round(coef * 1e6, 4))
    True [-500.   -1.]
    """
    if model not in _MODEL_TERMS:
        raise ValueError(f"model must be one of {sorted(_MODEL_TERMS)}, got {model!r}")
    if not (reject_sigma > 0 and max_scale_err > 0):
        raise ValueError(
            f"reject_sigma and max_scale_err must be > 0, got {reject_sigma}, {max_scale_err}"
        )
    if not 0.0 <= min_area_fraction <= 1.0:
        raise ValueError(f"min_area_fraction must be in [0, 1], got {min_area_fraction}")
    z, x = np.asarray(z_um, float), np.asarray(x_um, float)
    zz, xx = np.meshgrid(z, x, indexing="ij")
    if q_reference_area is not None:
        q_reference = _core_rows(q_reference, q_reference_area, min_area_fraction)
    design, y, sigma = _observations(q_reference, q_reference_err, zz, xx, wavelength_angstrom)
    design = design[:, : _MODEL_TERMS[model]]
    coef, cov = _robust_wlsq(design, y, sigma, reject_sigma, q_reference_err is None)
    full = np.zeros(3)
    full[: coef.size] = coef
    every = np.stack([np.ones(zz.size), xx.ravel(), zz.ravel()], 1)[:, : coef.size]
    worst_err = np.sqrt(np.max(np.einsum("ij,jk,ik->i", every, cov, every)))
    if not worst_err <= max_scale_err:
        coef = np.full(coef.size, np.nan)
        full[:] = np.nan
    return 1.0 + full[0] + full[1] * xx + full[2] * zz, coef


def _core_rows(q_reference, q_reference_area, min_area_fraction):
    """Positions with NaN outside each column's core rows of the reflection's layer."""
    core = {}
    for name, q in q_reference.items():
        q = np.asarray(q, dtype=float)
        area = np.asarray(q_reference_area[name], dtype=float)
        if area.shape != q.shape:
            raise ValueError(
                f"q_reference_area[{name!r}] must have the shape of its positions {q.shape}, "
                f"got {area.shape}"
            )
        found = np.isfinite(q) & np.isfinite(area)
        with np.errstate(invalid="ignore"):
            best = np.max(np.where(found, area, -np.inf), axis=0, keepdims=True)
            core[name] = np.where(found & (area >= min_area_fraction * best), q, np.nan)
    return core


def _observations(q_reference, q_reference_err, zz, xx, wavelength_angstrom):
    """Rows [1, x, z], s − 1 and σ(s) of every pixel with a reference peak."""
    unknown = sorted(set(q_reference) - set(REFERENCE_D_ANGSTROM))
    if unknown:
        raise ValueError(
            f"unknown reference reflections {unknown}: {sorted(REFERENCE_D_ANGSTROM)}"
        )
    rows, values, sigmas = [np.zeros((0, 3))], [np.zeros(0)], [np.zeros(0)]
    for name, q in q_reference.items():
        q = np.asarray(q, dtype=float)
        if q.shape != zz.shape:
            raise ValueError(
                f"q_reference[{name!r}] must be (n_z, n_x) = {zz.shape}, got {q.shape}"
            )
        q_true = 2 * np.pi / REFERENCE_D_ANGSTROM[name]
        s = distance_scale(q, q_true, wavelength_angstrom=wavelength_angstrom)
        err = np.ones_like(q) if q_reference_err is None else np.asarray(q_reference_err[name])
        # ds/dq by a finite difference: σ(s) = |ds/dq| σ(q)
        ds_dq = (
            distance_scale(q + 1e-6, q_true, wavelength_angstrom=wavelength_angstrom) - s
        ) / 1e-6
        sig = np.abs(ds_dq) * err
        ok = np.isfinite(s) & np.isfinite(sig) & (sig > 0)
        rows.append(np.stack([np.ones(ok.sum()), xx[ok], zz[ok]], axis=1))
        values.append(s[ok] - 1.0)
        sigmas.append(sig[ok])
    return np.concatenate(rows), np.concatenate(values), np.concatenate(sigmas)


def _robust_wlsq(
    design: np.ndarray, y: np.ndarray, sigma: np.ndarray, reject_sigma: float,
    from_scatter: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Weighted least squares with one pass of outlier rejection; coefficients and their
    covariance, scaled by the reduced χ² (``from_scatter``: always; else when above 1);
    NaN / inf when under-determined."""
    n_terms = design.shape[1]
    keep = np.ones(y.size, dtype=bool)
    for _ in range(2):
        a, b = design[keep] / sigma[keep, None], y[keep] / sigma[keep]
        if b.size <= n_terms or np.linalg.matrix_rank(a) < n_terms:
            return np.full(n_terms, np.nan), np.full((n_terms, n_terms), np.inf)
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        norm_resid = (y - design @ coef) / sigma
        spread = 1.4826 * np.median(np.abs(norm_resid[keep] - np.median(norm_resid[keep])))
        keep = np.abs(norm_resid) <= reject_sigma * max(spread, 1e-9)
    chi2 = float(np.sum(((y[keep] - design[keep] @ coef) / sigma[keep]) ** 2))
    reduced_chi2 = chi2 / max(keep.sum() - n_terms, 1)
    reduced_chi2 = reduced_chi2 if from_scatter else max(reduced_chi2, 1.0)
    cov = np.linalg.pinv(a.T @ a) * reduced_chi2
    return coef, cov
