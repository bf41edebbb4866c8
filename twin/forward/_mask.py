"""What hides or dims parts of the simulated detector: module gaps, beamstop, sample shadow."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

#: Value the Eiger writes into module-gap (and defective) pixels of a uint32 frame:
#: Dectris fills them with 2**bit_depth - 1; its ``pixel_mask`` flags them too.
EIGER_GAP_VALUE_UINT32: int = 2**32 - 1


class DetectorMask(BaseModel):
    """Configuration of what hides or attenuates scattered X-rays on the detector.

    Parameters
    ----------
    module_gaps
        Mark the Eiger module gaps (value ``2**32 - 1`` in uint32 frames, as the Eiger does).
    beamstop_radius_mm
        Radius (mm) of the disc around the direct beam where the beamstop absorbs everything
        (0 counts). 10.5 mm at 100 mm puts the lowest visible q at ~0.96 Å⁻¹.
    shadow_chi_min_deg, shadow_chi_max_deg
        Azimuth sector χ ∈ [min, max) (deg, pyFAI χ taken modulo 360) shadowed by the sample
        (paper, supporting figure S11: ~200–360°).
    shadow_transmission
        Fraction of the scattered intensity that reaches the detector in the shadow
        (**choice**: 0.5; the paper shows a partial loss without a number).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    module_gaps: bool = True
    beamstop_radius_mm: float = Field(default=10.5, ge=0.0, le=50.0)
    shadow_chi_min_deg: float = Field(default=200.0, ge=0.0, le=360.0)
    shadow_chi_max_deg: float = Field(default=360.0, ge=0.0, le=360.0)
    shadow_transmission: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sector_is_ordered(self) -> DetectorMask:
        if not self.shadow_chi_min_deg <= self.shadow_chi_max_deg:
            raise ValueError(
                f"shadow_chi_min_deg={self.shadow_chi_min_deg} must be <= "
                f"shadow_chi_max_deg={self.shadow_chi_max_deg}"
            )
        return self

    def gaps(self, ai: AzimuthalIntegrator) -> np.ndarray:
        """Boolean gap mask of the detector (all False when ``module_gaps`` is off)."""
        mask = ai.detector.mask
        if not self.module_gaps or mask is None:
            return np.zeros(ai.detector.shape, dtype=bool)
        return np.asarray(mask, dtype=bool)

    def transmission(self, ai: AzimuthalIntegrator) -> np.ndarray:
        """Fraction of scattered intensity reaching each pixel, float32, detector shape.

        0 behind the beamstop, ``shadow_transmission`` in the shadow sector, 1 elsewhere
        (gaps are not included: see `gaps`).
        """
        shape = ai.detector.shape
        r_mm = ai.center_array(shape, unit="r_mm")
        chi_deg = np.mod(ai.center_array(shape, unit="chi_deg"), 360.0)
        out = np.ones(shape, dtype=np.float32)
        shadow = (chi_deg >= self.shadow_chi_min_deg) & (chi_deg < self.shadow_chi_max_deg)
        out[shadow] = self.shadow_transmission
        out[r_mm < self.beamstop_radius_mm] = 0.0
        return out

    def analysis_mask(self, ai: AzimuthalIntegrator) -> np.ndarray:
        """Pixels an integration should ignore: gaps and the beamstop disc (bool)."""
        r_mm = ai.center_array(ai.detector.shape, unit="r_mm")
        return self.gaps(ai) | (r_mm < self.beamstop_radius_mm)
