"""What the X-ray beam sees during one detector frame: the contract twin -> forward model.

The digital twin (`CellTwin`) answers "what lies in the 1 x 1 µm beam while it travels from
x_start to x_stop at height z, at experiment time t" with a `BeamScene`; the forward model
(`DiffractionRenderer`) turns a `BeamScene` into detector counts. Neither knows the other's
internals. All weights are dimensionless fractions of the beam footprint integrated over the
frame's travel (so a beam fully inside the LCO layer has ``layer_weights["lco"] == 1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Layer names used in `BeamScene.layer_weights`, bottom to top of the stack.
LAYERS: tuple[str, ...] = ("pt", "lco", "lipon", "li", "ti", "parylene", "au")


@dataclass(frozen=True)
class FamilyTexture:
    """An LCO orientation family: where its reflections lie in azimuth on the detector.

    Parameters
    ----------
    name
        E.g. ``"perp"`` (LCO⊥, Li planes ~perpendicular to the film) or ``"par"`` (LCO∥).
    azimuths_003_deg
        Detector azimuths χ (deg, pyFAI convention) of the (003) spots.
    azimuths_110_deg
        Detector azimuths χ (deg) of the (110) spots.
    chi_fwhm_deg
        Azimuthal width (FWHM, deg) of each spot.
    """

    name: str
    azimuths_003_deg: tuple[float, ...]
    azimuths_110_deg: tuple[float, ...]
    chi_fwhm_deg: float = 6.0


@dataclass(frozen=True)
class LcoPhase:
    """One LCO phase of one orientation family inside the beam during a frame.

    ``weight`` = (LCO layer fraction of the footprint) x (family population) x (phase
    fraction); summed over phases and families it equals the LCO layer weight.
    """

    family: str
    weight: float
    c_angstrom: float
    a_angstrom: float


@dataclass(frozen=True)
class LiSpot:
    """A Li grain in diffraction condition on the (110) ring during a frame.

    Parameters
    ----------
    grain_id
        Identity of the grain in the twin's grain list (ground truth).
    azimuth_deg
        Detector azimuth χ of the spot (deg).
    weight
        Integrated intensity scale (dimensionless; 1 = a grain filling the beam footprint
        for the whole frame).
    chi_fwhm_deg
        Azimuthal width (FWHM, deg) of the spot.
    """

    grain_id: int
    azimuth_deg: float
    weight: float
    chi_fwhm_deg: float = 1.0


@dataclass(frozen=True)
class BeamScene:
    """Everything the forward model needs to render one frame.

    Parameters
    ----------
    time_s
        Experiment time at the middle of the frame (s).
    z_um, x_start_um, x_stop_um
        Beam height and the x travel during the exposure (µm, sample coordinates).
    layer_weights
        Fraction of the footprint in each layer of `LAYERS` (missing = 0).
    lco_phases
        LCO phases per family (empty when the beam misses the cathode).
    li_spots
        Li grains in diffraction condition.
    ti_a_angstrom, ti_c_angstrom, li_a_angstrom
        Lattice parameters of Ti (hcp) and Li (bcc) in the beam.
    sample_offset_um
        Where the diffracting sample sits along the beam (µm, positive towards the
        detector) relative to the calibrated sample position (the PONI's): every ring's
        radius on the detector shifts with it (parallax).
    """

    time_s: float
    z_um: float
    x_start_um: float
    x_stop_um: float
    layer_weights: Mapping[str, float]
    lco_phases: tuple[LcoPhase, ...] = ()
    li_spots: tuple[LiSpot, ...] = ()
    ti_a_angstrom: float = 2.951
    ti_c_angstrom: float = 4.684
    li_a_angstrom: float = 3.491
    sample_offset_um: float = 0.0
    extra: Mapping[str, float] = field(default_factory=dict)
