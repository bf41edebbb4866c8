"""The simulated Eiger X 4M as a pyFAI geometry: full or binned, PONI load/save and checks.

The full detector is pyFAI's ``Eiger4M`` (2167 × 2070 pixels of 75 µm, module gaps in its
mask). The binned detector is the same plane read out in ``binning × binning`` blocks:
pixels of ``binning × 75 µm``, shape ``(2167 // binning, 2070 // binning)`` (the last
incomplete rows/columns are dropped, as a camera binning does) and a binned pixel is a gap
pixel if any of its ``binning²`` pixels is. Both share the PONI in metres, so the same
point of the detector plane has the same q and χ at any binning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyFAI
from pyFAI.detectors import Detector, detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from opmap.analysis.geometry import eiger4m_gap_mask as analysis_gap_mask

#: Shape (rows, columns) and pixel size (m) of the unbinned Eiger X 4M.
EIGER4M_SHAPE: tuple[int, int] = (2167, 2070)
EIGER4M_PIXEL_M: float = 75e-6
#: Default beam centre: near the detector centre (0.0813, 0.0776 m), moved 6 mm along the
#: fast axis off the central gap cross so that at 100 mm the module gaps cross the LCO (003)
#: ring more than 11° away from all six texture spots (25/90/160/205/275/345°) and the
#: Ti (100) ring more than 11° from its strong 90° spot.
DEFAULT_PONI1_M: float = 0.0805
DEFAULT_PONI2_M: float = 0.0835
DEFAULT_DISTANCE_M: float = 0.100
DEFAULT_WAVELENGTH_M: float = 0.6888e-10


def eiger4m_gap_mask(*, binning: int = 1) -> np.ndarray:
    """Module-gap mask of the Eiger X 4M, optionally binned.

    Parameters
    ----------
    binning
        Block size (1 = full detector, 4 = 4 × 4 binning).

    Returns
    -------
    numpy.ndarray
        Boolean, shape ``(2167 // binning, 2070 // binning)``; True where the pixel (or any
        pixel of the block) lies in a module gap.
    """
    _check_binning(binning)
    # the same readout model as the analysis uses for real Eiger frames
    return analysis_gap_mask(binning=binning)


def eiger4m_detector(*, binning: int = 4) -> Detector:
    """The pyFAI detector of the Eiger X 4M at the given binning, with its gap mask."""
    _check_binning(binning)
    if binning == 1:
        return detector_factory("Eiger4M")
    full = detector_factory("Eiger4M")
    pixel_m = EIGER4M_PIXEL_M * binning
    shape = (EIGER4M_SHAPE[0] // binning, EIGER4M_SHAPE[1] // binning)
    detector = Detector(
        pixel1=pixel_m, pixel2=pixel_m, max_shape=shape, orientation=full.orientation
    )
    detector.mask = eiger4m_gap_mask(binning=binning).astype(np.int8)
    return detector


def eiger4m_geometry(
    *,
    binning: int = 4,
    distance_m: float = DEFAULT_DISTANCE_M,
    wavelength_m: float = DEFAULT_WAVELENGTH_M,
    poni1_m: float = DEFAULT_PONI1_M,
    poni2_m: float = DEFAULT_PONI2_M,
) -> AzimuthalIntegrator:
    """Azimuthal integrator of the simulated Eiger X 4M.

    Parameters
    ----------
    binning
        1 (2167 × 2070 pixels of 75 µm) or a block size up to 16 (default 4: 541 × 517
        pixels of 300 µm).
    distance_m
        Sample–detector distance (m), in (0.01, 2].
    wavelength_m
        X-ray wavelength (m), in (1e-12, 1e-9]; default 0.6888 Å (18 keV).
    poni1_m, poni2_m
        Point of normal incidence along the slow (rows) and fast (columns) axes (m). The
        defaults put the beam near the detector centre: q spans ~0.96–6.1 Å⁻¹ outside the
        beamstop up to the detector edge.

    Returns
    -------
    AzimuthalIntegrator
        With ``detector.mask`` = module gaps (binned when ``binning > 1``).
    """
    if not 0.01 < distance_m <= 2.0:
        raise ValueError(f"distance_m={distance_m} must be in (0.01, 2] m")
    if not 1e-12 < wavelength_m <= 1e-9:
        raise ValueError(f"wavelength_m={wavelength_m} must be in (1e-12, 1e-9] m")
    detector = eiger4m_detector(binning=binning)
    return AzimuthalIntegrator(
        dist=distance_m,
        poni1=poni1_m,
        poni2=poni2_m,
        detector=detector,
        wavelength=wavelength_m,
    )


def save_poni(ai: AzimuthalIntegrator, path: Path | str) -> Path:
    """Write the geometry as a pyFAI PONI file (overwrites nothing: the file must be new)."""
    path = Path(path)
    if path.exists():
        raise ValueError(f"path={str(path)!r} exists; a PONI file is never overwritten")
    ai.save(str(path))
    return path


def load_poni(path: Path | str, *, shape: tuple[int, int] | None = None) -> AzimuthalIntegrator:
    """Read a PONI file; with ``shape``, check it describes a detector of that shape.

    Raises
    ------
    ValueError
        If the file is missing, does not parse, or does not match ``shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"PONI path={str(path)!r} is not a file")
    try:
        ai = pyFAI.load(str(path))
    except Exception as err:
        raise ValueError(f"PONI path={str(path)!r} does not parse: {err}") from err
    if shape is not None:
        check_poni_matches(ai, shape)
    return ai


def check_poni_matches(ai: AzimuthalIntegrator, shape: tuple[int, int]) -> None:
    """Raise ValueError naming the mismatch if ``ai`` cannot describe frames of ``shape``.

    Checks the detector shape, a pixel size consistent with an Eiger X 4M binning of that
    shape, and a positive distance and wavelength.
    """
    shape = (int(shape[0]), int(shape[1]))
    det_shape = ai.detector.shape
    if det_shape is None or tuple(det_shape) != shape:
        raise ValueError(f"PONI detector shape {det_shape} does not match frame shape {shape}")
    binning = EIGER4M_SHAPE[1] // shape[1]
    if binning >= 1 and (EIGER4M_SHAPE[0] // binning, EIGER4M_SHAPE[1] // binning) == shape:
        expected_m = EIGER4M_PIXEL_M * binning
        for name, pixel_m in (("pixel1", ai.detector.pixel1), ("pixel2", ai.detector.pixel2)):
            if not np.isclose(pixel_m, expected_m, rtol=1e-6):
                raise ValueError(
                    f"PONI {name}={pixel_m} m does not match the {binning}x{binning}-binned "
                    f"Eiger X 4M pixel of {expected_m} m for shape {shape}"
                )
    if not ai.dist > 0:
        raise ValueError(f"PONI distance={ai.dist} m must be > 0")
    if not (ai.wavelength or 0) > 0:
        raise ValueError(f"PONI wavelength={ai.wavelength} m must be > 0")


def _check_binning(binning: int) -> None:
    if not (isinstance(binning, int) and 1 <= binning <= 16):
        raise ValueError(f"binning={binning!r} must be an integer in [1, 16]")
