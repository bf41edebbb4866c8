"""Which azimuths of a ring land on active detector pixels: the twin's ``visible(chi)``.

The twin counts a Li grain as "in diffraction condition and visible" only when its (110)
spot falls on pixels that record it: not in a module gap, not behind the beamstop, and not
in a part of the sample shadow darker than ``min_transmission``. A spot is a Gaussian in
azimuth (``spot_fwhm_deg``); it is recorded when at least ``min_recorded_fraction`` of it
lands on active ring pixels, so a strong spot centred on a narrow module gap (1.5° of the
ring at the Li (110) radius) is still recorded by its flanks, as it is on the detector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from scipy.special import ndtr

from ._mask import DetectorMask


def ring_visibility(
    ai: AzimuthalIntegrator,
    mask: DetectorMask,
    *,
    q_inv_angstrom: float,
    half_width_inv_angstrom: float = 0.01,
    spot_fwhm_deg: float = 1.0,
    min_recorded_fraction: float = 0.05,
    min_transmission: float = 0.5,
) -> Callable[[float], bool]:
    """Return ``visible(chi_deg)`` for the ring at ``q_inv_angstrom``, by 1° azimuth bins.

    Parameters
    ----------
    ai
        Detector geometry.
    mask
        Gaps, beamstop and shadow of the simulated detector.
    q_inv_angstrom, half_width_inv_angstrom
        Ring position and half width (Å⁻¹).
    spot_fwhm_deg
        Azimuthal FWHM of a spot (deg, > 0; the twin's ``lithium.spot_fwhm_deg``).
    min_recorded_fraction
        A spot is visible when at least this fraction of it lands on active pixels, in
        (0, 1]: the active share of each 1° bin of the ring, weighted by the spot's Gaussian
        over that bin.
    min_transmission
        Pixels with a lower shadow transmission count as inactive.

    Returns
    -------
    callable
        ``visible(chi_deg) -> bool`` for any azimuth (deg, taken modulo 360).
    """
    if not 0 < min_recorded_fraction <= 1:
        raise ValueError(f"min_recorded_fraction={min_recorded_fraction} must be in (0, 1]")
    if not 0 < spot_fwhm_deg <= 90:
        raise ValueError(f"spot_fwhm_deg={spot_fwhm_deg} must be in (0, 90]")
    shape = ai.detector.shape
    q = ai.center_array(shape, unit="q_A^-1")
    ring = np.abs(q - q_inv_angstrom) <= half_width_inv_angstrom
    if not ring.any():
        raise ValueError(
            f"q_inv_angstrom={q_inv_angstrom} is not on the detector "
            f"(q spans {q.min():.3f}-{q.max():.3f} 1/angstrom)"
        )
    chi_bin = np.mod(ai.center_array(shape, unit="chi_deg"), 360.0).astype(int) % 360
    active = ~mask.gaps(ai) & (mask.transmission(ai) >= min_transmission)
    total = np.bincount(chi_bin[ring], minlength=360)
    good = np.bincount(chi_bin[ring], weights=active[ring], minlength=360)
    active_share = np.where(total > 0, good / np.maximum(total, 1), 0.0)
    bin_start = np.arange(360.0)
    sigma_deg = spot_fwhm_deg / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    def visible(chi_deg: float) -> bool:
        lo = (bin_start - chi_deg % 360.0 + 180.0) % 360.0 - 180.0  # bin start - spot centre
        weight = ndtr((lo + 1.0) / sigma_deg) - ndtr(lo / sigma_deg)
        return bool(weight @ active_share >= min_recorded_fraction * weight.sum())

    return visible
