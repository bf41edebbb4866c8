"""Per-geometry pixel tables of the forward model: q, χ, the q spread of each pixel's area.

Computed once per (geometry, mask) so a frame only evaluates peak profiles on the few
pixels of each ring. A pixel's recorded intensity is the profile integrated over the pixel's
*area*: for the pixels of a ring, the renderer samples each pixel on an n x n grid of
sub-pixel positions (pyFAI's pixel positions, exact geometry), turns every position into q,
and keeps the mean q of each of m equal-area parts of that q distribution, plus the
derivative of q with the sample's position along the beam (parallax). A frame then averages
the peak profile over the m parts: a midpoint rule over the pixel area, not a bounding-box
formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from ._mask import DetectorMask

#: Pixel size (m) the configured count rates refer to (one unbinned Eiger pixel).
REFERENCE_PIXEL_M: float = 75e-6
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: At most this many equal-area parts per pixel.
_MAX_QUANTILES = 8
#: Slices of the sample's depth along the beam added to every sub-pixel sample.
_DEPTH_SLICES = 4


def gaussian(q: np.ndarray, q0: float, fwhm: float) -> np.ndarray:
    """Unit-height Gaussian of ``fwhm`` centred at ``q0`` (any shape, any unit).

    Examples
    --------
    >>> float(gaussian(np.array([1.05]), 1.0, 0.1)[0])
    0.5
    """
    return np.exp(-0.5 * ((np.asarray(q) - q0) / (fwhm * _FWHM_TO_SIGMA)) ** 2)


def gaussian_chi(chi_deg: np.ndarray, center_deg: float, fwhm_deg: float) -> np.ndarray:
    """Unit-height Gaussian in azimuth, periodic over 360° (``chi_deg`` any shape)."""
    delta = (chi_deg - center_deg + 180.0) % 360.0 - 180.0
    return np.exp(-0.5 * (delta / (fwhm_deg * _FWHM_TO_SIGMA)) ** 2)


@dataclass(frozen=True)
class RingPixels:
    """Pixels near one ring (arrays of equal first length, sorted by ``chi_deg``).

    ``index`` are flat indices into the frame; ``scale`` converts a count rate per 75 µm
    pixel at the beam centre into this pixel's rate (area, solid angle, transmission);
    ``q_quantiles`` (n, m) are the pixel's equal-area q parts (Å⁻¹) for a sample at the
    calibrated position, ``dq_per_um`` (n,) how q moves per µm of sample offset towards the
    detector along the beam (Å⁻¹/µm).
    """

    index: np.ndarray
    q_lo: np.ndarray
    q_hi: np.ndarray
    chi_deg: np.ndarray
    scale: np.ndarray
    q_quantiles: np.ndarray
    dq_per_um: np.ndarray

    def chi_slices(self, center_deg: float, half_width_deg: float) -> list[slice]:
        """Slices of pixels with χ within ``half_width_deg`` of ``center_deg`` (periodic)."""
        low, high = center_deg - half_width_deg, center_deg + half_width_deg
        bounds = [(low, high)]
        if low < 0.0:
            bounds = [(0.0, high), (low + 360.0, 360.0)]
        elif high >= 360.0:
            bounds = [(low, 360.0), (0.0, high - 360.0)]
        return [slice(*np.searchsorted(self.chi_deg, (lo, hi))) for lo, hi in bounds if hi > lo]


@dataclass(frozen=True)
class PixelTables:
    """Flat per-pixel arrays of one detector geometry and mask."""

    shape: tuple[int, int]
    q_a_inv: np.ndarray
    q_lo: np.ndarray
    q_hi: np.ndarray
    chi_deg: np.ndarray
    scale: np.ndarray
    gaps: np.ndarray
    integrator: AzimuthalIntegrator

    @classmethod
    def from_integrator(cls, ai: AzimuthalIntegrator, mask: DetectorMask) -> PixelTables:
        """Compute the tables (a few seconds for the full 4M, ~0.2 s binned)."""
        shape = tuple(ai.detector.shape)
        corners = ai.corner_array(shape, unit="q_A^-1")[..., 0]
        area = ai.detector.pixel1 * ai.detector.pixel2 / REFERENCE_PIXEL_M**2
        gaps = mask.gaps(ai).reshape(-1)
        scale = (area * ai.solidAngleArray(shape) * mask.transmission(ai)).reshape(-1)
        scale[gaps] = 0.0
        return cls(
            shape=(int(shape[0]), int(shape[1])),
            q_a_inv=ai.center_array(shape, unit="q_A^-1").reshape(-1),
            q_lo=corners.min(axis=-1).reshape(-1).astype(np.float64),
            q_hi=corners.max(axis=-1).reshape(-1).astype(np.float64),
            chi_deg=np.mod(ai.center_array(shape, unit="chi_deg"), 360.0).reshape(-1),
            scale=scale.astype(np.float32),
            gaps=gaps,
            integrator=ai,
        )

    def ring(
        self, q_min: float, q_max: float, *, fwhm_a_inv: float, depth_um: float = 0.0
    ) -> RingPixels:
        """Visible pixels whose q extent overlaps [q_min, q_max] (Å⁻¹), sorted by χ.

        ``depth_um``: the sample's thickness along the beam; every slice of it scatters
        from its own distance, so each pixel's q distribution includes that spread.
        ``fwhm_a_inv`` (the narrowest peak drawn on the ring) sets the number of q
        parts per pixel: about two per FWHM across a typical pixel's q extent.
        """
        hit = (self.q_hi >= q_min) & (self.q_lo <= q_max) & (self.scale > 0)
        index = np.flatnonzero(hit)
        index = index[np.argsort(self.chi_deg[index], kind="stable")]
        extent = float(np.median(self.q_hi[index] - self.q_lo[index])) if index.size else 0.0
        m = int(np.clip(math.ceil(2.0 * extent / fwhm_a_inv), 2, _MAX_QUANTILES))
        quantiles, dq = subpixel_q(self.integrator, self.shape, index, m, depth_um=depth_um)
        return RingPixels(
            index=index,
            q_lo=self.q_lo[index],
            q_hi=self.q_hi[index],
            chi_deg=self.chi_deg[index],
            scale=self.scale[index],
            q_quantiles=quantiles,
            dq_per_um=dq,
        )


def subpixel_q(
    ai: AzimuthalIntegrator,
    shape: tuple[int, int],
    index: np.ndarray,
    m: int,
    *,
    depth_um: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-area q quantiles (n, m) of pixels ``index`` and their parallax dq/dy (n,).

    Each pixel is sampled on an n_s x n_s grid of sub-pixel centres (n_s = m + 1); the sorted
    q values are cut into m equal-area parts, each represented by its mean. pyFAI gives the
    lab position (z along the beam, m) of each sample, from which
    2θ = atan2(ρ, z - y) for a sample moved by y along the beam, and q = 4π sin θ / λ. A
    sample ``depth_um`` thick along the beam adds 4 slices spread uniformly over its depth
    (first order in y: q + y dq/dy) to every sub-pixel sample.

    Returns
    -------
    q_quantiles : numpy.ndarray
        Shape (n, m), Å⁻¹, sorted along axis 1.
    dq_per_um : numpy.ndarray
        Shape (n,), Å⁻¹ per µm of sample displacement towards the detector.
    """
    n_s = m + 1  # n_s² samples (x depth slices): at least 4 per part
    frac = (np.arange(n_s) + 0.5) / n_s
    rows, cols = np.divmod(index, shape[1])
    d1 = (rows[:, None, None] + frac[None, :, None]).repeat(n_s, axis=2).reshape(len(index), -1)
    d2 = (cols[:, None, None] + frac[None, None, :]).repeat(n_s, axis=1).reshape(len(index), -1)
    if index.size == 0:
        return np.zeros((0, m)), np.zeros(0)
    z, y, x = ai.calc_pos_zyx(d1=d1 - 0.5, d2=d2 - 0.5, corners=False)
    rho = np.hypot(x, y)
    tth = np.arctan2(rho, z)
    k = 4e-10 * math.pi / ai.wavelength  # 4π/λ in Å⁻¹
    q = k * np.sin(0.5 * tth)
    # d(2θ)/dy = ρ / (ρ² + z²) per m of displacement towards the detector
    dq_samples = 0.5 * k * np.cos(0.5 * tth) * rho / (rho**2 + z**2) * 1e-6
    dq = dq_samples.mean(axis=1)
    if depth_um > 0:
        slices = depth_um * ((np.arange(_DEPTH_SLICES) + 0.5) / _DEPTH_SLICES - 0.5)
        q = (q[:, :, None] + dq_samples[:, :, None] * slices).reshape(len(index), -1)
    q.sort(axis=1)
    # m equal-area parts of the pixel (sizes within one sample), each represented by its mean
    bounds = np.round(np.arange(m + 1) * q.shape[1] / m).astype(int)
    sums = np.concatenate((np.zeros((len(index), 1)), np.cumsum(q, axis=1)), axis=1)
    parts = (sums[:, bounds[1:]] - sums[:, bounds[:-1]]) / np.diff(bounds)
    return np.ascontiguousarray(parts), dq
