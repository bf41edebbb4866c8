"""Detector geometry: PONI files, a frozen geometry wrapper and detector masks.

A :class:`DetectorGeometry` is the single source of truth for where every pixel
of the detector sits relative to the beam.  It wraps a pyFAI detector plus the
six PONI parameters and the wavelength, builds its pyFAI
``AzimuthalIntegrator`` once (pyFAI caches its sparse engines per integrator,
so reuse matters) and carries the mask of pixels to ignore.

Conventions (shared across opmap): ``chi_deg`` is pyFAI's chi in degrees taken
modulo 360 into [0, 360); q is in Å⁻¹ (pyFAI unit ``"q_A^-1"``); masks are
boolean arrays with ``True`` for an excluded pixel.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyFAI.detectors import Detector, detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from pyFAI.io.ponifile import PoniFile

__all__ = [
    "EIGER4M_SHAPE",
    "EIGER_GAP_MARKER",
    "BeamstopConfig",
    "DetectorGeometry",
    "MaskConfig",
    "ShadowSector",
    "beamstop_mask",
    "build_mask",
    "eiger4m_detector",
    "eiger4m_gap_mask",
    "load_poni",
    "save_poni",
    "shadow_mask",
]

#: Full-resolution Eiger X 4M frame shape (rows, columns), 75 µm pixels.
EIGER4M_SHAPE: tuple[int, int] = (2167, 2070)
#: Value the Eiger writes into module-gap / dead pixels of a uint32 frame.
EIGER_GAP_MARKER: int = 2**32 - 1
_EIGER_PIXEL_M = 75e-6


def eiger4m_gap_mask(*, binning: int = 1) -> np.ndarray:
    """Module-gap mask of the Eiger X 4M, optionally binned.

    Parameters
    ----------
    binning : int, optional
        Square binning factor (1 to 16).  A binned pixel is masked when any of its
        ``binning × binning`` native pixels is a gap pixel; trailing rows/columns
        that do not fill a bin are dropped (pyFAI convention), so ``binning=4``
        gives shape (541, 517) with 300 µm pixels.

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
    if not isinstance(binning, int) or not 1 <= binning <= 16:
        raise ValueError(f"binning must be an integer in [1, 16], got {binning!r}")
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
        1 gives pyFAI's ``Eiger4M`` (2167 × 2070, 75 µm); ``b > 1`` gives a
        generic detector of ``75·b`` µm pixels whose static mask is
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
    if binning == 1:
        return detector_factory("Eiger4M")
    pixel_m = _EIGER_PIXEL_M * binning
    det = Detector(pixel1=pixel_m, pixel2=pixel_m, max_shape=mask.shape)
    det.mask = mask.astype(np.int8)
    return det


