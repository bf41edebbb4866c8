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
or a map truth may ask for any time since the start, until `CellTwin.forget_before` drops
what no later query needs (a day-long rehearsal would otherwise keep ~90 MB of them).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ._config import TwinConfig
from ._front import phase_boundary_um
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
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Front speed: backward difference of the phase boundary over this interval (s).
_FRONT_SPEED_DT_S = 30.0


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
    drift_x: float  # out-of-equilibrium excess x of the Li-poor phase at full Li-rich share

    def profile(self) -> LiProfile:
        """The phases as the beam sees them: the Li-poor edge of the gap moved by
        ``drift_x`` times the cathode's Li-rich share (out of equilibrium, see
        `FamiliesConfig`); Li is conserved by the lever rule."""
        x_poor_eq, x_rich_eq = self.gap
        rich_eq, _, _ = split_phases(self.x_li, x_poor_eq=x_poor_eq, x_rich_eq=x_rich_eq)
        edge = min(x_poor_eq + self.drift_x * float(rich_eq.mean()), x_rich_eq - 1e-6)
        rich, x_rich, x_poor = split_phases(self.x_li, x_poor_eq=edge, x_rich_eq=x_rich_eq)
        return LiProfile(self.z_um, self.x_li, rich, x_rich, x_poor)

    def plated_li_thickness_um(self) -> float:
        return self.li_thickness_um


def beam_x_fraction(
    lo_um: np.ndarray,
    hi_um: np.ndarray,
    x_start_um: float,
    x_stop_um: float,
    beam_um: float,
    *,
    profile: str = "tophat",
) -> np.ndarray:
    """Fraction of the beam (width ``beam_um``: top-hat width or Gaussian FWHM) x frame time
    inside [lo, hi], the beam centre moving uniformly from ``x_start_um`` to ``x_stop_um``.

    Top-hat: with ov(u) = |[u - w/2, u + w/2] ∩ [x0, x1]| = R(u + w/2 - x0) - R(u - w/2 - x0)
    - R(u + w/2 - x1) + R(u - w/2 - x1), R(s) = max(s, 0), the fraction is ∫_lo^hi ov(u) du /
    (w T), and R integrates to R2(s) = max(s, 0)² / 2. Gaussian (σ = FWHM / 2.355): the
    fraction at centre u is Φ((hi - u)/σ) - Φ((lo - u)/σ), and Φ integrates to
    σ Ψ, Ψ(s) = s Φ(s) + φ(s).
    """
    x0, x1 = sorted((x_start_um, x_stop_um))
    if profile == "gaussian":
        return _gaussian_x_fraction(np.asarray(lo_um, float), np.asarray(hi_um, float), x0, x1,
                                    beam_um * _FWHM_TO_SIGMA)  # fmt: skip
    if profile != "tophat":
        raise ValueError(f"profile={profile!r} must be 'tophat' or 'gaussian'")
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


def _gaussian_x_fraction(
    lo: np.ndarray, hi: np.ndarray, x0: float, x1: float, sigma: float
) -> np.ndarray:
    if x1 - x0 < 1e-9 * sigma:
        return ndtr((hi - x0) / sigma) - ndtr((lo - x0) / sigma)

    def psi(s: np.ndarray) -> np.ndarray:
        return s * ndtr(s) + np.exp(-0.5 * s * s) / math.sqrt(2.0 * math.pi)

    total = psi((hi - x0) / sigma) - psi((hi - x1) / sigma)
    total -= psi((lo - x0) / sigma) - psi((lo - x1) / sigma)
    return np.clip(sigma * total / (x1 - x0), 0.0, 1.0)


