"""Plated Li metal grains in diffraction condition: a seeded birth-death process in time.

Each row of the population is one *episode* of a grain in diffraction condition on the Li
(110) ring: it is born (nucleates, or rotates into the condition) at ``birth_s`` and leaves at
``death_s``. Grains are columnar: they span the whole Li layer in z, have a width along x and
one spot azimuth. The physics, with h the Li thickness (µm):

- arrival rate per mm of cell ``r0 (1 + |dh/dt| / j0) / (1 + H / h_c)``, with H the Li
  plated plus stripped so far (µm): more grains at high current density (nucleation), fewer
  as the layer is reworked (coarsening, which goes on in discharge); r0 > 0 keeps grains
  rotating in and out at rest;
- lifetimes: a class is drawn (ephemeral / unstable / stable) and an exponential lifetime of
  that class's mean (at least ``min_lifetime_s``);
- widths grow with h (fewer, larger grains);
- azimuths follow the Burgers orientation relationship with the Ti texture, (001)Ti ∥
  (110)Li, clustered at 0, 60, 120, 180° ... until h reaches ``burgers_until_um``
  (0.8 mAh/cm²); afterwards a share ``late_fraction`` appears at 30, 90, 150° ... too;
- grains rotate and drift while in diffraction condition: the spot azimuth at time t is
  ``azimuth_deg + rotation_deg_per_s (t - birth_s)`` and the centre
  ``x_um + drift_um_per_s (t - birth_s)`` (constant rates, drawn per grain).

Time advances in fixed steps of ``step_s``; step k draws its births from a generator seeded by
(seed, k) with the state at the step start, so the population does not depend on how often
it is queried, only on the seed and the electrochemistry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .._config import LithiumConfig

#: Lifetime classes, indexed by `TruthGrains.lifetime_class`.
CLASS_NAMES: tuple[str, ...] = ("ephemeral", "unstable", "stable")


@dataclass(frozen=True)
class TruthGrains:
    """Full history of Li grains in diffraction condition; all arrays have shape (n,).

    Parameters
    ----------
    grain_id
        Unique id (int64), in order of birth.
    x_um, width_um
        Centre at birth and width along x (µm); the grain covers ``x_at(t) ± width_um / 2``.
    z_bottom_um, z_top_um
        z extent (µm) of the grain at its birth: the whole Li layer (columnar grains); the
        top follows the layer top as it grows or shrinks.
    azimuth_deg
        Detector azimuth χ of its (110) spot at birth, in [0, 360).
    intensity
        Spot intensity scale (dimensionless, ~1).
    birth_s, death_s
        Experiment time (s) it enters and leaves diffraction condition.
    lifetime_class
        Index into `CLASS_NAMES`.
    visible
        Whether the spot lands on active detector pixels at birth (injected predicate).
    rotation_deg_per_s, drift_um_per_s
        Rotation rate of the spot azimuth (deg/s) and drift speed along x (µm/s).
    """

    grain_id: np.ndarray
    x_um: np.ndarray
    width_um: np.ndarray
    z_bottom_um: np.ndarray
    z_top_um: np.ndarray
    azimuth_deg: np.ndarray
    intensity: np.ndarray
    birth_s: np.ndarray
    death_s: np.ndarray
    lifetime_class: np.ndarray
    visible: np.ndarray
    rotation_deg_per_s: np.ndarray
    drift_um_per_s: np.ndarray

    def azimuth_at(self, time_s: float) -> np.ndarray:
        """Spot azimuths (deg, [0, 360)) at ``time_s``, shape (n,)."""
        return (self.azimuth_deg + self.rotation_deg_per_s * (time_s - self.birth_s)) % 360.0

    def x_at(self, time_s: float) -> np.ndarray:
        """Grain centres along x (µm) at ``time_s``, shape (n,)."""
        return self.x_um + self.drift_um_per_s * (time_s - self.birth_s)

    def __len__(self) -> int:
        return len(self.grain_id)

    def alive(self, time_s: float) -> np.ndarray:
        """Boolean mask (n,) of grains in diffraction condition at ``time_s``."""
        return (self.birth_s <= time_s) & (time_s < self.death_s)

    def x_bin(self, x_start_um: float, pixel_um: float, time_s: float | None = None) -> np.ndarray:
        """Index of the map pixel (``pixel_um`` wide from ``x_start_um``) of each centre
        (at birth, or at ``time_s`` when given)."""
        if not pixel_um > 0:
            raise ValueError(f"pixel_um={pixel_um} must be > 0")
        x_um = self.x_um if time_s is None else self.x_at(time_s)
        return np.floor((x_um - x_start_um) / pixel_um).astype(np.int64)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays, for storage."""
        return asdict(self)

    def select(self, mask: np.ndarray) -> TruthGrains:
        """Rows where ``mask`` is true (or at integer indices ``mask``)."""
        return TruthGrains(**{k: v[mask] for k, v in asdict(self).items()})


