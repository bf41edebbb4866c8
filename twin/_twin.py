"""`CellTwin`: the digital twin of the cell, answering "what does the beam see" at any time.

Time: what the twin shows at time t is a function of t alone, never of who advanced the
shared electrochemistry first (the potentiostat to the clock's time, the Eiger to a frame's
mid-exposure, the truth to a map's mid time). The electrochemistry records an exact snapshot
of its Li field and plated Li at every sample time (1 s) as it passes, whoever drives it; the
cathode state at t is built from the snapshot at the fixed grid time ``floor(t /
state_refresh_s) * state_refresh_s`` (a `CathodeState`: per-cell matrices of the LCO phases,
so `scene` only does a few small dot products and stays in the 0.1 ms range), and the grain
births of each step use the Li thickness of the sample at the step start. Every sample's
snapshot is kept (the Li fractions per cell: ~1 kB per second of experiment time), so a frame
or a map truth may ask for any time since the start.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._config import TwinConfig
from ._scene import LAYERS, BeamScene, FamilyTexture, LiSpot
from ._truth import MapTruth
from .cell import (
    CathodeState,
    CellGeometry,
    FamilyPopulation,
    GrainPopulation,
    TruthGrains,
    cathode_state,
    orientation_family,
)
from .electrochem import (
    CellElectrochemistry,
    ElectrochemState,
    LiProfile,
    SampledElectrochemistry,
    split_phases,
)

#: Cathode states kept (one per grid time asked for).
_STATE_CACHE = 64
_LI = LAYERS.index("li")
_LCO = LAYERS.index("lco")


@dataclass(frozen=True)
class _Snapshot:
    """The electrochemistry at one sample time: what `cathode_state` reads of it.

    Only the Li fractions are stored (a few hundred bytes per sample, every sample kept); the
    phases are split again on demand, exactly as the field does.
    """

    time_s: float
    z_um: np.ndarray
    x_li: np.ndarray
    li_thickness_um: float
    gap: tuple[float, float]  # (x_poor_eq, x_rich_eq)

    def profile(self) -> LiProfile:
        rich, x_rich, x_poor = split_phases(
            self.x_li, x_poor_eq=self.gap[0], x_rich_eq=self.gap[1]
        )
        return LiProfile(self.z_um, self.x_li, rich, x_rich, x_poor)

    def plated_li_thickness_um(self) -> float:
        return self.li_thickness_um


def beam_x_fraction(
    lo_um: np.ndarray, hi_um: np.ndarray, x_start_um: float, x_stop_um: float, beam_um: float
) -> np.ndarray:
    """Fraction of a top-hat beam (width ``beam_um``) x frame time inside [lo, hi].

    The beam centre moves uniformly from ``x_start_um`` to ``x_stop_um``. With
    ov(u) = |[u - w/2, u + w/2] ∩ [x0, x1]| = R(u + w/2 - x0) - R(u - w/2 - x0)
    - R(u + w/2 - x1) + R(u - w/2 - x1), R(s) = max(s, 0), the fraction is
    ∫_lo^hi ov(u) du / (w T), and R integrates to R2(s) = max(s, 0)² / 2.
    """
    x0, x1 = sorted((x_start_um, x_stop_um))
    travel = x1 - x0
    w = beam_um
    if travel < 1e-9 * w:  # a still beam: plain overlap of the footprint
        over = np.minimum(hi_um, x0 + w / 2) - np.maximum(lo_um, x0 - w / 2)
        return np.clip(over, 0.0, None) / w
    total = np.zeros(np.shape(lo_um))
    for offset, sign in ((w / 2 - x0, 1), (-w / 2 - x0, -1), (w / 2 - x1, -1), (-w / 2 - x1, 1)):
        total += sign * (
            np.square(np.clip(hi_um + offset, 0, None))
            - np.square(np.clip(lo_um + offset, 0, None))
        )
    return np.clip(0.5 * total / (w * travel), 0.0, 1.0)


@dataclass(frozen=True)
class _GrainIndex:
    """Grains sorted by their left edge, for fast x-range queries."""

    table: TruthGrains
    lo_um: np.ndarray
    hi_um: np.ndarray
    max_width_um: float

    @classmethod
    def build(cls, table: TruthGrains) -> _GrainIndex:
        order = np.argsort(table.x_um - table.width_um / 2, kind="stable")
        sorted_table = table.select(order)
        half = sorted_table.width_um / 2
        width = float(sorted_table.width_um.max()) if len(order) else 0.0
        return cls(sorted_table, sorted_table.x_um - half, sorted_table.x_um + half, width)

    def candidates(self, lo_um: float, hi_um: float) -> slice:
        start = np.searchsorted(self.lo_um, lo_um - self.max_width_um, side="left")
        stop = np.searchsorted(self.lo_um, hi_um, side="right")
        return slice(int(start), int(stop))


class CellTwin:
    """The digital twin of the cell: electrochemistry, LCO families, Li layer and grains.

    Parameters
    ----------
    config
        The twin's configuration.
    visible
        ``visible(chi_deg)``: whether a Li (110) spot at that azimuth lands on active detector
        pixels (not a gap or the sample shadow). Grain arrival rates are scaled so the
        *visible* grain counts match the configured rates. None = every azimuth visible.
    """

    def __init__(
        self, config: TwinConfig, *, visible: Callable[[float], bool] | None = None
    ) -> None:
        self.config = config
        self.geometry = CellGeometry(config.geometry)
        # shared with the simulated potentiostat, which reads the samples it records
        self.electrochemistry = SampledElectrochemistry(CellElectrochemistry(config.electrochem))
        self._snapshots: list[_Snapshot] = []
        self._snapshot_times: list[float] = []
        self.electrochemistry.add_observer(self._record)
        fam = config.families
        self.families: tuple[FamilyTexture, ...] = (
            orientation_family(fam.perp),
            orientation_family(fam.par),
        )
        g = config.geometry
        self._population = FamilyPopulation(fam, g.lco_thickness_um, config.seed)
        self._grains = GrainPopulation(
            config.lithium,
            cell_length_um=g.cell_length_um,
            li_bottom_um=g.lco_thickness_um + g.lipon_thickness_um,
            seed=config.seed,
            visible=visible,
        )
        self._states: OrderedDict[float, CathodeState] = OrderedDict()
        self._grain_index: _GrainIndex | None = None
        self._time_s = self.electrochemistry.time_s

    # -- time -------------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        """Experiment time (s) the twin was last advanced to."""
        return self._time_s

    def advance_to(self, time_s: float) -> None:
        """Run the electrochemistry and the grain population to ``time_s`` (s).

        Raises
        ------
        ValueError
            If ``time_s`` is not finite or is earlier than `time_s` (time only moves on).
        """
        if not math.isfinite(time_s) or time_s < self.time_s:
            raise ValueError(f"time_s={time_s} must be finite and >= the twin's {self.time_s} s")
        self._time_s = time_s
        # The potentiostat drives the same electrochemistry and may already be ahead (it is
        # sampled at the clock's time, frames at their mid-exposure time): never step back.
        self.electrochemistry.advance_to(max(time_s, self.electrochemistry.time_s))
        if time_s >= self._grains.time_s:
            self._grains.advance_to(time_s, self._li_thickness_at)
            self._grain_index = None

    def _record(self, state: ElectrochemState) -> None:
        ec = self.electrochemistry
        profile = ec.profile()
        z_um = self._snapshots[0].z_um if self._snapshots else profile.z_um
        gap = (ec.config.x_poor_eq, ec.config.x_rich_eq)
        thickness_um = ec.plated_li_thickness_um()
        self._snapshots.append(_Snapshot(state.time_s, z_um, profile.x_li, thickness_um, gap))
        self._snapshot_times.append(state.time_s)

    def _snapshot_at(self, time_s: float) -> _Snapshot:
        """The electrochemistry's snapshot at the latest sample time at or before ``time_s``."""
        self.electrochemistry.advance_to(max(time_s, self.electrochemistry.time_s))
        i = bisect.bisect_right(self._snapshot_times, time_s) - 1
        if i < 0:
            raise ValueError(
                f"time_s={time_s} is before the first sample ({self._snapshot_times[0]} s)"
            )
        return self._snapshots[i]

    def _li_thickness_at(self, time_s: float) -> float:
        return self._snapshot_at(time_s).li_thickness_um

    def _state_at(self, time_s: float) -> CathodeState:
        """The cathode state at the grid time at or before ``time_s`` (a function of time)."""
        if not math.isfinite(time_s):
            raise ValueError(f"time_s={time_s} must be finite")
        self.advance_to(max(time_s, self.time_s))
        refresh = self.config.state_refresh_s
        snapshot = self._snapshot_at(math.floor(time_s / refresh) * refresh)
        state = self._states.get(snapshot.time_s)
        if state is None:
            state = cathode_state(snapshot, self.geometry, self.config.families, self._population)
            self._states[snapshot.time_s] = state
            while len(self._states) > _STATE_CACHE:
                self._states.popitem(last=False)
        return state

    def _index(self) -> _GrainIndex:
        if self._grain_index is None:
            self._grain_index = _GrainIndex.build(self._grains.table())
        return self._grain_index

    # -- queries ----------------------------------------------------------------------------
    def grains(self) -> TruthGrains:
        """Full history of Li grains in diffraction condition drawn so far."""
        return self._grains.table()

    def scene(
        self, *, z_um: float, x_start_um: float, x_stop_um: float, time_s: float
    ) -> BeamScene:
        """What the beam sees at height ``z_um`` while travelling x_start → x_stop (µm)."""
        state = self._state_at(time_s)
        weights = self.geometry.beam_cdf(state.layer_bounds_um - z_um)
        layer = weights[:, 1] - weights[:, 0]
        x_mid_um = 0.5 * (x_start_um + x_stop_um)
        phases = state.lco_phases(z_um, x_mid_um) if layer[_LCO] > 0 else ()
        spots = self._spots(layer[_LI], x_start_um, x_stop_um, time_s)
        return BeamScene(
            time_s=time_s,
            z_um=z_um,
            x_start_um=x_start_um,
            x_stop_um=x_stop_um,
            layer_weights={n: float(w) for n, w in zip(LAYERS, layer, strict=True) if w > 0},
            lco_phases=phases,
            li_spots=spots,
        )

    def _spots(
        self, li_weight: float, x_start_um: float, x_stop_um: float, time_s: float
    ) -> tuple[LiSpot, ...]:
        if li_weight <= 0:
            return ()
        ids, fractions, table = self._overlapping(x_start_um, x_stop_um, time_s)
        fwhm = self.config.lithium.spot_fwhm_deg
        return tuple(
            LiSpot(int(table.grain_id[i]), float(table.azimuth_deg[i]), float(w), fwhm)
            for i, w in zip(ids, li_weight * fractions * table.intensity[ids], strict=True)
        )

    def _overlapping(
        self, x_start_um: float, x_stop_um: float, time_s: float
    ) -> tuple[np.ndarray, np.ndarray, TruthGrains]:
        """Indices (into the x-sorted table) of alive grains the beam touches, and overlaps."""
        index = self._index()
        beam_um = self.config.geometry.beam_size_x_um
        lo, hi = sorted((x_start_um, x_stop_um))
        sl = index.candidates(lo - beam_um / 2, hi + beam_um / 2)
        t = index.table
        fraction = beam_x_fraction(index.lo_um[sl], index.hi_um[sl], lo, hi, beam_um)
        keep = (fraction > 0) & (t.birth_s[sl] <= time_s) & (time_s < t.death_s[sl])
        ids = np.flatnonzero(keep) + sl.start
        return ids, fraction[keep], t

    def truth(self, *, z_um: np.ndarray, x_um: np.ndarray, time_s: float) -> MapTruth:
        """Ground truth on map pixels: heights ``z_um`` (nz,), x centres ``x_um`` (nx,).

        Each pixel is the beam at that height travelling over the pixel's x spacing (uniform
        spacing required; a single column uses the beam width).
        """
        z = np.asarray(z_um, float).ravel()
        x = np.asarray(x_um, float).ravel()
        dx = _pixel_um(x, self.config.geometry.beam_size_x_um)
        state = self._state_at(time_s)
        fields = state.map_fields(z, x)
        ids, _, table = self._overlapping(x[0] - dx / 2, x[-1] + dx / 2, time_s)
        grains = table.select(ids)
        return MapTruth(
            time_s=time_s,
            z_um=z,
            x_um=x,
            c_angstrom=fields.c_angstrom,
            a_angstrom=fields.a_angstrom,
            x_li=fields.x_li,
            rich_fraction=fields.rich_fraction,
            li_thickness_um=np.full(len(x), state.li_thickness_um),
            ti_centre_um=np.full(len(x), state.ti_centre_um),
            grain_id=grains.grain_id,
            grain_azimuth_deg=grains.azimuth_deg,
            grain_x_um=grains.x_um,
            grain_x_bin=grains.x_bin(x[0] - dx / 2, dx),
            grain_visible=grains.visible,
        )


def _pixel_um(x_um: np.ndarray, beam_um: float) -> float:
    if x_um.size == 0:
        raise ValueError("x_um must hold at least one pixel centre")
    if x_um.size == 1:
        return beam_um
    steps = np.diff(x_um)
    if not (steps > 0).all() or np.ptp(steps) > 1e-6 * steps.mean():
        raise ValueError("x_um must be increasing with a uniform spacing")
    return float(steps.mean())
