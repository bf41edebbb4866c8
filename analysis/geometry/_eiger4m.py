"""The Eiger X 4M: pixel layout, module gaps and binning, as pyFAI detectors and integrators.

The full detector is pyFAI's ``Eiger4M`` (2167 × 2070 pixels of 75 µm, module gaps in its
mask). A binned detector is the same plane read out in ``binning × binning`` blocks: pixels
of ``binning × 75 µm``, shape ``(2167 // binning, 2070 // binning)`` (the last incomplete
rows/columns are dropped, as a camera binning does), and a binned pixel is a gap pixel if
any of its ``binning²`` pixels is. A PONI is in metres, so the same point of the detector
plane has the same q and χ at any binning.

Every function here takes ``binning`` as a keyword with the same default, 1 (the full
detector).
"""

from __future__ import annotations

import numpy as np
from pyFAI.detectors import Detector, detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

__all__ = [
    "DEFAULT_DISTANCE_M",
    "DEFAULT_PONI1_M",
    "DEFAULT_PONI2_M",
    "DEFAULT_WAVELENGTH_M",
    "EIGER4M_PIXEL_M",
    "EIGER4M_SHAPE",
    "EIGER_GAP_MARKER",
    "eiger4m_binning",
    "eiger4m_detector",
    "eiger4m_gap_mask",
    "eiger4m_integrator",
]

#: Full-resolution Eiger X 4M frame shape (rows, columns).
EIGER4M_SHAPE: tuple[int, int] = (2167, 2070)
#: Full-resolution Eiger X 4M pixel size (m).
EIGER4M_PIXEL_M: float = 75e-6
#: Value the Eiger writes into module-gap / dead pixels of a uint32 frame.
EIGER_GAP_MARKER: int = 2**32 - 1
#: Design geometry of the beamline (the twin's default): sample–detector distance (m) and
#: wavelength (m; 0.6888 Å, 18 keV).
DEFAULT_DISTANCE_M: float = 0.100
DEFAULT_WAVELENGTH_M: float = 0.6888e-10
#: Design beam centre: near the detector centre (0.0813, 0.0776 m), moved 6 mm along the fast
#: axis off the central gap cross so that at 100 mm the module gaps cross the LCO (003) ring
#: more than 11° away from all six texture spots (25/90/160/205/275/345°) and the Ti (100)
#: ring more than 11° from its strong 90° spot.
DEFAULT_PONI1_M: float = 0.0805
DEFAULT_PONI2_M: float = 0.0835


def _check_binning(binning: int) -> None:
    if not (isinstance(binning, int) and 1 <= binning <= 16):
        raise ValueError(f"binning must be an integer in [1, 16], got {binning!r}")