@dataclass(frozen=True, eq=False)
class DetectorGeometry:
    """Frozen detector geometry: pyFAI detector, PONI parameters, wavelength, mask.

    Parameters
    ----------
    detector : pyFAI.detectors.Detector
        Pixel layout; its static mask (module gaps) is always applied.
    distance_m : float
        Sample–PONI distance, m (> 0).
    poni1_m, poni2_m : float
        PONI coordinates on the detector (slow, fast axis), m.
    rot1_rad, rot2_rad, rot3_rad : float
        pyFAI detector rotations, rad.
    wavelength_angstrom : float
        X-ray wavelength, Å (0.6888 Å at 18 keV).
    mask : numpy.ndarray or None
        Extra bool mask of shape ``detector.shape`` (``True`` = excluded),
        combined with the detector's static mask.

    Examples
    --------
    >>> geo = DetectorGeometry(eiger4m_detector(binning=4), distance_m=0.1,
    ...                        poni1_m=0.08, poni2_m=0.078)
    >>> geo.shape
    (541, 517)
    >>> geo.effective_mask.sum() == eiger4m_gap_mask(binning=4).sum()
    np.True_
    """

    detector: Detector
    distance_m: float
    poni1_m: float
    poni2_m: float
    rot1_rad: float = 0.0
    rot2_rad: float = 0.0
    rot3_rad: float = 0.0
    wavelength_angstrom: float = 0.6888
    mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.detector.shape is None:
            raise ValueError("detector must have a defined shape (pyFAI max_shape)")
        if not (math.isfinite(self.distance_m) and 1e-3 <= self.distance_m <= 10.0):
            raise ValueError(f"distance_m must be in [0.001, 10] m, got {self.distance_m!r}")
        wavelength = self.wavelength_angstrom
        if not (math.isfinite(wavelength) and 0.01 <= wavelength <= 10):
            raise ValueError(
                f"wavelength_angstrom must be in [0.01, 10] Å, got {self.wavelength_angstrom!r}"
            )
        for name in ("poni1_m", "poni2_m", "rot1_rad", "rot2_rad", "rot3_rad"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.shape != self.shape:
                raise ValueError(f"mask must have shape {self.shape}, got {mask.shape}")
            frozen = mask.astype(bool, copy=True)
            frozen.flags.writeable = False
            object.__setattr__(self, "mask", frozen)

    @property
    def shape(self) -> tuple[int, int]:
        """Detector frame shape ``(rows, columns)``."""
        return tuple(int(n) for n in self.detector.shape)  # type: ignore[return-value]

    @property
    def pixel_size_m(self) -> tuple[float, float]:
        """Pixel size ``(slow, fast)`` in m."""
        return float(self.detector.pixel1), float(self.detector.pixel2)

    @cached_property
    def effective_mask(self) -> np.ndarray:
        """bool (H, W): detector static mask OR the extra ``mask``; ``True`` = excluded."""
        static = self.detector.mask
        combined = np.zeros(self.shape, bool) if static is None else static.astype(bool)
        if self.mask is not None:
            combined = combined | self.mask
        combined.flags.writeable = False
        return combined

    @cached_property
    def integrator(self) -> AzimuthalIntegrator:
        """pyFAI integrator for this geometry and mask, built once and reused."""
        det = copy.deepcopy(self.detector)
        det.mask = self.effective_mask.astype(np.int8)
        return AzimuthalIntegrator(
            dist=self.distance_m,
            poni1=self.poni1_m,
            poni2=self.poni2_m,
            rot1=self.rot1_rad,
            rot2=self.rot2_rad,
            rot3=self.rot3_rad,
            detector=det,
            wavelength=self.wavelength_angstrom * 1e-10,
        )

    def q_array(self) -> np.ndarray:
        """Pixel-centre q, Å⁻¹, float (H, W)."""
        return np.asarray(self.integrator.center_array(self.shape, unit="q_A^-1"))

    def chi_deg_array(self) -> np.ndarray:
        """Pixel-centre azimuth chi in degrees, modulo 360 in [0, 360), float (H, W)."""
        chi = np.asarray(self.integrator.center_array(self.shape, unit="chi_deg"))
        return np.mod(chi, 360.0)

    def with_mask(self, mask: np.ndarray | None) -> DetectorGeometry:
        """Copy of this geometry with another extra ``mask`` (bool (H, W) or None)."""
        return replace(self, mask=mask)

    def check_frames(self, shape: Sequence[int], *, name: str = "frames") -> None:
        """Raise ``ValueError`` unless ``shape`` ends with the detector shape.

        Parameters
        ----------
        shape : sequence of int
            Shape of one frame ``(H, W)`` or of a stack ``(n, H, W)``.
        name : str, optional
            Parameter name used in the message.
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3) or shape[-2:] != self.shape:
            raise ValueError(
                f"{name} must have shape (n, {self.shape[0]}, {self.shape[1]}) or "
                f"{self.shape} to match the detector, got {shape}"
            )

    @classmethod
    def from_integrator(
        cls, ai: AzimuthalIntegrator, *, mask: np.ndarray | None = None
    ) -> DetectorGeometry:
        """Build from a pyFAI geometry/integrator (its detector and PONI parameters)."""
        if not ai.wavelength:
            raise ValueError("the PONI/integrator defines no wavelength; it is required")
        return cls(
            detector=ai.detector,
            distance_m=float(ai.dist),
            poni1_m=float(ai.poni1),
            poni2_m=float(ai.poni2),
            rot1_rad=float(ai.rot1),
            rot2_rad=float(ai.rot2),
            rot3_rad=float(ai.rot3),
            wavelength_angstrom=float(ai.wavelength) * 1e10,
            mask=mask,
        )


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
        will be reduced).

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
    >>> geo = DetectorGeometry(eiger4m_detector(), distance_m=0.1, poni1_m=0.08, poni2_m=0.078)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "eiger.poni"
    ...     _ = save_poni(geo, path)
    ...     back = load_poni(path, expected_shape=(2167, 2070))
    >>> round(back.distance_m, 6), round(back.wavelength_angstrom, 4)
    (0.1, 0.6888)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PONI file not found: {path}")
    try:
        poni = PoniFile(str(path))
    except Exception as error:  # pyFAI raises assorted types for a bad file
        raise ValueError(f"PONI file {path} does not parse: {error}") from error
    if poni.dist is None or poni.wavelength is None:
        raise ValueError(f"PONI file {path} lacks Distance or Wavelength")
    det = detector if detector is not None else poni.detector
    if det is None or det.shape is None:
        raise ValueError(f"PONI file {path} names no detector with a shape; pass detector=")
    if expected_shape is not None and tuple(det.shape) != tuple(expected_shape):
        raise ValueError(
            f"PONI file {path} describes a detector of shape {tuple(det.shape)}, "
            f"expected_shape is {tuple(expected_shape)}"
        )
    return DetectorGeometry(
        detector=det,
        distance_m=float(poni.dist),
        poni1_m=float(poni.poni1),
        poni2_m=float(poni.poni2),
        rot1_rad=float(poni.rot1),
        rot2_rad=float(poni.rot2),
        rot3_rad=float(poni.rot3),
        wavelength_angstrom=float(poni.wavelength) * 1e10,
    )


def save_poni(geometry: DetectorGeometry, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``geometry`` as a pyFAI PONI file (the extra mask is not stored).

    Parameters
    ----------
    geometry : DetectorGeometry
        Geometry to store.
    path : str or Path
        Destination file.
    overwrite : bool, optional
        An existing file is never replaced unless this is True.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    poni = PoniFile(geometry.integrator)
    with path.open("w") as stream:
        poni.write(stream)
    return path


class BeamstopConfig(BaseModel):
    """Beamstop shadow: a disc around the direct beam plus an optional holder arm.

    ``radius_mm`` and ``arm_width_mm`` are measured in the plane normal to the beam
    at the detector distance (pyFAI ``r_mm``); the arm leaves the disc along
    ``arm_chi_deg`` (opmap chi convention, [0, 360)).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    radius_mm: float = Field(gt=0, le=100)
    arm_width_mm: float = Field(default=0.0, ge=0, le=50)
    arm_chi_deg: float = Field(default=0.0, ge=0, lt=360)


class ShadowSector(BaseModel):
    """Azimuthal sector shadowed by the sample, from ``start`` to ``end`` going up in chi.

    ``end_chi_deg < start_chi_deg`` wraps through 0/360 (e.g. 350 → 10).
    ``q_min_inv_angstrom`` limits the shadow to q above that value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    start_chi_deg: float = Field(ge=0, lt=360)
    end_chi_deg: float = Field(ge=0, le=360)
    q_min_inv_angstrom: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> ShadowSector:
        if self.start_chi_deg == self.end_chi_deg:
            raise ValueError("shadow sector is empty: start_chi_deg equals end_chi_deg")
        return self


class MaskConfig(BaseModel):
    """Masks applied on top of the detector's module gaps (TOML/YAML configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    beamstop: BeamstopConfig | None = None
    shadow_sectors: tuple[ShadowSector, ...] = ()
    max_q_inv_angstrom: float | None = Field(default=None, gt=0)


def beamstop_mask(geometry: DetectorGeometry, config: BeamstopConfig) -> np.ndarray:
    """Pixels shadowed by the beamstop disc and arm, bool (H, W).

    Examples
    --------
    >>> geo = DetectorGeometry(eiger4m_detector(binning=4), distance_m=0.1,
    ...                        poni1_m=0.08, poni2_m=0.078)
    >>> m = beamstop_mask(geo, BeamstopConfig(radius_mm=2.0))
    >>> bool(m[266, 259]), bool(m[0, 0])  # beam centre is pixel (0.08/3e-4, 0.078/3e-4)
    (True, False)
    """
    r_mm = np.asarray(geometry.integrator.center_array(geometry.shape, unit="r_mm"))
    mask = r_mm < config.radius_mm
    if config.arm_width_mm > 0:
        delta = np.deg2rad(geometry.chi_deg_array() - config.arm_chi_deg)
        across_mm = np.abs(r_mm * np.sin(delta))
        mask |= (across_mm < config.arm_width_mm / 2) & (np.cos(delta) > 0)
    return mask


def shadow_mask(geometry: DetectorGeometry, sectors: Sequence[ShadowSector]) -> np.ndarray:
    """Pixels whose centre chi lies in any shadow sector, bool (H, W).

    Examples
    --------
    >>> geo = DetectorGeometry(eiger4m_detector(binning=4), distance_m=0.1,
    ...                        poni1_m=0.08, poni2_m=0.078)
    >>> m = shadow_mask(geo, [ShadowSector(start_chi_deg=350, end_chi_deg=10)])
    >>> chi = geo.chi_deg_array()[m]
    >>> bool(((chi >= 350) | (chi < 10)).all())
    True
    """
    chi = geometry.chi_deg_array()
    q = geometry.q_array()
    mask = np.zeros(geometry.shape, bool)
    for sector in sectors:
        lo, hi = sector.start_chi_deg, sector.end_chi_deg
        inside = (chi >= lo) & (chi < hi) if lo < hi else (chi >= lo) | (chi < hi)
        mask |= inside & (q >= sector.q_min_inv_angstrom)
    return mask


def build_mask(geometry: DetectorGeometry, config: MaskConfig) -> np.ndarray:
    """Extra mask from a :class:`MaskConfig` (gaps stay in the detector), bool (H, W).

    Use ``geometry.with_mask(build_mask(geometry, config))`` to apply it.
    """
    mask = np.zeros(geometry.shape, bool)
    if config.beamstop is not None:
        mask |= beamstop_mask(geometry, config.beamstop)
    if config.shadow_sectors:
        mask |= shadow_mask(geometry, config.shadow_sectors)
    if config.max_q_inv_angstrom is not None:
        mask |= geometry.q_array() > config.max_q_inv_angstrom
    return mask
