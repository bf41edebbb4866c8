"""The cell's layer stack along z and the overlap of the beam with each layer.

Bottom to top: Pt (below z = 0), LiCoO2 cathode, LiPON, plated Li (thickness h), Ti,
parylene, Au. Li plates *under* the Ti collector, so the Ti and everything above it move up
by h. Layers are uniform along x, so a layer weight depends on z and h only.

Beam profile along z: a top-hat of width ``beam_size_z_um`` (default) or a Gaussian with that
FWHM. The weight of a layer [bottom, top] for a beam centred at z is the integral of the
normalised profile over the layer, i.e. ``P(top - z) - P(bottom - z)`` with P the cumulative
profile. Inside the stack the weights therefore sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from .._config import GeometryConfig
from .._scene import LAYERS

_SQRT2 = math.sqrt(2.0)
#: Gaussian sigma = FWHM / (2 sqrt(2 ln 2)).
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class CellGeometry:
    """Layer bounds and beam overlaps for a `GeometryConfig`."""

    config: GeometryConfig

    def layer_bounds_um(self, li_thickness_um: float) -> np.ndarray:
        """Bottom and top z (µm) of each layer of `LAYERS`, shape (7, 2).

        Raises
        ------
        ValueError
            If ``li_thickness_um`` is negative or not finite.
        """
        if not (math.isfinite(li_thickness_um) and li_thickness_um >= 0):
            raise ValueError(f"li_thickness_um={li_thickness_um} must be finite and >= 0")
        c = self.config
        thicknesses = (
            c.lco_thickness_um,
            c.lipon_thickness_um,
            li_thickness_um,
            c.ti_thickness_um,
            c.parylene_thickness_um,
            c.au_thickness_um,
        )
        tops = np.cumsum((0.0, *thicknesses))  # top of pt (z = 0), then of each layer above
        bottoms = np.concatenate(([-c.pt_thickness_um], tops[:-1]))
        return np.stack((bottoms, tops), axis=1)

    def ti_centre_um(self, li_thickness_um: float) -> float:
        """z (µm) of the centre of the Ti layer: pushed up by the Li thickness."""
        bottom, top = self.layer_bounds_um(li_thickness_um)[LAYERS.index("ti")]
        return 0.5 * (bottom + top)

    def li_bounds_um(self, li_thickness_um: float) -> tuple[float, float]:
        """Bottom and top z (µm) of the plated Li layer."""
        bottom, top = self.layer_bounds_um(li_thickness_um)[LAYERS.index("li")]
        return float(bottom), float(top)

    def beam_cdf(self, dz_um: np.ndarray | float) -> np.ndarray | float:
        """Fraction of the beam profile below ``dz_um`` from its centre (vectorised)."""
        size = self.config.beam_size_z_um
        if self.config.beam_profile_z == "tophat":
            return np.clip(np.asarray(dz_um) / size + 0.5, 0.0, 1.0)
        sigma = size * _FWHM_TO_SIGMA
        return 0.5 * (1.0 + erf(np.asarray(dz_um) / (sigma * _SQRT2)))

    def beam_half_extent_um(self) -> float:
        """Half-width (µm) outside which the beam profile is negligible (< 1e-9)."""
        size = self.config.beam_size_z_um
        return (
            0.5 * size if self.config.beam_profile_z == "tophat" else 6.2 * size * _FWHM_TO_SIGMA
        )

    def layer_weights(self, z_um: float, li_thickness_um: float) -> dict[str, float]:
        """Fraction of a beam centred at ``z_um`` in each layer (layers with 0 omitted)."""
        bounds = self.layer_bounds_um(li_thickness_um) - z_um
        cdf = self.beam_cdf(bounds)
        weights = cdf[:, 1] - cdf[:, 0]
        return {name: float(w) for name, w in zip(LAYERS, weights, strict=True) if w > 0}

    def layer_weight_array(self, z_um: np.ndarray, li_thickness_um: float) -> np.ndarray:
        """Layer weights for many beam heights, shape ``z_um.shape + (7,)`` in `LAYERS` order."""
        bounds = self.layer_bounds_um(li_thickness_um)
        cdf = self.beam_cdf(bounds[None, :, :] - np.asarray(z_um, float).reshape(-1, 1, 1))
        weights = cdf[..., 1] - cdf[..., 0]
        return weights.reshape((*np.shape(z_um), len(LAYERS)))