def _empty_columns() -> dict[str, np.ndarray]:
    ints = ("grain_id", "lifetime_class")
    names = TruthGrains.__dataclass_fields__
    out = {k: np.empty(0, np.int64 if k in ints else float) for k in names}
    out["visible"] = np.empty(0, bool)
    return out


def _visible_fraction(
    centres_deg: tuple[float, ...], sigma_deg: float, visible: Callable[[float], bool]
) -> float:
    """Share of a Gaussian mixture of azimuths around ``centres_deg`` that is visible."""
    offsets = np.linspace(-4 * sigma_deg, 4 * sigma_deg, 33)
    weights = np.exp(-0.5 * (offsets / sigma_deg) ** 2)
    hits = [
        visible(float((centre + off) % 360.0)) * w
        for centre in centres_deg
        for off, w in zip(offsets, weights, strict=True)
    ]
    return float(np.sum(hits) / (weights.sum() * len(centres_deg)))


class GrainPopulation:
    """The seeded, incrementally advanced population of Li grains in diffraction condition.

    Parameters
    ----------
    config
        Rates, lifetimes, sizes and texture.
    cell_length_um
        Grains are spread uniformly over x in [0, cell_length_um].
    li_bottom_um
        z (µm) of the bottom of the Li layer (top of the electrolyte).
    seed
        Seed of every random draw.
    visible
        ``visible(chi_deg)``: whether a (110) spot at that azimuth lands on active pixels.
        Arrival rates are divided by the visible share of the azimuth distribution so that
        the *visible* counts follow the configured rates. None = every azimuth visible.
    """

    def __init__(
        self,
        config: LithiumConfig,
        *,
        cell_length_um: float,
        li_bottom_um: float,
        seed: int,
        visible: Callable[[float], bool] | None = None,
    ) -> None:
        self.config = config
        self.cell_length_um = cell_length_um
        self.li_bottom_um = li_bottom_um
        self.seed = seed
        self._visible = visible
        self._rate_gain = self._visibility_gain()
        self._columns = _empty_columns()
        self._chunks: list[dict[str, np.ndarray]] = []
        self._next_step = 0
        self._n_grains = 0
        self._throughput_um = 0.0
        self._last_thickness_um = 0.0
        self._table: TruthGrains | None = None

    def _visibility_gain(self) -> tuple[float, float]:
        """1 / visible share of the azimuths, before and after the Burgers stage."""
        if self._visible is None:
            return 1.0, 1.0
        c = self.config
        early = _visible_fraction(c.burgers_azimuths_deg, c.azimuth_sigma_deg, self._visible)
        late_only = _visible_fraction(c.late_azimuths_deg, c.azimuth_sigma_deg, self._visible)
        late = (1 - c.late_fraction) * early + c.late_fraction * late_only
        if min(early, late) < 0.05:
            raise ValueError(
                f"visible: only {min(early, late):.1%} of the Li (110) azimuths are visible; "
                "at least 5 % are needed"
            )
        return 1.0 / early, 1.0 / late

    @property
    def time_s(self) -> float:
        """Experiment time (s) up to which births have been drawn."""
        return self._next_step * self.config.step_s

    def advance_to(self, time_s: float, thickness_at: Callable[[float], float]) -> None:
        """Draw births for every step starting at or before ``time_s``.

        ``thickness_at(t)`` must return the Li thickness (µm) at time t; it is called with
        increasing step start times (so it may advance a simulation as a side effect).
        """
        step_s = self.config.step_s
        while self._next_step * step_s <= time_s:
            start_s = self._next_step * step_s
            thickness_um = thickness_at(start_s)
            change_um = abs(thickness_um - self._last_thickness_um)
            self._throughput_um += change_um
            rate = self.rate_per_s(thickness_um, change_um / step_s * 3600.0, self._throughput_um)
            if thickness_um < self._last_thickness_um:
                self._strip(start_s, change_um / max(self._last_thickness_um, 1e-9))
            self._chunks.append(self._births(self._next_step, thickness_um, rate))
            self._last_thickness_um = thickness_um
            self._next_step += 1
            self._table = None

    def rate_per_s(self, thickness_um: float, rate_um_per_h: float, throughput_um: float) -> float:
        """Arrival rate (grains/s over the whole cell) of grains in diffraction condition.

        Parameters
        ----------
        thickness_um
            Li thickness h (µm); no Li, no grains.
        rate_um_per_h
            |dh/dt| (µm/h), proportional to the current density.
        throughput_um
            Li plated plus stripped so far (µm), which drives the coarsening.
        """
        if thickness_um <= 0:
            return 0.0
        c = self.config
        per_mm = (
            c.rest_rate_per_mm_s
            * (1.0 + rate_um_per_h / c.current_scale_um_per_h)
            / (1.0 + throughput_um / c.coarsening_um)
        )
        return per_mm * self.cell_length_um / 1000.0

    def _births(self, step: int, thickness_um: float, rate_per_s: float) -> dict:
        c = self.config
        burgers = thickness_um < c.burgers_until_um
        gain = self._rate_gain[0 if burgers else 1]
        rng = np.random.default_rng([self.seed, 0x11, step])
        n = rng.poisson(rate_per_s * gain * c.step_s)
        klass = rng.choice(3, size=n, p=c.class_fractions)
        means = np.asarray(c.class_mean_lifetime_s)[klass]
        lifetime_s = c.min_lifetime_s + rng.exponential(np.maximum(means - c.min_lifetime_s, 1.0))
        birth_s = (step + rng.uniform(0.0, 1.0, n)) * c.step_s
        width_um = (c.width_um_at_zero + c.width_um_per_um * thickness_um) * rng.lognormal(
            0.0, 0.3, n
        )
        azimuth = self._azimuths(rng, n, burgers)
        # motion from its own stream, so the draws above stay those of a still population
        motion = np.random.default_rng([self.seed, 0x12, step])
        rotation = motion.normal(0.0, c.rotation_sigma_deg_per_min / 60.0, n)
        drift = motion.normal(0.0, c.drift_sigma_um_per_min / 60.0, n)
        first_id = self._n_grains
        self._n_grains += n
        return {
            "grain_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "x_um": rng.uniform(0.0, self.cell_length_um, n),
            "width_um": width_um,
            "z_bottom_um": np.full(n, self.li_bottom_um),
            "z_top_um": np.full(n, self.li_bottom_um + thickness_um),
            "azimuth_deg": azimuth,
            "intensity": rng.lognormal(0.0, c.intensity_sigma, n),
            "birth_s": birth_s,
            "death_s": birth_s + lifetime_s,
            "lifetime_class": klass.astype(np.int64),
            "visible": self._visible_mask(azimuth),
            "rotation_deg_per_s": rotation,
            "drift_um_per_s": drift,
        }

    def _strip(self, start_s: float, stripped_fraction: float) -> None:
        """Stripping dissolves grains: each alive grain dies in this step with probability
        ``1 - exp(-k f)``, f the stripped fraction of the layer, k = strip_death_per_fraction."""
        table = self.table()
        alive = np.flatnonzero(table.alive(start_s))
        rng = np.random.default_rng([self.seed, 0x57, self._next_step])
        p_death = 1.0 - np.exp(-self.config.strip_death_per_fraction * stripped_fraction)
        dies = alive[rng.uniform(0.0, 1.0, len(alive)) < p_death]
        new_death_s = start_s + rng.uniform(0.0, self.config.step_s, len(dies))
        death_s = table.death_s.copy()  # tables handed out earlier stay unchanged
        death_s[dies] = np.minimum(death_s[dies], new_death_s)
        self._columns["death_s"] = death_s
        self._table = None

    def _azimuths(self, rng: np.random.Generator, n: int, burgers: bool) -> np.ndarray:
        c = self.config
        early = np.asarray(c.burgers_azimuths_deg)
        late = np.asarray(c.late_azimuths_deg)
        centres = early[rng.integers(0, len(early), n)]
        if not burgers:
            use_late = rng.uniform(0.0, 1.0, n) < c.late_fraction
            centres = np.where(use_late, late[rng.integers(0, len(late), n)], centres)
        return (centres + rng.normal(0.0, c.azimuth_sigma_deg, n)) % 360.0

    def _visible_mask(self, azimuth_deg: np.ndarray) -> np.ndarray:
        if self._visible is None:
            return np.ones(len(azimuth_deg), bool)
        return np.array([bool(self._visible(float(a))) for a in azimuth_deg], bool)

    def table(self) -> TruthGrains:
        """The full history drawn so far (grains born after the current time included)."""
        if self._table is None:
            chunks = [self._columns, *self._chunks]
            self._columns = {k: np.concatenate([ch[k] for ch in chunks]) for k in self._columns}
            self._chunks = []
            for column in self._columns.values():
                column.flags.writeable = False
            self._table = TruthGrains(**self._columns)
        return self._table
