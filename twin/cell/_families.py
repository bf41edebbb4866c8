"""LCO orientation families: azimuths, population versus depth and x, and c(x_Li), a(x_Li).

LCO⊥ ("perp", Li planes ~perpendicular to the film) and LCO∥ ("par") share the same Li
content (the electrochemistry's profile) but expand differently: c and a per family are
piecewise-linear tables of x_Li from the configuration (clamped at the table ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._config import FamiliesConfig, FamilyModelConfig
from .._scene import FamilyTexture, LcoPhase
from ._geometry import CellGeometry

#: Number of sinusoids in the lateral modulation of the family populations.
_N_LATERAL_MODES = 3


def orientation_family(config: FamilyModelConfig) -> FamilyTexture:
    """The `FamilyTexture` (azimuths for the forward model) of one family config."""
    return FamilyTexture(
        name=config.name,
        azimuths_003_deg=config.azimuths_003_deg,
        azimuths_110_deg=config.azimuths_110_deg,
        chi_fwhm_deg=config.chi_fwhm_deg,
    )


def lattice_angstrom(config: FamilyModelConfig, x_li: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c and a (Å) of one family at Li contents ``x_li`` (any shape, same shape out)."""
    xc, c = np.asarray(config.c_angstrom_vs_x_li).T
    xa, a = np.asarray(config.a_angstrom_vs_x_li).T
    return np.interp(x_li, xc, c), np.interp(x_li, xa, a)


@dataclass(frozen=True)
class FamilyPopulation:
    """Population fraction of each family versus depth ``z_um`` and position ``x_um``.

    f_perp(z, x) = f_bottom + (f_top - f_bottom) z / L + A m(x), f_par = 1 - f_perp, with
    m(x) in [-1, 1] a sum of three sinusoids of seeded phases and periods between 1 and 3
    times ``lateral_period_um``. The configuration guarantees f_perp stays in [0, 1].
    """

    config: FamiliesConfig
    lco_thickness_um: float
    seed: int
    _periods_um: np.ndarray = field(init=False, repr=False)
    _phases: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0xFA])
        periods = self.config.lateral_period_um * rng.uniform(1.0, 3.0, _N_LATERAL_MODES)
        object.__setattr__(self, "_periods_um", periods)
        object.__setattr__(self, "_phases", rng.uniform(0.0, 2 * np.pi, _N_LATERAL_MODES))

    def lateral(self, x_um: np.ndarray | float) -> np.ndarray:
        """Lateral offset A m(x) of the LCO⊥ fraction (dimensionless), shape of ``x_um``."""
        x = np.asarray(x_um, float)[..., None]
        modes = np.sin(2 * np.pi * x / self._periods_um + self._phases)
        return self.config.lateral_amplitude * modes.mean(axis=-1)

    def perp_fraction_depth(self, z_um: np.ndarray) -> np.ndarray:
        """f_perp without the lateral term, at cathode depths ``z_um`` (µm, 0 = bottom)."""
        c = self.config
        t = np.clip(np.asarray(z_um, float) / self.lco_thickness_um, 0.0, 1.0)
        return c.perp_fraction_bottom + (c.perp_fraction_top - c.perp_fraction_bottom) * t

    def fractions(self, z_um: np.ndarray, x_um: np.ndarray) -> dict[str, np.ndarray]:
        """Population fraction per family name at (z, x) (broadcast shapes)."""
        perp = self.perp_fraction_depth(z_um) + self.lateral(x_um)
        return {self.config.perp.name: perp, self.config.par.name: 1.0 - perp}


@dataclass(frozen=True)
class MapFields:
    """Cathode truth on map pixels, each of shape (nz, nx); NaN where undefined."""

    c_angstrom: dict[str, np.ndarray]
    a_angstrom: dict[str, np.ndarray]
    x_li: np.ndarray
    rich_fraction: np.ndarray


