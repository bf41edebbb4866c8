"""Lattice-independent images of the forward model: background, halos, fixed rings.

Each row of the stack is a count-rate image (counts/s per pixel, scaled by pixel area,
solid angle and transmission) that a frame adds with a scalar weight: row 0 is the
background (weight 1: air and windows), the others belong to one layer each (weight = the
layer's share of the beam footprint).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._config import DiffractionConfig, TextureSpot
from ._lattice import q_cubic
from ._pixels import PixelTables, box_gaussian, gaussian_chi


def static_layers(config: DiffractionConfig) -> tuple[str, ...]:
    """Layers that own a static image, in stack order (after the background row)."""
    layers = [halo.layer for halo in config.halos]
    if config.au_reflections:
        layers.append("au")
    return tuple(dict.fromkeys(layers))


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
        stack[row] += halo.peak_cps * box_gaussian(
            pixels.q_lo, pixels.q_hi, halo.q_center_a_inv, halo.q_fwhm_a_inv
        )
    for reflection in config.au_reflections:
        q0 = q_cubic(reflection.hkl, config.au_a_angstrom)
        blur = config.pixel_blur_fwhm * (pixels.q_hi - pixels.q_lo)
        fwhm = np.hypot(reflection.q_fwhm_a_inv, blur)
        profile = box_gaussian(pixels.q_lo, pixels.q_hi, q0, fwhm)
        texture = texture_weight(
            pixels.chi_deg, reflection.spots, reflection.chi_fwhm_deg, reflection.powder_fraction
        )
        stack[1 + layers.index("au")] += reflection.peak_cps * profile * texture
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
