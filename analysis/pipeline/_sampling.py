"""Detector-sampling correction of fitted (003) positions (opt-in, off by default).

**Labelled model dependence**: the correction models rings with the same formula the twin's
renderer uses (pixel bounding box, one-pixel Gaussian point spread, Gaussian peak), and it is
validated only on that renderer's noise-free frames; a real Eiger has no such blur. So it is
never applied unless asked for (``sampling`` of `analyze_map`, ``sampling_options`` of the
live analysis / replay, ``--sampling-correction`` of ``benchmarks/validate_twin.py``), and the
products' metadata ``sampling_correction`` says whether it was.

A binned pixel integrates the ring over its q extent. Where a family's spot lies along pixel
rows or columns (χ near 0, 90, 180, 270°) every pixel of its sector sees the ring at nearly
the same sub-pixel phase, so the sector profile is the peak sampled at a few fixed q and a
Gaussian fitted to it is pulled towards the nearest pixel centre: at 2 × 2 binning
(0.013 Å⁻¹ per pixel, peak FWHM 0.010 Å⁻¹) by up to ~0.004 Å in c, the same in every frame.

The correction is computed from the geometry alone: noise-free rings (a Gaussian in q of
FWHM ``w`` (the detector point spread added in quadrature) averaged over each pixel's q
extent, pyFAI's corner bounding box; spots of
``chi_fwhm_deg`` at the family's azimuths) are reduced by the same `CompiledReduction` and
fitted by the same `fit_gaussian`, on a grid of true positions q₀ and widths w. A measured
(position, σ) is mapped back to q₀ by interpolation in that table: in q₀ at each width, then
linearly in the fitted σ between widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ..fitting import fit_gaussian
from ..geometry import DetectorGeometry
from ..reduction import CompiledReduction
from ._params import AnalysisParameters

__all__ = ["SamplingCorrection", "sampling_correction"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class SamplingCorrection:
    """Tables per profile key (e.g. ``"par:003"``) of fitted → true peak positions.

    Attributes
    ----------
    true_q : Mapping[str, numpy.ndarray]
        (n_q0,) true positions q₀ (Å⁻¹), increasing.
    fitted_q, fitted_sigma_q : Mapping[str, numpy.ndarray]
        (n_width, n_q0) position and σ that `fit_gaussian` returns for the noise-free ring.
    fwhm_q : numpy.ndarray
        (n_width,) intrinsic FWHM of the table's rings (Å⁻¹), increasing.
    """

    true_q: Mapping[str, np.ndarray]
    fitted_q: Mapping[str, np.ndarray]
    fitted_sigma_q: Mapping[str, np.ndarray]
    fwhm_q: np.ndarray

    def correct(self, key: str, position_q: np.ndarray, sigma_q: np.ndarray) -> np.ndarray:
        """True peak positions (Å⁻¹) for fitted positions and σ of profile ``key``.

        Keys without a table and NaN inputs are returned unchanged; positions outside the
        table's range are shifted by the correction at its nearest end.
        """
        q = np.asarray(position_q, dtype=float)
        if key not in self.true_q:
            return q
        true, fit, sig = self.true_q[key], self.fitted_q[key], self.fitted_sigma_q[key]
        # Per width: q₀(q_fit) and σ_fit(q_fit) by interpolation along the table.
        q0 = np.stack([q + np.interp(q, f, true - f) for f in fit])  # (n_width, n)
        s = np.stack([np.interp(q, f, g) for f, g in zip(fit, sig, strict=True)])
        sigma = np.asarray(sigma_q, dtype=float)
        # Linear interpolation in σ between the two table widths that bracket it (clamped).
        k = np.clip((s < sigma[None]).sum(0) - 1, 0, len(fit) - 2)
        cols = np.arange(q.size)
        s_lo, s_hi = s[k, cols], s[k + 1, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.clip(np.where(s_hi > s_lo, (sigma - s_lo) / (s_hi - s_lo), 0.0), 0.0, 1.0)
        out = (1 - u) * q0[k, cols] + u * q0[k + 1, cols]
        return np.where(np.isfinite(q) & np.isfinite(out), out, q).reshape(q.shape)


def _pixel_tables(geometry: DetectorGeometry):
    ai = geometry.integrator
    corners = np.asarray(ai.corner_array(geometry.shape, unit="q_A^-1"))[..., 0]
    chi = geometry.chi_deg_array()
    return corners.min(-1), corners.max(-1), chi


def sampling_correction(
    reduction: CompiledReduction,
    geometry: DetectorGeometry,
    params: AnalysisParameters,
    *,
    fwhm_q: Sequence[float] = (0.007, 0.010, 0.014),
    c_range_angstrom: tuple[float, float] = (13.9, 14.5),
    step_q: float = 0.0005,
    chi_fwhm_deg: float = 10.0,
    psf_fwhm_pixels: float = 1.0,
    batch: int = 16,
) -> SamplingCorrection:
    """Build the (003) sampling correction of ``params``' families for one geometry.

    Parameters
    ----------
    reduction : CompiledReduction
        The reduction the frames go through
        (``compile_reduction(params.reduction_plan(), geometry)``).
    geometry : DetectorGeometry
        Its geometry (pixel corners and azimuths).
    params : AnalysisParameters
        Families (sector azimuths) and the fit's ``fit_min_snr``.
    fwhm_q : sequence of float, optional
        Intrinsic peak FWHM of the table (Å⁻¹), at least two, increasing.
    c_range_angstrom : (float, float), optional
        c range covered (Å); positions outside use the nearest end's correction.
    step_q : float, optional
        Grid step of q₀ (Å⁻¹), in (0, 0.005]: well below one pixel's q extent.
    chi_fwhm_deg : float, optional
        Azimuthal FWHM of the model spots (deg), > 0.
    psf_fwhm_pixels : float, optional
        Detector point-spread FWHM in units of each pixel's q extent, added in quadrature to
        the ring width (an instrument property; the twin's Eiger uses 1.0), in [0, 5].
    batch : int, optional
        Model frames reduced at once (memory: batch × frame size × 4 bytes).

    Returns
    -------
    SamplingCorrection

    Raises
    ------
    ValueError
        Widths not increasing / fewer than two, a bad c range or step.
    """
    widths = np.asarray(fwhm_q, dtype=float)
    _check_options(widths, c_range_angstrom, step_q, psf_fwhm_pixels, chi_fwhm_deg)
    c_lo, c_hi = c_range_angstrom
    q_lo, q_hi, chi = _pixel_tables(geometry)
    grid = np.arange(6 * np.pi / c_hi, 6 * np.pi / c_lo + step_q, step_q)
    true_q, fitted_q, fitted_sigma = {}, {}, {}
    for family in params.families.family:
        key = f"{family.name}:003"
        ring = _annulus(q_lo, q_hi, chi, family.azimuths_003_deg, grid, widths, chi_fwhm_deg)
        fits = [
            _fit_model_rings(reduction, key, ring, grid, w, psf_fwhm_pixels, batch) for w in widths
        ]
        pos = np.stack([position for position, _ in fits])
        sig = np.stack([sigma for _, sigma in fits])
        good = np.all(np.isfinite(pos) & np.isfinite(sig), axis=0)
        true_q[key], fitted_q[key], fitted_sigma[key] = grid[good], pos[:, good], sig[:, good]
    return SamplingCorrection(true_q, fitted_q, fitted_sigma, widths)


def _check_options(
    widths: np.ndarray,
    c_range_angstrom: tuple[float, float],
    step_q: float,
    psf_fwhm_pixels: float,
    chi_fwhm_deg: float,
) -> None:
    if widths.size < 2 or np.any(np.diff(widths) <= 0) or widths[0] <= 0:
        raise ValueError(f"fwhm_q must be >= 2 increasing positive widths, got {widths.tolist()}")
    c_lo, c_hi = c_range_angstrom
    if not 0 < c_lo < c_hi:
        raise ValueError(f"c_range_angstrom must be (low, high), 0 < low < high: {c_lo, c_hi}")
    if not 0 < step_q <= 0.005:
        raise ValueError(f"step_q must be in (0, 0.005] Å⁻¹, got {step_q}")
    if not 0 <= psf_fwhm_pixels <= 5:
        raise ValueError(f"psf_fwhm_pixels must be in [0, 5], got {psf_fwhm_pixels}")
    if not chi_fwhm_deg > 0:
        raise ValueError(f"chi_fwhm_deg must be > 0, got {chi_fwhm_deg}")


@dataclass(frozen=True)
class _Annulus:
    """The pixels a family's model rings can reach: bool (H, W) ``near``, and per pixel of
    it the q extent ``lo``–``hi`` (Å⁻¹) and the spot weight in χ (× 1000 counts)."""

    near: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray


def _annulus(
    q_lo: np.ndarray,
    q_hi: np.ndarray,
    chi: np.ndarray,
    azimuths_deg: Sequence[float],
    grid: np.ndarray,
    widths: np.ndarray,
    chi_fwhm_deg: float,
) -> _Annulus:
    # Spot weight in χ, and the pixels of the annulus the model rings can reach.
    d_chi = np.stack([(chi - a + 180.0) % 360.0 - 180.0 for a in azimuths_deg])
    chi_weight = np.exp(-0.5 * (np.min(np.abs(d_chi), 0) / (chi_fwhm_deg * _FWHM_TO_SIGMA)) ** 2)
    near = (q_hi > grid[0] - 4 * widths[-1]) & (q_lo < grid[-1] + 4 * widths[-1])
    near &= chi_weight > 1e-4
    return _Annulus(near, q_lo[near], q_hi[near], 1e3 * chi_weight[near])


def _fit_model_rings(
    reduction: CompiledReduction,
    key: str,
    ring: _Annulus,
    grid: np.ndarray,
    fwhm_q: float,
    psf_fwhm_pixels: float,
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fitted position and σ (Å⁻¹) of noise-free rings of FWHM ``fwhm_q`` at each q₀ of grid."""
    span = np.maximum(ring.hi - ring.lo, 1e-12)
    # Per pixel: the ring width with the detector blur in quadrature.
    width = np.hypot(fwhm_q, psf_fwhm_pixels * span) * _FWHM_TO_SIGMA
    scale = (1.0 / (np.sqrt(2.0) * width))[None]
    pos, sig = np.empty(grid.size), np.empty(grid.size)
    for start in range(0, grid.size, batch):
        q0 = grid[start : start + batch]
        frames = np.zeros((q0.size, *ring.near.shape), np.float32)
        # Mean over each pixel's q extent of a unit-height Gaussian at q₀.
        delta = erf((ring.hi[None] - q0[:, None]) * scale) - erf(
            (ring.lo[None] - q0[:, None]) * scale
        )
        mean = np.sqrt(np.pi) / (2.0 * scale) * delta / span[None]
        frames[:, ring.near] = ring.weight[None] * mean
        reduced = reduction.reduce(frames)
        fit = fit_gaussian(reduced.profiles[key], reduced.profile_q[key], min_snr=2.5)
        pos[start : start + q0.size] = fit.position_q
        sig[start : start + q0.size] = fit.sigma_q
    return pos, sig