@dataclass(frozen=True)
class CathodeState:
    """LCO phases per cathode cell at one time, ready for fast beam averages.

    For family F and cell i the beam weight of a phase is ``b_i p_F(z_i, x) g_i`` (b the beam
    profile integrated over the cell, p the family population, g the phase fraction); the
    phase's c is the weighted mean of ``c_F(x_phase,i)``. ``columns[F]`` holds, per cell,
    ``[g_rich, g_rich c, g_rich a, g_poor, g_poor c, g_poor a]``, so one ``u @ columns[F]``
    gives every sum at once.
    """

    time_s: float
    li_thickness_um: float
    ti_centre_um: float
    layer_bounds_um: np.ndarray  # (7, 2)
    edges_um: np.ndarray  # (n + 1,)
    base_fraction: dict[str, np.ndarray]  # (n,) population without the lateral term
    lateral_sign: dict[str, float]
    columns: dict[str, np.ndarray]  # (n, 6)
    x_li: np.ndarray  # (n,)
    rich_fraction: np.ndarray  # (n,)
    population: FamilyPopulation
    beam_cdf: Callable[[np.ndarray], np.ndarray]
    beam_half_um: float

    def _beam_cells(self, z_um: float) -> tuple[slice, np.ndarray]:
        lo = np.searchsorted(self.edges_um, z_um - self.beam_half_um, side="right") - 1
        hi = np.searchsorted(self.edges_um, z_um + self.beam_half_um, side="left") + 1
        lo, hi = max(int(lo), 0), min(int(hi), len(self.edges_um))
        cdf = self.beam_cdf(self.edges_um[lo:hi] - z_um)
        return slice(lo, max(hi - 1, lo)), np.diff(cdf)

    def lco_phases(self, z_um: float, x_um: float) -> tuple[LcoPhase, ...]:
        """The LCO phases per family for a beam at (``z_um``, ``x_um``)."""
        cells, beam = self._beam_cells(z_um)
        lateral = float(self.population.lateral(x_um))
        phases = []
        for name, columns in self.columns.items():
            pop = self.base_fraction[name][cells] + self.lateral_sign[name] * lateral
            sums = (beam * pop) @ columns[cells]
            for w, cw, aw in (sums[:3], sums[3:]):
                if w > 1e-12:
                    phases.append(LcoPhase(name, float(w), float(cw / w), float(aw / w)))
        return tuple(phases)

    def map_fields(self, z_um: np.ndarray, x_um: np.ndarray) -> MapFields:
        """Footprint-averaged truth on a (nz, nx) grid of beam positions.

        Cathode pixels are those whose footprint lies at least half in the cathode (the beam
        centre inside it); elsewhere every field is NaN, so a Gaussian beam's tails do not
        make a pixel above the cathode count as one.
        """
        cdf = self.beam_cdf(self.edges_um[None, :] - z_um[:, None])
        beam = np.diff(cdf, axis=1)  # (nz, n)
        beam[beam.sum(axis=1) < 0.5] = 0.0
        total = beam.sum(axis=1)[:, None]
        lateral = self.population.lateral(x_um)  # (nx,)
        c_out, a_out = {}, {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, columns in self.columns.items():
                pop = (
                    self.base_fraction[name][None, :] + self.lateral_sign[name] * lateral[:, None]
                )
                sums = np.einsum("zn,xn,nk->zxk", beam, pop, columns)
                w = sums[..., 0] + sums[..., 3]
                c_out[name] = np.where(w > 1e-12, (sums[..., 1] + sums[..., 4]) / w, np.nan)
                a_out[name] = np.where(w > 1e-12, (sums[..., 2] + sums[..., 5]) / w, np.nan)
            nx = len(x_um)
            x_li = np.where(total > 1e-12, beam @ self.x_li[:, None] / total, np.nan)
            rich = np.where(total > 1e-12, beam @ self.rich_fraction[:, None] / total, np.nan)
        return MapFields(c_out, a_out, np.repeat(x_li, nx, 1), np.repeat(rich, nx, 1))


def cathode_state(
    electrochemistry: _Electrochemistry,
    geometry: CellGeometry,
    config: FamiliesConfig,
    population: FamilyPopulation,
) -> CathodeState:
    """Precompute the `CathodeState` of the electrochemistry's current profile."""
    profile = electrochemistry.profile()
    z = np.asarray(profile.z_um, float)
    lco_um = geometry.config.lco_thickness_um
    edges = np.concatenate(([0.0], 0.5 * (z[1:] + z[:-1]), [lco_um]))
    h_um = float(electrochemistry.plated_li_thickness_um())
    rich = np.asarray(profile.rich_fraction, float)
    columns, base = {}, {}
    for family in (config.perp, config.par):
        c_rich, a_rich = lattice_angstrom(family, np.asarray(profile.x_rich, float))
        c_poor, a_poor = lattice_angstrom(family, np.asarray(profile.x_poor, float))
        poor = 1.0 - rich
        columns[family.name] = np.stack(
            (rich, rich * c_rich, rich * a_rich, poor, poor * c_poor, poor * a_poor), axis=1
        )
        perp = population.perp_fraction_depth(z)
        base[family.name] = perp if family is config.perp else 1.0 - perp
    return CathodeState(
        time_s=float(electrochemistry.time_s),
        li_thickness_um=h_um,
        ti_centre_um=geometry.ti_centre_um(h_um),
        layer_bounds_um=geometry.layer_bounds_um(h_um),
        edges_um=edges,
        base_fraction=base,
        lateral_sign={config.perp.name: 1.0, config.par.name: -1.0},
        columns=columns,
        x_li=np.asarray(profile.x_li, float),
        rich_fraction=rich,
        population=population,
        beam_cdf=geometry.beam_cdf,
        beam_half_um=geometry.beam_half_extent_um(),
    )


class _Electrochemistry(Protocol):
    """What `cathode_state` reads from `CellElectrochemistry`."""

    @property
    def time_s(self) -> float: ...

    def profile(self) -> Any: ...

    def plated_li_thickness_um(self) -> float: ...
