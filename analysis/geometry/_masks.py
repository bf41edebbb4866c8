"""Masks on top of the detector's module gaps: beamstop, sample shadow, q limit.

Masks are boolean arrays of the detector shape with ``True`` for an excluded pixel; chi is
pyFAI's chi in degrees taken modulo 360 into [0, 360).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._detector import DetectorGeometry

__all__ = [
    "BeamstopConfig",
    "MaskConfig",
    "ShadowSector",
    "beamstop_mask",
    "build_mask",
    "shadow_mask",
]


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
    >>> from opmap.analysis.geometry import eiger4m_detector
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
    >>> from opmap.analysis.geometry import eiger4m_detector
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
