"""Configuration of the digital twin: frozen pydantic models with the paper's values.

Every number that the paper leaves open (DOMAIN.md "choice") is a field here, so a rehearsal
can change it from a TOML or YAML file. ``extra="forbid"`` makes a misspelt field an error
that names it.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path
from typing import Literal, Self

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .electrochem import ElectrochemConfig

#: A piecewise-linear table: pairs ``(x_li, value)`` with strictly increasing ``x_li``.
Table = tuple[tuple[float, float], ...]


def _check_table(name: str, table: Table) -> Table:
    if len(table) < 2:
        raise ValueError(f"{name} needs at least 2 (x_li, value) points, got {len(table)}")
    xs = [x for x, _ in table]
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError(f"{name}: x_li must be strictly increasing, got {xs}")
    if not all(0.0 <= x <= 1.0 for x in xs):
        raise ValueError(f"{name}: x_li must lie in [0, 1], got {xs}")
    return table


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeometryConfig(_Frozen):
    """Layer stack along z (µm), the beam footprint and the sample's place along the beam.

    z = 0 at the bottom of the cathode. The beam is Gaussian in z and x by default (FWHM
    ``beam_size_*_um``). The cell does not sit at the calibrated sample position: its
    diffracting layers are ``sample_offset_um`` further along the beam at x = 0, and the cell
    is rotated by ``sample_tilt_deg`` about z, so every ring on the detector is shifted by
    parallax (a 100 µm offset moves (003) by ~0.0014 Å⁻¹, ~0.014 Å in c).
    """

    pt_thickness_um: float = Field(3.0, gt=0, description="Pt collector below z = 0")
    lco_thickness_um: float = Field(20.0, gt=0)
    lipon_thickness_um: float = Field(4.0, gt=0)
    ti_thickness_um: float = Field(0.5, gt=0)
    parylene_thickness_um: float = Field(3.0, gt=0)
    au_thickness_um: float = Field(1.0, gt=0)
    cell_length_um: float = Field(2000.0, gt=0, description="extent along x, from x = 0")
    beam_size_z_um: float = Field(1.0, gt=0, description="top-hat width or Gaussian FWHM")
    beam_size_x_um: float = Field(1.0, gt=0, description="top-hat width or Gaussian FWHM")
    beam_profile_z: Literal["tophat", "gaussian"] = "gaussian"
    beam_profile_x: Literal["tophat", "gaussian"] = "gaussian"
    sample_offset_um: float = Field(
        60.0,
        ge=-1000.0,
        le=1000.0,
        description="diffracting layer's position along the beam (towards the detector) "
        "relative to the calibrated sample position, at x = 0 (parallax; choice)",
    )
    sample_tilt_deg: float = Field(
        0.5,
        ge=-10.0,
        le=10.0,
        description="rotation of the cell about z: the offset grows by x tan(tilt) along x",
    )

    def sample_offset_at_um(self, x_um: np.ndarray | float) -> np.ndarray:
        """Offset (µm) of the sample along the beam at positions ``x_um`` (same shape)."""
        x = np.asarray(x_um, float)
        return self.sample_offset_um + x * math.tan(math.radians(self.sample_tilt_deg))


class FamilyModelConfig(_Frozen):
    """One LCO orientation family: azimuths and its c(x_Li), a(x_Li) tables."""

    name: str
    azimuths_003_deg: tuple[float, ...]
    azimuths_110_deg: tuple[float, ...]
    chi_fwhm_deg: float = Field(6.0, gt=0, le=90)
    c_angstrom_vs_x_li: Table
    a_angstrom_vs_x_li: Table

    @field_validator("c_angstrom_vs_x_li", "a_angstrom_vs_x_li")
    @classmethod
    def _table(cls, table: Table, info) -> Table:
        return _check_table(info.field_name, table)

    @field_validator("azimuths_003_deg", "azimuths_110_deg")
    @classmethod
    def _azimuths(cls, values: tuple[float, ...], info) -> tuple[float, ...]:
        if not values or not all(0.0 <= v < 360.0 for v in values):
            raise ValueError(
                f"{info.field_name} must be non-empty, each in [0, 360), got {values}"
            )
        return values


def _perp() -> FamilyModelConfig:
    # c: pristine 14.00; Li-poor end of the biphasic region (x = 0.75) 14.13; end of charge
    # (x = 0.5) 14.32 Å. a: 2.8035 Å pristine, 0.005 Å less at end of charge.
    return FamilyModelConfig(
        name="perp",
        azimuths_003_deg=(25.0, 160.0, 205.0, 345.0),
        azimuths_110_deg=(90.0,),
        c_angstrom_vs_x_li=((0.5, 14.32), (0.75, 14.13), (0.95, 14.005), (1.0, 14.0)),
        a_angstrom_vs_x_li=((0.5, 2.7985), (0.75, 2.8025), (1.0, 2.8035)),
    )


def _par() -> FamilyModelConfig:
    return FamilyModelConfig(
        name="par",
        azimuths_003_deg=(90.0, 275.0),
        azimuths_110_deg=(210.0,),
        c_angstrom_vs_x_li=((0.5, 14.12), (0.75, 14.04), (0.95, 14.002), (1.0, 14.0)),
        a_angstrom_vs_x_li=((0.5, 2.798), (0.75, 2.802), (1.0, 2.803)),
    )


class FamiliesConfig(_Frozen):
    """The two LCO families and how their populations vary with depth and along x.

    The LCO⊥ population fraction is linear in depth, from ``perp_fraction_bottom`` at z = 0
    to ``perp_fraction_top`` at the top of the cathode (mean 0.5 for the defaults: 1 : 1
    overall, more LCO⊥ near the bottom), plus a smooth lateral modulation of amplitude
    ``lateral_amplitude`` (a sum of sinusoids with periods >= ``lateral_period_um``, phases
    from the seed).

    The Li-poor phase of the two-phase mixture is out of equilibrium (paper, Fig. 2f): its
    Li content is ``x_poor_eq + poor_phase_drift_x * F``, F the Li-rich share of the whole
    cathode, so it starts Li-richer (c lower) than the equilibrium gap edge and delithiates
    to it as the front crosses the electrode (c of LCO⊥ drifts from ~14.105 to 14.13 Å).
    """

    perp: FamilyModelConfig = Field(default_factory=_perp)
    par: FamilyModelConfig = Field(default_factory=_par)
    perp_fraction_bottom: float = Field(0.6, ge=0, le=1)
    perp_fraction_top: float = Field(0.4, ge=0, le=1)
    lateral_amplitude: float = Field(0.05, ge=0, le=0.5)
    lateral_period_um: float = Field(300.0, gt=0)
    poor_phase_drift_x: float = Field(
        0.04,
        ge=0,
        le=0.15,
        description="out-of-equilibrium Li-poor phase: its x exceeds the gap edge by this "
        "times the cathode's Li-rich share, so its c drifts up as the front sweeps",
    )

    @model_validator(mode="after")
    def _fractions_stay_in_range(self) -> Self:
        lo = min(self.perp_fraction_bottom, self.perp_fraction_top) - self.lateral_amplitude
        hi = max(self.perp_fraction_bottom, self.perp_fraction_top) + self.lateral_amplitude
        if lo < 0 or hi > 1:
            raise ValueError(
                "lateral_amplitude: perp fraction +- lateral_amplitude must stay in [0, 1], "
                f"got range [{lo:.3f}, {hi:.3f}]"
            )
        return self


class LithiumConfig(_Frozen):
    """Plated Li metal grains: rates, lifetimes, sizes and the Burgers texture.

    Rates are per mm of cell length. The in-diffraction arrival rate is
    ``rest_rate_per_mm_s * (1 + |dh/dt| / current_scale_um_per_h) / (1 + H / coarsening_um)``
    (h = Li thickness, H = Li plated plus stripped so far): more grains at high current
    density, fewer as the layer coarsens. Stripping kills grains with hazard
    ``strip_death_per_fraction`` per stripped fraction of the layer. Defaults are tuned so the
    paper's protocol gives its counts over a 1.6 mm map (see docs/twin.md).
    Each grain draws a class (ephemeral / unstable / stable) and an exponential lifetime of
    that class's mean, bounded below by ``min_lifetime_s``. Grains rotate and drift while in
    diffraction condition (paper: "move/rotate within minutes"): each draws a constant
    rotation rate of its (110) spot azimuth and a drift speed along x, normal with the given
    spreads.
    """

    rest_rate_per_mm_s: float = Field(0.035, gt=0)
    current_scale_um_per_h: float = Field(5.0, gt=0)
    coarsening_um: float = Field(12.0, gt=0)
    class_fractions: tuple[float, float, float] = (0.5, 0.3, 0.2)
    class_mean_lifetime_s: tuple[float, float, float] = (120.0, 1200.0, 8000.0)
    min_lifetime_s: float = Field(20.0, ge=0)
    strip_death_per_fraction: float = Field(
        2.5, ge=0, description="death hazard per stripped fraction of the layer"
    )
    width_um_at_zero: float = Field(2.0, gt=0, description="grain width (x) of the first nuclei")
    width_um_per_um: float = Field(0.6, ge=0, description="width growth per µm of Li")
    intensity_sigma: float = Field(0.5, ge=0, description="log-normal spread of spot intensity")
    spot_fwhm_deg: float = Field(1.0, gt=0)
    burgers_azimuths_deg: tuple[float, ...] = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
    late_azimuths_deg: tuple[float, ...] = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
    burgers_until_um: float = Field(3.9, gt=0, description="Li thickness of 0.8 mAh/cm²")
    late_fraction: float = Field(0.5, ge=0, le=1, description="share at late azimuths")
    azimuth_sigma_deg: float = Field(5.0, gt=0, le=15)
    step_s: float = Field(10.0, gt=0, description="time step of the birth process")
    rotation_sigma_deg_per_min: float = Field(
        0.5, ge=0, le=30, description="spread of the grains' spot rotation rates"
    )
    drift_sigma_um_per_min: float = Field(
        0.3, ge=0, le=30, description="spread of the grains' drift speeds along x"
    )

    @field_validator("class_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, ...]:
        if min(value) < 0 or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"class_fractions must be >= 0 and sum to 1, got {value}")
        return value

    @field_validator("class_mean_lifetime_s")
    @classmethod
    def _positive_lifetimes(cls, value: tuple[float, float, float]) -> tuple[float, ...]:
        if min(value) <= 0:
            raise ValueError(f"class_mean_lifetime_s must all be > 0 s, got {value}")
        return value


class TwinConfig(_Frozen):
    """Everything that defines a digital twin of the cell; defaults are the paper's values."""

    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    families: FamiliesConfig = Field(default_factory=FamiliesConfig)
    lithium: LithiumConfig = Field(default_factory=LithiumConfig)
    electrochem: ElectrochemConfig = Field(default_factory=ElectrochemConfig)
    seed: int = Field(0, ge=0)
    state_refresh_s: float = Field(
        1.0, gt=0, description="scene() reuses the cathode state for up to this long (s)"
    )

    @model_validator(mode="after")
    def _same_cathode(self) -> Self:
        lco_um = self.geometry.lco_thickness_um
        if abs(self.electrochem.cathode_thickness_um - lco_um) > 1e-9:
            raise ValueError(
                f"electrochem.cathode_thickness_um={self.electrochem.cathode_thickness_um} "
                f"must equal geometry.lco_thickness_um={lco_um}"
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file; errors name the field."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise ValueError(f"path: {path.name!r} must end in .toml, .yaml or .yml")
        return cls.model_validate(data)
