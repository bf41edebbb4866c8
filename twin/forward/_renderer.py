"""The twin's diffraction forward model: a `BeamScene` in, an Eiger frame (uint32) out.

Per geometry (`DiffractionRenderer.__init__`): pixel q / χ / intensity scale, the static
images (background and amorphous halos), and for every sharp reflection (LCO, Ti, Au, Li)
the pixels its ring can reach over the configured lattice and sample-offset ranges, each
with its equal-area q quantiles, its parallax dq/dy and the texture weight of each
orientation family. Per frame: weighted sum of the static images, pseudo-Voigt profiles
(sample broadening and instrument resolution in quadrature) averaged over each ring pixel's
area at the scene's lattice parameters and sample offset along the beam, Poisson noise.
The scene's weights already integrate the beam footprint over the frame's travel, so the
renderer scales by them and by the exposure time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from .._scene import BeamScene, FamilyTexture
from . import _kernels as kernels
from ._config import HKL, DiffractionConfig, Reflection, TextureSpot
from ._lattice import angle_to_basal_deg, q_cubic, q_hexagonal
from ._mask import EIGER_GAP_VALUE_UINT32, DetectorMask
from ._noise import poisson_counts
from ._pixels import PixelTables, RingPixels
from ._scene_check import check_scene
from ._static import static_layers, static_stack, texture_weight

#: Ring windows and profiles extend this many FWHM beyond the peak (pseudo-Voigt tails:
#: the Lorentzian is 1/101 of its height there).
_WINDOW_FWHM = 5.0
#: Li spots are evaluated within this many FWHM of their azimuth.
_SPOT_HALF_WIDTHS = 3.0


@dataclass(frozen=True)
class _Ring:
    """A sharp reflection: its pixels, total q FWHM and texture × scale per family."""

    hkl: HKL
    peak_cps: float
    q_fwhm_a_inv: float
    pixels: RingPixels
    weights: dict[str, np.ndarray]


class DiffractionRenderer:
    """Render detector frames of the simulated Eiger from beam scenes.

    Parameters
    ----------
    ai
        Detector geometry (a pyFAI integrator); one renderer per geometry and mask.
    config
        Reflections, textures, halos, background.
    families
        LCO orientation families; a scene's `LcoPhase.family` must name one of them.
    mask
        Gaps, beamstop and sample shadow; default `DetectorMask()`.
    """

    def __init__(
        self,
        ai: AzimuthalIntegrator,
        config: DiffractionConfig,
        families: Sequence[FamilyTexture],
        *,
        mask: DetectorMask | None = None,
    ) -> None:
        names = [family.name for family in families]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"families must be non-empty with unique names, got {names}")
        self.config = config
        self.families = tuple(families)
        self.mask = mask or DetectorMask()
        self._pixels = PixelTables.from_integrator(ai, self.mask)
        self._static = static_stack(config, self._pixels)
        self._static_layers = static_layers(config)
        self._gap_index = np.flatnonzero(self._pixels.gaps)
        self._lco = [
            self._lco_ring(r.hkl, r.peak_cps, r.q_fwhm_a_inv, r.powder_fraction)
            for r in config.lco_reflections
        ]
        self._ti = [self._fixed_ring(r, "ti") for r in config.ti_reflections]
        self._au = [self._fixed_ring(r, "au") for r in config.au_reflections]
        kernels.warm_up()
        self._li = [
            self._ring(r.hkl, r.peak_cps, r.q_fwhm_a_inv, self._li_q_range(r.hkl), {})
            for r in config.li_reflections
        ]

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, columns)."""
        return self._pixels.shape

    def expected_counts(self, scene: BeamScene, *, exposure_s: float) -> np.ndarray:
        """Noise-free expected counts, float32, detector shape (0 in gaps)."""
        check_scene(scene, self.config, [family.name for family in self.families])
        if not (math.isfinite(exposure_s) and 0.0 < exposure_s <= 3600.0):
            raise ValueError(f"exposure_s={exposure_s} must be in (0, 3600] s")
        weights = [1.0] + [scene.layer_weights.get(layer, 0.0) for layer in self._static_layers]
        weights_scaled = np.asarray(weights, dtype=np.float32) * np.float32(exposure_s)
        lam = np.empty(self._static.shape[1], dtype=np.float32)
        kernels.combine_static(weights_scaled, self._static, lam)
        self._add_lco(lam, scene, exposure_s)
        self._add_fixed(lam, scene, exposure_s)
        self._add_li(lam, scene, exposure_s)
        return lam.reshape(self.shape)

    def render(
        self, scene: BeamScene, *, exposure_s: float, rng: np.random.Generator
    ) -> np.ndarray:
        """One frame as the Eiger writes it.

        Parameters
        ----------
        scene
            What the beam sees during the frame.
        exposure_s
            Counting time (s), in (0, 3600].
        rng
            Seeded generator for the Poisson noise (same seed, same frame).

        Returns
        -------
        numpy.ndarray
            uint32, shape `shape`; module-gap pixels hold ``2**32 - 1`` as on the Eiger.
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        counts = poisson_counts(self.expected_counts(scene, exposure_s=exposure_s), rng)
        counts.reshape(-1)[self._gap_index] = EIGER_GAP_VALUE_UINT32
        return counts

    # -- per-frame pieces -------------------------------------------------------------
    def _add_lco(self, lam: np.ndarray, scene: BeamScene, exposure_s: float) -> None:
        for phase in scene.lco_phases:
            for ring in self._lco:
                q0 = q_hexagonal(ring.hkl, phase.a_angstrom, phase.c_angstrom)
                amplitude = ring.peak_cps * phase.weight * exposure_s
                self._add_profile(lam, ring, ring.weights[phase.family], q0, amplitude, scene)

    def _add_fixed(self, lam: np.ndarray, scene: BeamScene, exposure_s: float) -> None:
        """Ti (at the scene's lattice) and Au (at the configured lattice) rings."""
        ti_weight = scene.layer_weights.get("ti", 0.0) * exposure_s
        for ring in self._ti:
            q0 = q_hexagonal(ring.hkl, scene.ti_a_angstrom, scene.ti_c_angstrom)
            self._add_profile(lam, ring, ring.weights["ti"], q0, ring.peak_cps * ti_weight, scene)
        au_weight = scene.layer_weights.get("au", 0.0) * exposure_s
        for ring in self._au:
            q0 = q_cubic(ring.hkl, self.config.au_a_angstrom)
            self._add_profile(lam, ring, ring.weights["au"], q0, ring.peak_cps * au_weight, scene)

    def _add_li(self, lam: np.ndarray, scene: BeamScene, exposure_s: float) -> None:
        eta = self.config.lorentz_fraction
        for ring, reflection in zip(self._li, self.config.li_reflections, strict=True):
            q0 = q_cubic(ring.hkl, scene.li_a_angstrom)
            px = ring.pixels
            cutoff = _WINDOW_FWHM * ring.q_fwhm_a_inv
            for spot in scene.li_spots:
                step = (spot.grain_id + 1) * reflection.azimuth_step_deg
                azimuth = (spot.azimuth_deg + step) % 360.0
                amplitude = ring.peak_cps * spot.weight * exposure_s
                for sl in px.chi_slices(azimuth, _SPOT_HALF_WIDTHS * spot.chi_fwhm_deg):
                    kernels.add_spot(lam, px.index, px.q_quantiles, px.dq_per_um,
                                     scene.sample_offset_um, ring.q_fwhm_a_inv, eta, cutoff,
                                     px.scale, px.chi_deg, sl.start, sl.stop, q0, amplitude,
                                     azimuth, spot.chi_fwhm_deg)  # fmt: skip

    def _add_profile(
        self,
        lam: np.ndarray,
        ring: _Ring,
        weight: np.ndarray,
        q0: float,
        amplitude: float,
        scene: BeamScene,
    ) -> None:
        """Add ``amplitude · weight · pixel-averaged pseudo-Voigt(q0)`` on the ring."""
        if amplitude == 0.0:
            return
        px = ring.pixels
        kernels.add_ring(lam, px.index, px.q_quantiles, px.dq_per_um, scene.sample_offset_um,
                         ring.q_fwhm_a_inv, self.config.lorentz_fraction,
                         _WINDOW_FWHM * ring.q_fwhm_a_inv, weight, q0, amplitude)  # fmt: skip

    # -- per-geometry tables ----------------------------------------------------------
    def total_fwhm_a_inv(self, q_a_inv: float, sample_fwhm_a_inv: float) -> float:
        """FWHM in q (Å⁻¹) of a peak at ``q_a_inv``: sample broadening and the instrument
        resolution (2θ FWHM converted at the peak's angle) in quadrature."""
        k = 4e-10 * math.pi / self._pixels.integrator.wavelength  # 4π/λ in Å⁻¹
        theta = math.asin(min(q_a_inv / k, 1.0))
        instrument = (
            0.5 * k * math.cos(theta) * math.radians(self.config.instrument_fwhm_2theta_deg)
        )
        return math.hypot(sample_fwhm_a_inv, instrument)

    def _ring(
        self,
        hkl: HKL,
        peak_cps: float,
        sample_fwhm: float,
        q_range: tuple[float, float],
        texture: dict[str, Callable[[np.ndarray], np.ndarray]],
    ) -> _Ring:
        fwhm = self.total_fwhm_a_inv(0.5 * sum(q_range), sample_fwhm)
        # parallax: dq/dy ~ q / distance (Å⁻¹ per µm), on both sides of the window
        parallax = 1.1e-6 * max(q_range) / self._pixels.integrator.dist
        reach_um = self.config.max_sample_offset_um + 0.5 * self.config.sample_depth_um
        margin = _WINDOW_FWHM * fwhm + parallax * reach_um
        pixels = self._pixels.ring(q_range[0] - margin, q_range[1] + margin, fwhm_a_inv=fwhm,
                                   depth_um=self.config.sample_depth_um)  # fmt: skip
        weights = {
            name: (weight_of(pixels.chi_deg) * pixels.scale).astype(np.float32)
            for name, weight_of in texture.items()
        }
        return _Ring(hkl, peak_cps, fwhm, pixels, weights)

    def _lco_ring(self, hkl: HKL, peak_cps: float, fwhm: float, powder: float) -> _Ring:
        c_range, a_range = self.config.lco_c_range_angstrom, self.config.lco_a_range_angstrom
        q_values = [q_hexagonal(hkl, a, c) for a in a_range for c in c_range]
        rho_deg = angle_to_basal_deg(hkl, float(np.mean(a_range)), float(np.mean(c_range)))
        texture = {
            family.name: _family_texture(family, hkl, rho_deg, powder) for family in self.families
        }
        return self._ring(hkl, peak_cps, fwhm, (min(q_values), max(q_values)), texture)

    def _fixed_ring(self, reflection: Reflection, layer: str) -> _Ring:
        """Ti (within ``ti_lattice_tolerance`` of its lattice) or Au (fixed lattice) ring."""
        if layer == "au":
            q0 = q_cubic(reflection.hkl, self.config.au_a_angstrom)
            q_range = (q0, q0)
        else:
            tol = self.config.ti_lattice_tolerance
            a0, c0 = self.config.ti_a_angstrom, self.config.ti_c_angstrom
            q_values = [
                q_hexagonal(reflection.hkl, a0 * (1 + s * tol), c0 * (1 + t * tol))
                for s in (-1, 1)
                for t in (-1, 1)
            ]
            q_range = (min(q_values), max(q_values))
        texture = {
            layer: lambda chi: texture_weight(
                chi, reflection.spots, reflection.chi_fwhm_deg, reflection.powder_fraction
            )
        }
        return self._ring(reflection.hkl, reflection.peak_cps, reflection.q_fwhm_a_inv, q_range,
                          texture)  # fmt: skip

    def _li_q_range(self, hkl: HKL) -> tuple[float, float]:
        a_min, a_max = self.config.li_a_range_angstrom
        return q_cubic(hkl, a_max), q_cubic(hkl, a_min)


def _family_texture(
    family: FamilyTexture, hkl: HKL, rho_deg: float, powder: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Texture of one LCO reflection for one family (see `LcoReflection`)."""
    if hkl[2] == 0:
        azimuths = family.azimuths_110_deg
    elif hkl[0] == hkl[1] == 0:
        azimuths = family.azimuths_003_deg
    else:
        azimuths = tuple(
            (phi + sign * rho_deg) % 360.0 for phi in family.azimuths_003_deg for sign in (-1, 1)
        )
    spots = tuple(TextureSpot(azimuth_deg=phi % 360.0) for phi in azimuths)
    return lambda chi: texture_weight(chi, spots, family.chi_fwhm_deg, powder)
