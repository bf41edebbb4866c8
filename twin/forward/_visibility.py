"""Which azimuths of a ring land on active detector pixels: the twin's ``visible(chi)``.

The twin counts a Li grain as "in diffraction condition and visible" only when its (110)
spot falls on pixels that record it: not in a module gap, not behind the beamstop, and not
in a part of the sample shadow darker than ``min_transmission``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from ._mask import DetectorMask


def ring_visibility(
    ai: AzimuthalIntegrator,
    mask: DetectorMask,
    *,
    q_inv_angstrom: float,
    half_width_inv_angstrom: float = 0.01,
    min_active_fraction: float = 0.5,
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
    min_active_fraction
        A 1° bin is visible when at least this fraction of its ring pixels is active.
    min_transmission
        Pixels with a lower shadow transmission count as inactive.

    Returns
    -------
    callable
        ``visible(chi_deg) -> bool`` for any azimuth (deg, taken modulo 360).
    """
    if not 0 < min_active_fraction <= 1:
        raise ValueError(f"min_active_fraction={min_active_fraction} must be in (0, 1]")
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
    visible_bins = (total > 0) & (good >= min_active_fraction * np.maximum(total, 1))

    def visible(chi_deg: float) -> bool:
        return bool(visible_bins[int(np.floor(chi_deg % 360.0)) % 360])

    return visible
