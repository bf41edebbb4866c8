"""Configuration of the diffraction forward model: reflections, textures, halos, background.

Intensities are count rates (counts per second) in one 75 µm Eiger pixel at the beam
centre for a layer filling the whole beam footprint during the frame (weight 1); the
renderer scales them by pixel area, solid angle, the shadow/beamstop transmission, the
scene's weights and the exposure time. Peak shapes in q are pseudo-Voigts (Lorentzian share
``lorentz_fraction``) whose FWHM adds in quadrature the reflection's sample broadening
(``q_fwhm_a_inv``) and the instrument resolution (``instrument_fwhm_2theta_deg``, beam
divergence and energy spread, converted to q at the ring's angle); the renderer integrates
them over each pixel's area. The analysis is told none of these widths. Values marked
**choice** are not in the paper and are tuned for realistic-looking 0.05 s frames.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")
HKL = tuple[int, int, int]
#: Layers with static (lattice-independent) scattering: amorphous halos and the Au ring.
STATIC_LAYERS: tuple[str, ...] = ("pt", "lco", "lipon", "li", "ti", "parylene", "au")


class TextureSpot(BaseModel):
    """One texture maximum on a ring: azimuth χ (deg, [0, 360)) and relative height."""

    model_config = _FROZEN

    azimuth_deg: float = Field(ge=0.0, lt=360.0)
    relative_intensity: float = Field(default=1.0, ge=0.0)


class Reflection(BaseModel):
    """A textured (or uniform) powder reflection of Ti or Au.

    Parameters
    ----------
    hkl
        Miller indices.
    peak_cps
        Count rate at the top of the strongest spot (counts/s per 75 µm pixel, weight 1).
    q_fwhm_a_inv
        Gaussian FWHM in q (Å⁻¹), in (0, 0.5].
    spots
        Texture maxima; empty = azimuthally uniform ring of height ``peak_cps``.
    chi_fwhm_deg
        Azimuthal FWHM (deg) of each texture spot.
    powder_fraction
        Uniform ring under the spots, as a fraction of ``peak_cps``.
    """

    model_config = _FROZEN

    hkl: HKL
    peak_cps: float = Field(ge=0.0)
    q_fwhm_a_inv: float = Field(gt=0.0, le=0.5)
    spots: tuple[TextureSpot, ...] = ()
    chi_fwhm_deg: float = Field(default=10.0, gt=0.0, le=180.0)
    powder_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class LcoReflection(BaseModel):
    """An LCO reflection; its azimuths come from the orientation families.

    (00l) reflections sit at the family's (003) azimuths, (hk0) at its (110) azimuths, and
    mixed (hkl) at the (003) azimuths ± ρ, ρ the angle between the (hkl) and (001) normals
    (an in-plane stand-in for the full orientation distribution).
    """

    model_config = _FROZEN

    hkl: HKL
    peak_cps: float = Field(ge=0.0)
    q_fwhm_a_inv: float = Field(gt=0.0, le=0.5)
    powder_fraction: float = Field(default=0.005, ge=0.0, le=1.0)


class LiReflection(BaseModel):
    """A Li bcc reflection drawn as single-crystal spots, one per grain in the scene.

    The (110) spot of a grain is at the scene's azimuth. Other reflections of the same
    grain are drawn at ``azimuth + grain_id · azimuth_step_deg`` (mod 360): a deterministic
    stand-in for the grains of the layer in condition for them (the analysis uses (110)).
    """

    model_config = _FROZEN

    hkl: HKL
    peak_cps: float = Field(ge=0.0)
    q_fwhm_a_inv: float = Field(gt=0.0, le=0.5)
    azimuth_step_deg: float = Field(default=0.0, ge=0.0, lt=360.0)


class AmorphousHalo(BaseModel):
    """A broad Gaussian halo in q from an amorphous layer (uniform in azimuth)."""

    model_config = _FROZEN

    layer: str
    q_center_a_inv: float = Field(gt=0.0, le=10.0)
    q_fwhm_a_inv: float = Field(gt=0.0, le=5.0)
    peak_cps: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _known_layer(self) -> AmorphousHalo:
        if self.layer not in STATIC_LAYERS:
            raise ValueError(f"layer={self.layer!r} must be one of {STATIC_LAYERS}")
        return self


def _range_validator(name: str, low: float, high: float, bounds: tuple[float, float]) -> None:
    if not bounds[0] <= low < high <= bounds[1]:
        raise ValueError(
            f"{name}=({low}, {high}) must satisfy {bounds[0]} <= low < high <= {bounds[1]}"
        )


_TI_100_SPOTS = (
    TextureSpot(azimuth_deg=90.0, relative_intensity=1.0),
    *(TextureSpot(azimuth_deg=a, relative_intensity=0.2) for a in (30.0, 150.0, 210.0, 330.0)),
)


class DiffractionConfig(BaseModel):
    """Everything the forward model draws besides the scene (see module docstring for units).

    Parameters
    ----------
    lco_reflections
        LCO (003), (101), (104), (110), (006); sample FWHM 0.01 Å⁻¹ for (003) so shifts of a
        fraction of a pixel (0.0067 Å⁻¹ at 75 µm) are measurable. (006) sits at q ≈ 2.69
        Å⁻¹, beside Ti (002) and Au (111).
    lco_c_range_angstrom, lco_a_range_angstrom
        Lattice ranges the renderer precomputes ring pixels for; scenes outside are refused.
    ti_reflections
        Ti (100) strong at 90°, weak at 30/150/210/330°; (002) at 0/180°; (101) at
        0/180° ± 61.4° (its angle to (002)).
    ti_a_angstrom, ti_c_angstrom
        Nominal Ti hcp lattice (2.951 / 4.684 Å).
    ti_lattice_tolerance
        Relative change of Ti a and c allowed around the nominal lattice.
    au_a_angstrom, au_reflections
        Au fcc lattice (4.078 Å) and its rings (default (111), uniform).
    li_reflections
        Li bcc (110), (200), (211) single-crystal spots (counts/s for spot weight 1).
    li_a_range_angstrom
        Li lattice range precomputed.
    halos
        Amorphous halos per layer: LiPON (broad, 1.9 Å⁻¹, **choice**) and parylene (~1 Å⁻¹).
    instrument_fwhm_2theta_deg
        Instrument resolution, FWHM in 2θ (deg): beam divergence and energy spread
        (**choice**, 0.03°; ~0.005 Å⁻¹ near (003)). Not told to the analysis.
    lorentz_fraction
        Lorentzian share η of every pseudo-Voigt peak (**choice**, 0.3).
    sample_depth_um
        Thickness of the diffracting stack along the beam (µm, 350: the cell's electrochemical
        stack): each slice scatters from its own distance, a box of ~0.005 Å⁻¹ at (003)
        that every pixel's q sampling includes (no cost per frame).
    max_sample_offset_um
        Largest |sample offset along the beam| (µm, default 200) a scene may carry; ring
        windows are widened by the parallax shift it causes.
    background_flat_cps
        Flat background (counts/s per 75 µm pixel), always present (air, windows).
    background_q_cps, background_q_decay_a_inv
        q-dependent background ``background_q_cps · exp(-q / decay)`` (counts/s per pixel).
    """

    model_config = _FROZEN

    lco_reflections: tuple[LcoReflection, ...] = (
        LcoReflection(hkl=(0, 0, 3), peak_cps=2.0e4, q_fwhm_a_inv=0.010),
        LcoReflection(hkl=(1, 0, 1), peak_cps=6.0e3, q_fwhm_a_inv=0.012),
        LcoReflection(hkl=(1, 0, 4), peak_cps=8.0e3, q_fwhm_a_inv=0.012),
        LcoReflection(hkl=(1, 1, 0), peak_cps=5.0e3, q_fwhm_a_inv=0.014),
        LcoReflection(hkl=(0, 0, 6), peak_cps=2.0e3, q_fwhm_a_inv=0.014),
    )
    lco_c_range_angstrom: tuple[float, float] = (13.9, 14.5)
    lco_a_range_angstrom: tuple[float, float] = (2.79, 2.81)
    ti_reflections: tuple[Reflection, ...] = (
        Reflection(
            hkl=(1, 0, 0),
            peak_cps=1.0e4,
            q_fwhm_a_inv=0.015,
            spots=_TI_100_SPOTS,
            powder_fraction=0.03,
        ),
        Reflection(
            hkl=(0, 0, 2),
            peak_cps=6.0e3,
            q_fwhm_a_inv=0.015,
            spots=(TextureSpot(azimuth_deg=0.0), TextureSpot(azimuth_deg=180.0)),
            powder_fraction=0.03,
        ),
        Reflection(
            hkl=(1, 0, 1),
            peak_cps=4.0e3,
            q_fwhm_a_inv=0.015,
            spots=tuple(TextureSpot(azimuth_deg=a) for a in (61.4, 118.6, 241.4, 298.6)),
            powder_fraction=0.03,
        ),
    )
    ti_a_angstrom: float = Field(default=2.951, gt=2.5, lt=3.5)
    ti_c_angstrom: float = Field(default=4.684, gt=4.0, lt=5.5)
    ti_lattice_tolerance: float = Field(default=0.01, gt=0.0, le=0.05)
    au_a_angstrom: float = Field(default=4.078, gt=3.0, lt=5.0)
    au_reflections: tuple[Reflection, ...] = (
        Reflection(hkl=(1, 1, 1), peak_cps=1.5e4, q_fwhm_a_inv=0.015),
    )
    li_reflections: tuple[LiReflection, ...] = (
        LiReflection(hkl=(1, 1, 0), peak_cps=2.0e5, q_fwhm_a_inv=0.008),
        LiReflection(hkl=(2, 0, 0), peak_cps=3.0e4, q_fwhm_a_inv=0.010, azimuth_step_deg=137.5),
        LiReflection(hkl=(2, 1, 1), peak_cps=5.0e4, q_fwhm_a_inv=0.012, azimuth_step_deg=222.5),
    )
    li_a_range_angstrom: tuple[float, float] = (3.45, 3.53)
    halos: tuple[AmorphousHalo, ...] = (
        AmorphousHalo(layer="lipon", q_center_a_inv=1.9, q_fwhm_a_inv=0.8, peak_cps=40.0),
        AmorphousHalo(layer="parylene", q_center_a_inv=1.0, q_fwhm_a_inv=0.35, peak_cps=60.0),
    )
    instrument_fwhm_2theta_deg: float = Field(default=0.03, ge=0.0, le=1.0)
    lorentz_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    max_sample_offset_um: float = Field(default=200.0, ge=0.0, le=5000.0)
    sample_depth_um: float = Field(default=350.0, ge=0.0, le=5000.0)
    background_flat_cps: float = Field(default=2.0, ge=0.0)
    background_q_cps: float = Field(default=20.0, ge=0.0)
    background_q_decay_a_inv: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> DiffractionConfig:
        _range_validator("lco_c_range_angstrom", *self.lco_c_range_angstrom, (10.0, 20.0))
        _range_validator("lco_a_range_angstrom", *self.lco_a_range_angstrom, (2.5, 3.1))
        _range_validator("li_a_range_angstrom", *self.li_a_range_angstrom, (3.0, 4.0))
        return self