def eiger4m_binning(shape: tuple[int, int]) -> int | None:
    """The Eiger X 4M binning whose frames have ``shape``, or None if no binning does.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, columns).

    Returns
    -------
    int or None
        ``b`` in [1, 16] with ``shape == (2167 // b, 2070 // b)``.

    Examples
    --------
    >>> eiger4m_binning((541, 517)), eiger4m_binning((2167, 2070)), eiger4m_binning((10, 10))
    (4, 1, None)
    """
    rows, cols = (int(n) for n in shape)
    for binning in range(1, 17):
        if (EIGER4M_SHAPE[0] // binning, EIGER4M_SHAPE[1] // binning) == (rows, cols):
            return binning
    return None


def eiger4m_gap_mask(*, binning: int = 1) -> np.ndarray:
    """Module-gap mask of the Eiger X 4M, optionally binned.

    Parameters
    ----------
    binning : int, optional
        Square binning factor, 1 (default: the full detector) to 16.  A binned pixel
        is masked when any of its ``binning × binning`` native pixels is a gap pixel;
        trailing rows/columns that do not fill a bin are dropped (pyFAI convention), so
        ``binning=4`` gives shape (541, 517) with 300 µm pixels.

    Returns
    -------
    numpy.ndarray
        bool, shape ``(2167 // binning, 2070 // binning)``; ``True`` = gap.

    Examples
    --------
    >>> mask = eiger4m_gap_mask(binning=4)
    >>> mask.shape, mask.dtype
    ((541, 517), dtype('bool'))
    >>> bool(mask[130, :].all())  # first horizontal module gap
    True
    """
    _check_binning(binning)
    native = detector_factory("Eiger4M").mask.astype(bool)
    if binning == 1:
        return native
    rows, cols = EIGER4M_SHAPE[0] // binning, EIGER4M_SHAPE[1] // binning
    blocks = native[: rows * binning, : cols * binning].reshape(rows, binning, cols, binning)
    return blocks.any(axis=(1, 3))


def eiger4m_detector(*, binning: int = 1) -> Detector:
    """pyFAI detector for the Eiger X 4M (native, or binned with its gap mask).

    Parameters
    ----------
    binning : int, optional
        1 (default) gives pyFAI's ``Eiger4M`` (2167 × 2070, 75 µm); ``b`` in [2, 16] gives
        a generic detector of ``75·b`` µm pixels, same orientation, whose static mask is
        :func:`eiger4m_gap_mask` ``(binning=b)``.

    Returns
    -------
    pyFAI.detectors.Detector

    Examples
    --------
    >>> det = eiger4m_detector(binning=4)
    >>> det.shape, round(det.pixel1 * 1e6)
    ((541, 517), 300)
    """
    mask = eiger4m_gap_mask(binning=binning)
    full = detector_factory("Eiger4M")
    if binning == 1:
        return full
    pixel_m = EIGER4M_PIXEL_M * binning
    det = Detector(
        pixel1=pixel_m, pixel2=pixel_m, max_shape=mask.shape, orientation=full.orientation
    )
    det.mask = mask.astype(np.int8)
    return det


def eiger4m_integrator(
    *,
    binning: int = 1,
    distance_m: float = DEFAULT_DISTANCE_M,
    wavelength_m: float = DEFAULT_WAVELENGTH_M,
    poni1_m: float = DEFAULT_PONI1_M,
    poni2_m: float = DEFAULT_PONI2_M,
) -> AzimuthalIntegrator:
    """pyFAI azimuthal integrator of the Eiger X 4M without detector rotations.

    Parameters
    ----------
    binning : int, optional
        1 (default: 2167 × 2070 pixels of 75 µm) to 16; 4 gives 541 × 517 pixels of 300 µm.
    distance_m : float, optional
        Sample–detector distance (m), in (0.01, 2]; default 0.1 m.
    wavelength_m : float, optional
        X-ray wavelength (m), in (1e-12, 1e-9]; default 0.6888 Å (18 keV).
    poni1_m, poni2_m : float, optional
        Point of normal incidence along the slow (rows) and fast (columns) axes (m). The
        defaults put the beam near the detector centre: at 100 mm q spans ~0.96–6.1 Å⁻¹
        outside a 10.5 mm beamstop up to the detector edge.

    Returns
    -------
    pyFAI.integrator.azimuthal.AzimuthalIntegrator
        With ``detector.mask`` = module gaps (binned when ``binning > 1``).

    Examples
    --------
    >>> ai = eiger4m_integrator(binning=4)
    >>> ai.detector.shape, round(ai.dist, 3), round(ai.wavelength * 1e10, 4)
    ((541, 517), 0.1, 0.6888)
    """
    if not 0.01 < distance_m <= 2.0:
        raise ValueError(f"distance_m={distance_m} must be in (0.01, 2] m")
    if not 1e-12 < wavelength_m <= 1e-9:
        raise ValueError(f"wavelength_m={wavelength_m} must be in (1e-12, 1e-9] m")
    return AzimuthalIntegrator(
        dist=distance_m,
        poni1=poni1_m,
        poni2=poni2_m,
        detector=eiger4m_detector(binning=binning),
        wavelength=wavelength_m,
    )
