"""The diffraction forward model: what the detector records for a `BeamScene`."""

from ._calibrant import CALIBRANTS, render_calibrant
from ._config import (
    HKL,
    AmorphousHalo,
    DiffractionConfig,
    LcoReflection,
    LiReflection,
    Reflection,
    TextureSpot,
)
from ._mask import EIGER_GAP_VALUE_UINT32, DetectorMask
from ._noise import INVERSION_MAX_COUNTS, poisson_counts
from ._renderer import DiffractionRenderer
from ._visibility import ring_visibility

__all__ = [
    "CALIBRANTS",
    "EIGER_GAP_VALUE_UINT32",
    "HKL",
    "INVERSION_MAX_COUNTS",
    "AmorphousHalo",
    "DetectorMask",
    "DiffractionConfig",
    "DiffractionRenderer",
    "LcoReflection",
    "LiReflection",
    "Reflection",
    "TextureSpot",
    "poisson_counts",
    "render_calibrant",
    "ring_visibility",
]
