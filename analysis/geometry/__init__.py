"""Detector geometry: the Eiger X 4M, PONI files, a frozen geometry wrapper and masks.

A :class:`DetectorGeometry` is the single source of truth for where every pixel
of the detector sits relative to the beam.  It wraps a pyFAI detector plus the
six PONI parameters and the wavelength, builds its pyFAI
``AzimuthalIntegrator`` once (pyFAI caches its sparse engines per integrator,
so reuse matters) and carries the mask of pixels to ignore.

This package is the one home of the detector model used across opmap (the simulated
detector builds on it too):

- the Eiger X 4M (``_eiger4m``): :func:`eiger4m_detector`, :func:`eiger4m_gap_mask`,
  :func:`eiger4m_integrator`, all with ``binning`` as a keyword defaulting to 1;
- PONI files (``_poni``): :func:`load_poni` → `DetectorGeometry`, :func:`load_integrator`
  → pyFAI integrator, :func:`save_poni` (either), :func:`check_integrator`, and
  :func:`analysis_geometry`, the geometry of the live analysis from a PONI and a mask;
- masks (``_masks``): beamstop, shadow sectors, q limit from a :class:`MaskConfig`.

Conventions (shared across opmap): ``chi_deg`` is pyFAI's chi in degrees taken
modulo 360 into [0, 360); q is in Å⁻¹ (pyFAI unit ``"q_A^-1"``); masks are
boolean arrays with ``True`` for an excluded pixel.
"""

from ._detector import DetectorGeometry
from ._eiger4m import (
    DEFAULT_DISTANCE_M,
    DEFAULT_PONI1_M,
    DEFAULT_PONI2_M,
    DEFAULT_WAVELENGTH_M,
    EIGER4M_PIXEL_M,
    EIGER4M_SHAPE,
    EIGER_GAP_MARKER,
    eiger4m_binning,
    eiger4m_detector,
    eiger4m_gap_mask,
    eiger4m_integrator,
)
from ._masks import (
    BeamstopConfig,
    MaskConfig,
    ShadowSector,
    beamstop_mask,
    build_mask,
    shadow_mask,
)
from ._poni import (
    analysis_geometry,
    check_integrator,
    load_integrator,
    load_poni,
    save_poni,
)

__all__ = [
    "DEFAULT_DISTANCE_M",
    "DEFAULT_PONI1_M",
    "DEFAULT_PONI2_M",
    "DEFAULT_WAVELENGTH_M",
    "EIGER4M_PIXEL_M",
    "EIGER4M_SHAPE",
    "EIGER_GAP_MARKER",
    "BeamstopConfig",
    "DetectorGeometry",
    "MaskConfig",
    "ShadowSector",
    "analysis_geometry",
    "beamstop_mask",
    "build_mask",
    "check_integrator",
    "eiger4m_binning",
    "eiger4m_detector",
    "eiger4m_gap_mask",
    "eiger4m_integrator",
    "load_integrator",
    "load_poni",
    "save_poni",
    "shadow_mask",
]
