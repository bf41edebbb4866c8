"""PONI files in and out: pyFAI integrators, `DetectorGeometry`, the live analysis geometry.

A PONI file (pyFAI format, version 1 to 2.1) stores the distance, point of normal incidence
and rotations in metres and radians, the wavelength in metres and (from version 2) the
detector. Reading one never guesses: a missing file is ``FileNotFoundError``, anything else
wrong (does not parse, no distance or wavelength, a detector of another shape) is a
``ValueError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyFAI.detectors import Detector
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from pyFAI.io.ponifile import PoniFile

from ._detector import DetectorGeometry
from ._eiger4m import EIGER4M_PIXEL_M, eiger4m_binning, eiger4m_detector

__all__ = [
    "analysis_geometry",
    "check_integrator",
    "load_integrator",
    "load_poni",
    "save_poni",
]


def _read_poni(path: Path) -> PoniFile:
    if not path.is_file():
        raise FileNotFoundError(f"PONI file not found: {path}")
    try:
        poni = PoniFile(str(path))
    except Exception as error:  # pyFAI raises assorted types for a bad file
        raise ValueError(f"PONI file {path} does not parse: {error}") from error
    if poni.dist is None or poni.wavelength is None:
        raise ValueError(f"PONI file {path} lacks Distance or Wavelength")
    return poni


def load_integrator(
    path: str | Path, *, expected_shape: tuple[int, int] | None = None
) -> AzimuthalIntegrator:
    """Read a PONI file into a pyFAI ``AzimuthalIntegrator`` (the detector it names).

    Parameters
    ----------
    path : str or Path
        PONI file.
    expected_shape : (int, int), optional
        Frame shape the integrator must describe; checked with :func:`check_integrator`.

    Returns
    -------
    pyFAI.integrator.azimuthal.AzimuthalIntegrator

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file does not parse, lacks a distance or wavelength, or does not describe
        frames of ``expected_shape``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from opmap.analysis.geometry import eiger4m_integrator
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_poni(eiger4m_integrator(binning=4), pathlib.Path(tmp) / "eiger.poni")
    ...     ai = load_integrator(path, expected_shape=(541, 517))
    >>> ai.detector.shape, round(ai.detector.pixel1 * 1e6), round(ai.dist, 3)
    ((541, 517), 300, 0.1)
    """
    path = Path(path)
    poni = _read_poni(path)
    ai = AzimuthalIntegrator(
        dist=poni.dist,
        poni1=poni.poni1,
        poni2=poni.poni2,
        rot1=poni.rot1,
        rot2=poni.rot2,
        rot3=poni.rot3,
        detector=poni.detector,
        wavelength=poni.wavelength,
    )
    if expected_shape is not None:
        try:
            check_integrator(ai, expected_shape)
        except ValueError as error:
            raise ValueError(f"PONI file {path}: {error}") from error
    return ai


def _check_detector(detector: Detector, expected_shape: tuple[int, int]) -> None:
    """Raise unless ``detector`` has ``expected_shape`` (and the Eiger pixel of that shape)."""
    shape = (int(expected_shape[0]), int(expected_shape[1]))
    named = None if detector.shape is None else tuple(int(n) for n in detector.shape)
    if named != shape:
        raise ValueError(
            f"the PONI describes a detector of shape {named}, expected_shape is {shape}"
        )
    binning = eiger4m_binning(shape)
    if binning is None:
        return
    expected_m = EIGER4M_PIXEL_M * binning
    for name, pixel_m in (("pixel1", detector.pixel1), ("pixel2", detector.pixel2)):
        if not np.isclose(pixel_m, expected_m, rtol=1e-6):
            raise ValueError(
                f"the PONI's {name}={pixel_m} m does not match the {binning}x{binning}-binned "
                f"Eiger X 4M pixel of {expected_m} m for shape {shape}"
            )


def check_integrator(ai: AzimuthalIntegrator, expected_shape: tuple[int, int]) -> None:
    """Raise ``ValueError`` naming the mismatch unless ``ai`` describes frames of a shape.

    Checks the detector shape; for a shape of the Eiger X 4M at some binning, the pixel size
    of that binning; and a positive distance and wavelength.

    Parameters
    ----------
    ai : pyFAI.integrator.azimuthal.AzimuthalIntegrator
        Geometry to check.
    expected_shape : (int, int)
        Frame shape (rows, columns).

    Examples
    --------
    >>> from opmap.analysis.geometry import eiger4m_integrator
    >>> check_integrator(eiger4m_integrator(binning=4), (541, 517))
    >>> check_integrator(eiger4m_integrator(binning=4), (2167, 2070))
    Traceback (most recent call last):
    ...
    ValueError: the PONI describes a detector of shape (541, 517), expected_shape is (2167, 2070)
    """
    _check_detector(ai.detector, expected_shape)
    if not ai.dist > 0:
        raise ValueError(f"the PONI distance={ai.dist} m must be > 0")
    if not (ai.wavelength or 0) > 0:
        raise ValueError(f"the PONI wavelength={ai.wavelength} m must be > 0")


def load_poni(
    path: str | Path,
    *,
    detector: Detector | None = None,
    expected_shape: tuple[int, int] | None = None,
) -> DetectorGeometry:
    """Read a pyFAI PONI file into a :class:`DetectorGeometry`.

    Parameters
    ----------
    path : str or Path
        PONI file (pyFAI format, version 1 to 2.1).
    detector : pyFAI.detectors.Detector, optional
        Detector to use instead of the one named in the file (e.g. a binned Eiger).
    expected_shape : (int, int), optional
        Raise ``ValueError`` when the detector shape differs (frames of this shape
        will be reduced), or its pixel is not the Eiger X 4M pixel of that shape.

    Returns
    -------
    DetectorGeometry

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file does not parse, lacks a wavelength or detector, or the shape differs.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from opmap.analysis.geometry import eiger4m_detector
    >>> geo = DetectorGeometry(eiger4m_detector(), distance_m=0.1, poni1_m=0.08, poni2_m=0.078)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "eiger.poni"
    ...     _ = save_poni(geo, path)
    ...     back = load_poni(path, expected_shape=(2167, 2070))
    >>> round(back.distance_m, 6), round(back.wavelength_angstrom, 4)
    (0.1, 0.6888)
    """
    path = Path(path)
    ai = load_integrator(path)
    det = detector if detector is not None else ai.detector
    if det.shape is None:
        raise ValueError(f"PONI file {path} names no detector with a shape; pass detector=")
    if expected_shape is not None:
        try:
            _check_detector(det, expected_shape)
        except ValueError as error:
            raise ValueError(f"PONI file {path}: {error}") from error
    return DetectorGeometry.from_integrator(ai, detector=det)


def save_poni(
    geometry: DetectorGeometry | AzimuthalIntegrator, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write a geometry as a pyFAI PONI file (an extra mask is not stored).

    Parameters
    ----------
    geometry : DetectorGeometry or pyFAI.integrator.azimuthal.AzimuthalIntegrator
        Geometry to store (its detector is stored too, without the mask).
    path : str or Path
        Destination file.
    overwrite : bool, optional
        An existing file is never replaced unless this is True.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    ai = geometry.integrator if isinstance(geometry, DetectorGeometry) else geometry
    poni = PoniFile(ai)
    with path.open("w") as stream:
        poni.write(stream)
    return path


def analysis_geometry(
    poni: str | Path | AzimuthalIntegrator,
    *,
    binning: int | None = None,
    mask: np.ndarray | None = None,
    expected_shape: tuple[int, int] | None = None,
) -> DetectorGeometry:
    """The detector geometry the live analysis reduces frames with: a PONI plus a mask.

    The profile, the rehearsal, the analysis worker and the replay all build their geometry
    here, so the same PONI and mask give the same reduction everywhere.

    Parameters
    ----------
    poni : str, Path or pyFAI.integrator.azimuthal.AzimuthalIntegrator
        PONI file (as written by the calibration), or an integrator already in memory.
    binning : int, optional
        Binning of the Eiger X 4M frames (1 to 16): the detector becomes
        ``eiger4m_detector(binning=binning)``, whose module gaps are masked, whatever
        binning the PONI was written at (a PONI is in metres, valid at any binning); the
        PONI must then name an Eiger X 4M at some binning, or no detector. None (default)
        keeps the detector the PONI names.
    mask : numpy.ndarray, optional
        Extra bool mask of the detector shape, ``True`` = excluded (beamstop, shadow, hot
        pixels), combined with the detector's own gap mask.
    expected_shape : (int, int), optional
        Frame shape (rows, columns) the geometry must describe.

    Returns
    -------
    DetectorGeometry

    Raises
    ------
    FileNotFoundError
        The PONI file does not exist.
    ValueError
        The PONI does not parse or lacks a distance or wavelength; it names no detector
        shape and ``binning`` is None; it names another detector than an Eiger X 4M while
        ``binning`` is given; the shape differs from ``expected_shape``; ``mask`` has
        another shape.

    Examples
    --------
    >>> from opmap.analysis.geometry import eiger4m_integrator
    >>> beamstop = np.zeros((541, 517), bool)
    >>> beamstop[265:270, 255:262] = True
    >>> geo = analysis_geometry(eiger4m_integrator(binning=4), mask=beamstop,
    ...                         expected_shape=(541, 517))
    >>> geo.shape, bool(geo.effective_mask[267, 258]), round(geo.distance_m, 3)
    ((541, 517), True, 0.1)
    """
    ai = poni if isinstance(poni, AzimuthalIntegrator) else load_integrator(poni)
    detector = ai.detector
    if binning is not None:
        named = detector.shape
        if named is not None and eiger4m_binning(tuple(named)) is None:
            raise ValueError(
                f"the PONI names a detector of shape {tuple(named)}, not an Eiger X 4M at any "
                f"binning; binning={binning} would replace it"
            )
        detector = eiger4m_detector(binning=binning)
    if detector.shape is None:
        raise ValueError("the PONI names no detector with a shape; pass binning=")
    if expected_shape is not None:
        _check_detector(detector, expected_shape)
    return DetectorGeometry.from_integrator(ai, detector=detector, mask=mask)