@dataclass(frozen=True)
class _GrainIndex:
    """Grains in diffraction condition during one state grid interval, sorted by their left
    edge at the interval start, for fast x-range queries of moving grains."""

    source: TruthGrains  # the population table this index was built from
    time_s: float
    table: TruthGrains
    lo_um: np.ndarray
    reach_um: float  # widest grain + farthest drift within the interval

    @classmethod
    def build(cls, source: TruthGrains, time_s: float, interval_s: float) -> _GrainIndex:
        alive = (source.birth_s < time_s + interval_s) & (source.death_s > time_s)
        table = source.select(alive)
        lo = table.x_at(time_s) - table.width_um / 2
        order = np.argsort(lo, kind="stable")
        table = table.select(order)
        reach = 0.0
        if len(table):
            drift = float(np.abs(table.drift_um_per_s).max()) * interval_s
            reach = float(table.width_um.max()) + drift
        return cls(source, time_s, table, lo[order], reach)

    def candidates(self, lo_um: float, hi_um: float) -> slice:
        start = np.searchsorted(self.lo_um, lo_um - self.reach_um, side="left")
        stop = np.searchsorted(self.lo_um, hi_um + self.reach_um, side="right")
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
        self._first_sample_s = math.nan
        # the rehearsal's truths run on the live analysis's thread while frames render
        self._snapshots_lock = threading.Lock()
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
        self._visible = visible
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

    def _record(self, state: ElectrochemState) -> None:
        ec = self.electrochemistry
        profile = ec.profile()
        z_um = self._snapshots[0].z_um if self._snapshots else profile.z_um
        gap = (ec.config.x_poor_eq, ec.config.x_rich_eq)
        thickness_um = ec.plated_li_thickness_um()
        drift = self.config.families.poor_phase_drift_x
        snapshot = _Snapshot(state.time_s, z_um, profile.x_li, thickness_um, gap, drift)
        with self._snapshots_lock:
            if not self._snapshots:
                self._first_sample_s = state.time_s  # kept when the snapshot is forgotten
            self._snapshots.append(snapshot)
            self._snapshot_times.append(state.time_s)

    def _snapshot_at(self, time_s: float) -> _Snapshot:
        """The electrochemistry's snapshot at the latest sample time at or before ``time_s``."""
        self.electrochemistry.advance_to(max(time_s, self.electrochemistry.time_s))
        with self._snapshots_lock:
            i = bisect.bisect_right(self._snapshot_times, time_s) - 1
            if i < 0:
                raise ValueError(
                    f"time_s={time_s} is before the first sample the twin keeps "
                    f"({self._snapshot_times[0]} s; see CellTwin.forget_before)"
                )
            return self._snapshots[i]

    def forget_before(self, time_s: float) -> None:
        """Drop the snapshots that no query at or after ``time_s`` (s) needs.

        Scenes and fronts at ``time_s`` and later, and truths from ``time_s`` + 30 s on (the
        front speed looks 30 s back), stay exactly as they were; earlier times raise
        `ValueError`. The rehearsal calls it as maps are done with, so a long
        experiment's memory stays flat.

        Raises
        ------
        ValueError
            If ``time_s`` is not finite.
        """
        if not math.isfinite(time_s):
            raise ValueError(f"time_s={time_s} must be finite")
        # the snapshot serving time_s is the last one at or before it: keep it and the rest
        with self._snapshots_lock:
            first_kept = bisect.bisect_right(self._snapshot_times, time_s) - 1
            if first_kept > 0:
                del self._snapshots[:first_kept]
                del self._snapshot_times[:first_kept]

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

    def _index(self, time_s: float) -> _GrainIndex:
        """Index of the grains alive during the state grid interval holding ``time_s``."""
        refresh = self.config.state_refresh_s
        start_s = math.floor(time_s / refresh) * refresh
        table = self._grains.table()
        index = self._grain_index
        if index is None or index.source is not table or index.time_s != start_s:
            index = self._grain_index = _GrainIndex.build(table, start_s, refresh)
        return index

    # -- queries ----------------------------------------------------------------------------
    def grains(self) -> TruthGrains:
        """Full history of Li grains in diffraction condition drawn so far."""
        return self._grains.table()

    def sample_offset_um(self, x_um: np.ndarray | float) -> np.ndarray:
        """Offset (µm) of the sample along the beam, towards the detector, at ``x_um``."""
        return self.config.geometry.sample_offset_at_um(x_um)

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
            sample_offset_um=float(self.sample_offset_um(x_mid_um)),
        )

    def _spots(
        self, li_weight: float, x_start_um: float, x_stop_um: float, time_s: float
    ) -> tuple[LiSpot, ...]:
        if li_weight <= 0:
            return ()
        ids, fractions, table = self._overlapping(x_start_um, x_stop_um, time_s)
        fwhm = self.config.lithium.spot_fwhm_deg
        azimuths = table.select(ids).azimuth_at(time_s)
        weights = li_weight * fractions * table.intensity[ids]
        return tuple(
            LiSpot(int(table.grain_id[i]), float(chi), float(w), fwhm)
            for i, chi, w in zip(ids, azimuths, weights, strict=True)
        )

    def _overlapping(
        self, x_start_um: float, x_stop_um: float, time_s: float
    ) -> tuple[np.ndarray, np.ndarray, TruthGrains]:
        """Indices (into the index's table) of alive grains the beam touches, and overlaps."""
        index = self._index(time_s)
        g = self.config.geometry
        lo, hi = sorted((x_start_um, x_stop_um))
        reach = g.beam_size_x_um * (0.5 if g.beam_profile_x == "tophat" else 3.0)
        sl = index.candidates(lo - reach, hi + reach)
        t = index.table.select(np.arange(sl.start, sl.stop))
        centre = t.x_at(time_s)
        fraction = beam_x_fraction(centre - t.width_um / 2, centre + t.width_um / 2, lo, hi,
                                   g.beam_size_x_um, profile=g.beam_profile_x)  # fmt: skip
        keep = (fraction > 1e-9) & t.alive(time_s)
        ids = np.flatnonzero(keep) + sl.start
        return ids, fraction[keep], index.table

    def front_um(self, time_s: float) -> float:
        """z (µm) of the phase boundary (Li-rich share 0.5) at ``time_s``; NaN if none."""
        snapshot = self._snapshot_at(self._grid_time(time_s))
        profile = snapshot.profile()
        return phase_boundary_um(profile.z_um, profile.rich_fraction)

    def front_speed_nm_per_s(self, time_s: float) -> float:
        """dz/dt of the phase boundary (nm/s, negative moving down) at ``time_s``: the
        backward difference of the model's boundary over 30 s; NaN if either is undefined."""
        before = max(time_s - _FRONT_SPEED_DT_S, self._first_sample_s)
        if time_s - before < 1.0:
            return math.nan
        z1, z0 = self.front_um(time_s), self.front_um(before)
        return 1e3 * (z1 - z0) / (self._grid_time(time_s) - self._grid_time(before))

    def front_as_scanned(self, z_um: np.ndarray, row_time_s: np.ndarray) -> tuple[float, float]:
        """The phase boundary as a map scanned row by row sees it.

        Row ``i`` at height ``z_um[i]`` is measured at ``row_time_s[i]`` while the boundary
        moves, so the map shows it at the height z* where the boundary at that row's time
        crosses the row: z* = front(t(z*)), t(z) interpolated between rows. Bracketed first
        (the rows between which the boundary at each row's time passes from above the row to
        below it, or back), then solved by fixed point from there (the boundary moves ~0.05 µm
        per 5-s row, far below one row per row). The bracket matters when the boundary
        exists at some rows' times only: a front leaving the cathode at the Pt is seen by the
        bottom rows, scanned minutes before the map's mid time when it is gone.

        Parameters
        ----------
        z_um, row_time_s : (n_z,) arrays of float
            Row heights (µm, increasing) and their scan times (s).

        Returns
        -------
        (float, float)
            z* (µm) and its scan time t(z*) (s); NaN, NaN when the boundary crosses no row
            while it is scanned (none at the rows' times, or outside the rows).
        """
        z, t = np.asarray(z_um, dtype=float), np.asarray(row_time_s, dtype=float)
        above = np.array([self.front_um(float(ti)) for ti in t]) - z  # boundary − row height
        known = np.flatnonzero(np.isfinite(above))
        change = np.flatnonzero(np.sign(above[known[:-1]]) != np.sign(above[known[1:]]))
        if change.size == 0:
            return math.nan, math.nan
        i, j = known[change[0]], known[change[0] + 1]
        share = above[i] / (above[i] - above[j])
        time_s = float(t[i] + share * (t[j] - t[i]))
        for _ in range(8):
            front = self.front_um(time_s)
            if not math.isfinite(front) or not z[0] <= front <= z[-1]:
                return math.nan, math.nan
            time_s = float(np.interp(front, z, t))
        return float(self.front_um(time_s)), time_s

    def _grid_time(self, time_s: float) -> float:
        refresh = self.config.state_refresh_s
        return math.floor(time_s / refresh) * refresh

    def truth(
        self,
        *,
        z_um: np.ndarray,
        x_um: np.ndarray,
        time_s: float,
        previous_time_s: float | None = None,
    ) -> MapTruth:
        """Ground truth on map pixels: heights ``z_um`` (nz,), x centres ``x_um`` (nx,).

        Each pixel is the beam at that height travelling over the pixel's x spacing (uniform
        spacing required; a single column uses the beam width). ``previous_time_s`` (the
        previous map's time) gives the grains new since then and those gone.
        """
        z = np.asarray(z_um, float).ravel()
        x = np.asarray(x_um, float).ravel()
        dx = _pixel_um(x, self.config.geometry.beam_size_x_um)
        state = self._state_at(time_s)
        fields = state.map_fields(z, x)
        grains, visible = self._map_grains(x[0] - dx / 2, x[-1] + dx / 2, time_s)
        new, deceased = self._grain_changes(grains, visible, x, dx, time_s, previous_time_s)
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
            grain_azimuth_deg=grains.azimuth_at(time_s),
            grain_x_um=grains.x_at(time_s),
            grain_x_bin=grains.x_bin(x[0] - dx / 2, dx, time_s),
            grain_visible=visible,
            sample_offset_um=self.sample_offset_um(x),
            front_position_um=np.full(len(x), self.front_um(time_s)),
            front_speed_nm_per_s=self.front_speed_nm_per_s(time_s),
            grain_new=new,
            grains_deceased=deceased,
        )

    def _map_grains(
        self, lo_um: float, hi_um: float, time_s: float
    ) -> tuple[TruthGrains, np.ndarray]:
        """Grains alive at ``time_s`` over [lo, hi] and whether their spot is visible then."""
        ids, _, table = self._overlapping(lo_um, hi_um, time_s)
        grains = table.select(ids)
        azimuths = grains.azimuth_at(time_s)
        if self._visible is None:
            return grains, np.ones(len(grains), bool)
        return grains, np.array([bool(self._visible(float(a))) for a in azimuths], bool)

    def _grain_changes(
        self,
        grains: TruthGrains,
        visible: np.ndarray,
        x: np.ndarray,
        dx: float,
        time_s: float,
        previous_time_s: float | None,
    ) -> tuple[np.ndarray, int]:
        """Per current grain: visible now but not at ``previous_time_s``; and the count of
        grains visible then but not now (over the same x range)."""
        if previous_time_s is None:
            return np.ones(len(grains), bool) & visible, 0
        if not previous_time_s <= time_s:
            raise ValueError(f"previous_time_s={previous_time_s} must be <= time_s={time_s}")
        before, seen = self._map_grains(x[0] - dx / 2, x[-1] + dx / 2, previous_time_s)
        earlier = set(before.grain_id[seen].tolist())
        now = set(grains.grain_id[visible].tolist())
        new = np.array([visible[i] and g not in earlier for i, g in enumerate(grains.grain_id)])
        return new.astype(bool), len(earlier - now)


def _pixel_um(x_um: np.ndarray, beam_um: float) -> float:
    if x_um.size == 0:
        raise ValueError("x_um must hold at least one pixel centre")
    if x_um.size == 1:
        return beam_um
    steps = np.diff(x_um)
    if not (steps > 0).all() or np.ptp(steps) > 1e-6 * steps.mean():
        raise ValueError("x_um must be increasing with a uniform spacing")
    return float(steps.mean())
