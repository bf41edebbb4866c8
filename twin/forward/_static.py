"""Lattice-independent images of the forward model: background and amorphous halos.

Sharp rings (Au, Ti, LCO, Li) are drawn per frame, since the sample's offset along the beam
moves them (`DiffractionRenderer`). Each row of the stack is a count-rate image (counts/s
per pixel, scaled by pixel area, solid angle and transmission) that a frame adds with a
scalar weight: row 0 is the background (weight 1: air and windows), the others belong to one
layer each (weight = the layer's share of the beam footprint).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._config import DiffractionConfig, TextureSpot
from ._pixels import PixelTables, gaussian, gaussian_chi


def static_layers(config: DiffractionConfig) -> tuple[str, ...]:
    """Layers that own a static image, in stack order (after the background row)."""
    return tuple(dict.fromkeys(halo.layer for halo in config.halos))


def static_stack(config: DiffractionConfig, pixels: PixelTables) -> np.ndarray:
    """Stack of static count-rate images, float32, shape ``(1 + n_layers, n_pixels)``."""
    layers = static_layers(config)
    stack = np.zeros((1 + len(layers), pixels.scale.size), dtype=np.float32)
    q = pixels.q_a_inv
    stack[0] = config.background_flat_cps + config.background_q_cps * np.exp(
        -q / config.background_q_decay_a_inv
    )
    for halo in config.halos:
        row = 1 + layers.index(halo.layer)
        # a halo is tens of pixels wide: its value at the pixel centre is its pixel mean
        stack[row] += halo.peak_cps * gaussian(
            pixels.q_a_inv, halo.q_center_a_inv, halo.q_fwhm_a_inv
        )
    stack *= pixels.scale
    return stack


def texture_weight(
    chi_deg: np.ndarray, spots: Sequence[TextureSpot], chi_fwhm_deg: float, powder: float
) -> np.ndarray:
    """Relative ring intensity versus χ: ``powder + Σ rel·G(χ − χ_spot)``; 1 if no spots."""
    if not spots:
        return np.ones_like(chi_deg)
    weight = np.full_like(chi_deg, powder)
    for spot in spots:
        weight += spot.relative_intensity * gaussian_chi(chi_deg, spot.azimuth_deg, chi_fwhm_deg)
    return weight
