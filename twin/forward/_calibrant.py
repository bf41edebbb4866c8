"""Calibrant frames (CeO2, α-Al2O3) on the simulated detector, for the calibration plan."""

from __future__ import annotations

import numpy as np
from pyFAI.calibrant import get_calibrant
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from ._mask import EIGER_GAP_VALUE_UINT32, DetectorMask

#: Calibrants the simulated calibration plan offers (pyFAI names).
CALIBRANTS: tuple[str, ...] = ("CeO2", "alpha_Al2O3")


def render_calibrant(
    ai: AzimuthalIntegrator,
    name: str = "CeO2",
    *,
    peak_counts: float = 2000.0,
    background_counts: float = 5.0,
    fwhm_2th_deg: float = 0.05,
    mask: DetectorMask | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render a calibrant powder pattern as the Eiger would record it.

    Parameters
    ----------
    ai
        Detector geometry (its wavelength sets the ring positions).
    name
        ``"CeO2"`` or ``"alpha_Al2O3"`` (pyFAI calibrant names).
    peak_counts
        Counts per pixel at the maximum of the strongest ring, > 0.
    background_counts
        Flat background (counts per pixel), >= 0.
    fwhm_2th_deg
        Ring width, FWHM in 2θ (deg), in (0, 5].
    mask
        Beamstop, shadow and gaps; default `DetectorMask()`.
    rng
        With a generator, Poisson noise is drawn; without, the expected counts are rounded.

    Returns
    -------
    numpy.ndarray
        uint32, detector shape; gap pixels hold ``2**32 - 1`` as on the Eiger.
    """
    if name not in CALIBRANTS:
        raise ValueError(f"name={name!r} must be one of {CALIBRANTS}")
    if not peak_counts > 0:
        raise ValueError(f"peak_counts={peak_counts} must be > 0")
    if not background_counts >= 0:
        raise ValueError(f"background_counts={background_counts} must be >= 0")
    if not 0 < fwhm_2th_deg <= 5:
        raise ValueError(f"fwhm_2th_deg={fwhm_2th_deg} must be in (0, 5] deg")
    mask = mask or DetectorMask()
    calibrant = get_calibrant(name)
    calibrant.wavelength = ai.wavelength
    shape = ai.detector.shape
    rings = calibrant.fake_calibration_image(
        ai, shape=shape, Imax=1.0, Imin=0.0, resolution=fwhm_2th_deg
    )
    expected = (rings / rings.max() * peak_counts + background_counts) * mask.transmission(ai)
    counts = rng.poisson(expected) if rng is not None else np.rint(expected)
    frame = np.clip(counts, 0, EIGER_GAP_VALUE_UINT32 - 1).astype(np.uint32)
    frame[mask.gaps(ai)] = EIGER_GAP_VALUE_UINT32
    return frame
