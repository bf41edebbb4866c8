"""`DetectorGeometry`: where every detector pixel sits relative to the beam, and its mask."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from pyFAI.detectors import Detector
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

__all__ = ["DetectorGeometry"]


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
    >>> from opmap.analysis.geometry import eiger4m_detector, eiger4m_gap_mask
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
        cls,
        ai: AzimuthalIntegrator,
        *,
        mask: np.ndarray | None = None,
        detector: Detector | None = None,
    ) -> DetectorGeometry:
        """Build from a pyFAI geometry/integrator (its detector and PONI parameters).

        Parameters
        ----------
        ai : pyFAI.integrator.azimuthal.AzimuthalIntegrator
            Distance, PONI, rotations and wavelength (required).
        mask : numpy.ndarray, optional
            Extra bool mask, as for the constructor.
        detector : pyFAI.detectors.Detector, optional
            Detector to use instead of ``ai.detector`` (e.g. a binned Eiger).
        """
        if not ai.wavelength:
            raise ValueError("the PONI/integrator defines no wavelength; it is required")
        return cls(
            detector=ai.detector if detector is None else detector,
            distance_m=float(ai.dist),
            poni1_m=float(ai.poni1),
            poni2_m=float(ai.poni2),
            rot1_rad=float(ai.rot1),
            rot2_rad=float(ai.rot2),
            rot3_rad=float(ai.rot3),
            wavelength_angstrom=float(ai.wavelength) * 1e10,
            mask=mask,
        )
