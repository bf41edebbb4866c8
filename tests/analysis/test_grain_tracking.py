"""Rotating, drifting grains: exact tracks and new/deceased counts; the k × link sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.analysis.grains import (
    GrainTable,
    LinkTolerances,
    find_grains_for_thresholds,
    find_grains_in_maps,
    grain_counts,
    grain_sensitivity,
    link_grains,
)

N_Z, N_X, N_CHI, N_Q = 10, 6, 360, 10
Z_UM = np.arange(N_Z) * 1.0 + 24.5
X_UM = np.arange(N_X) * 33.0
MAP_MIN = 5.0  # the paper's ~5 min per map
TIMES_S = np.arange(5) * MAP_MIN * 60.0


def _window(rng: np.random.Generator) -> np.ndarray:
    level = 40.0 + 5.0 * np.arange(N_Q)
    return rng.poisson(level, (N_Z, N_X, N_CHI, N_Q)).astype(np.float32)


def _plant(w, rows, x, chi_deg, height=2000.0):
    chis = np.arange(round(chi_deg) - 1, round(chi_deg) + 2) % N_CHI
    for zi in rows:
        w[zi, x, chis, 3:7] += height


# (first map, last map, rows, column, azimuth in map `first`, rotation deg per map)
GRAINS = [
    (0, 4, (2, 3, 4), 1, 40.0, +4.0),  # rotates 0.8 deg/min, seen in every map
    (0, 2, (5, 6), 3, 200.0, -7.0),  # rotates -1.4 deg/min, dies after map 2
    (1, 4, (1, 2), 5, 300.0, +6.0),  # new in map 1
    (0, 4, (5, 6), 2, 100.0, +7.0),  # A and B, one above the other in one column, pass
    (0, 4, (8, 9), 2, 110.0, +3.0),  # each other: 100/110, 107/113, 114/116, 121/119, 128/122
    (3, 3, (0,), 0, 150.0, 0.0),  # ephemeral, map 3 only
]


def _maps(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = []
    for m in range(TIMES_S.size):
        w = _window(rng)
        for first, last, rows, x, chi0, rate in GRAINS:
            if first <= m <= last:
                _plant(w, rows, x, chi0 + rate * (m - first))
        maps.append(w)
    return maps


def _expected_tracks() -> list[list[int]]:
    """Per map, the grain numbers (GRAINS index) present, i.e. the true identities."""
    return [[g for g, (f, last, *_) in enumerate(GRAINS) if f <= m <= last] for m in range(5)]


def test_rotating_grains_keep_their_identity_and_counts_are_exact():
    table = find_grains_in_maps(_maps(0), z_um=Z_UM, x_um=X_UM)
    linked = link_grains(table, time_s=TIMES_S, rotation_deg_per_min=2.0)
    # every true grain is one track, every track one true grain
    truth = {}
    for m, present in enumerate(_expected_tracks()):
        rows = linked.rows(m)
        assert rows["track_id"].size == len(present)
        for g in present:
            first, _, _rows, x, chi0, rate = GRAINS[g]
            chi = (chi0 + rate * (m - first)) % 360
            d = np.abs((rows["azimuth_deg"] - chi + 180) % 360 - 180)
            hit = np.flatnonzero((d < 1.0) & (rows["x_um"] == X_UM[x]))
            assert hit.size == 1, (m, g)
            truth.setdefault(g, set()).add(int(rows["track_id"][hit[0]]))
    assert all(len(ids) == 1 for ids in truth.values())
    assert len({next(iter(ids)) for ids in truth.values()}) == len(GRAINS)
    counts = grain_counts(linked, n_maps=5)
    assert counts.total.tolist() == [4, 5, 5, 5, 4]
    assert counts.new.tolist() == [4, 1, 0, 1, 0]
    assert counts.deceased.tolist() == [0, 0, 0, 1, 1]


def test_a_fixed_one_degree_tolerance_breaks_the_rotating_tracks():
    table = find_grains_in_maps(_maps(1), z_um=Z_UM, x_um=X_UM)
    fixed = grain_counts(link_grains(table, time_s=TIMES_S, rotation_deg_per_min=0.0), n_maps=5)
    # only the ephemeral grain (new in map 3) is right; every rotating grain is "new" each map
    assert fixed.new.tolist() == [4, 5, 5, 5, 4]


def test_one_to_one_assignment_not_first_come():
    """Two grains in one pixel, 10° apart, pass close to each other: A (100° → 107°) and
    B (110° → 113°). B is nearer to 107° than A is, so a first-come or nearest-first link
    gives A's successor to B; the assignment keeps both."""
    prev = _table(map_index=0, azimuth=[100.0, 110.0])
    cur = _table(map_index=1, azimuth=[107.0, 113.0])
    joined = GrainTable(**{k: np.concatenate([prev[k], cur[k]]) for k in prev})
    linked = link_grains(joined, time_s=TIMES_S[:2], rotation_deg_per_min=2.0)
    assert linked.track_id.tolist() == [0, 1, 0, 1]


def _table(map_index: int, azimuth: list[float]) -> dict[str, np.ndarray]:
    n = len(azimuth)
    cols = {name: np.zeros(n) for name in GrainTable.__dataclass_fields__}
    cols.update(
        map_index=np.full(n, map_index), label=np.arange(1, n + 1), track_id=np.full(n, -1),
        azimuth_deg=np.asarray(azimuth), z_um=np.full(n, 30.0), x_um=np.full(n, 66.0),
    )  # fmt: skip
    return cols


def test_drift_tolerance_grows_with_the_time_between_maps():
    prev = _table(0, [50.0])
    cur = _table(1, [50.0])
    cur["x_um"] = cur["x_um"] + 20.0  # 20 µm in one map interval
    joined = GrainTable(**{k: np.concatenate([prev[k], cur[k]]) for k in prev})
    slow = link_grains(joined, time_s=np.array([0.0, 60.0]))  # 1 min: 16.5 + 2 µm
    fast = link_grains(joined, time_s=np.array([0.0, 300.0]))  # 5 min: 16.5 + 10 µm
    assert slow.track_id.tolist() == [0, 1] and fast.track_id.tolist() == [0, 0]
    with pytest.raises(ValueError, match="time_s must increase"):
        link_grains(joined, time_s=np.array([10.0, 0.0]))
    with pytest.raises(ValueError, match="rotation_deg_per_min"):
        link_grains(joined, rotation_deg_per_min=-1.0)


def test_sensitivity_table_shape_and_monotone_in_k():
    rng = np.random.default_rng(4)
    ks = (6.0, 8.0, 10.0, 12.0, 15.0)
    by_k: dict[float, list[dict[str, np.ndarray]]] = {k: [] for k in ks}
    window_mean = float(np.mean(40.0 + 5.0 * np.arange(N_Q)))
    for m in range(3):
        w = _window(rng)
        # spots whose net intensity sits between consecutive thresholds: 7, 9, 11, 13, 20 ×
        for i, factor in enumerate((7.0, 9.0, 11.0, 13.0, 20.0)):
            _plant(w, (i,), i % N_X, 30.0 + 60 * i + 2 * m, height=factor * window_mean)
        for k, t in find_grains_for_thresholds(w, ks, z_um=Z_UM, x_um=X_UM, map_index=m).items():
            by_k[k].append(t.to_dict())
    tables = {k: GrainTable(**{c: np.concatenate([p[c] for p in parts]) for c in parts[0]})
              for k, parts in by_k.items()}  # fmt: skip
    table = grain_sensitivity(tables, n_maps=3, time_s=TIMES_S[:3], link_scales=(0.5, 1.0, 2.0))
    n_rows = len(ks) * 3 * 3
    assert set(table) >= {"k", "link_scale", "map_index", "total", "new", "deceased"}
    assert all(v.shape == (n_rows,) for v in table.values())
    total = table["total"].reshape(len(ks), 3, 3)
    assert total[:, 1, 0].tolist() == [5, 4, 3, 2, 1]  # one spot fewer per threshold step
    assert np.all(np.diff(total, axis=0) <= 0)
    # 2° per map of rotation is inside the tolerance at every scale (0.5: 0.5° + 0.5°/min ×
    # 5 min = 3°), so every grain keeps its track: no new grain after map 0
    new = table["new"].reshape(len(ks), 3, 3)
    assert np.all(new[:, :, 1:] == 0)
    assert table["rotation_deg_per_min"].reshape(len(ks), 3, 3)[0, :, 0].tolist() == [
        0.5,
        1.0,
        2.0,
    ]
    assert LinkTolerances().scaled(0.5).tol_x_um == pytest.approx(8.25)
    # the bound on a grain's move is scaled with the rest and stored
    assert table["max_move_um"].reshape(len(ks), 3, 3)[0, :, 0].tolist() == [2.5, 5.0, 10.0]


# Maps 5 min apart, then 30 min apart (the rehearsal's cadence late in the protocol).
GAP_TIMES_S = np.array([0.0, 300.0, 600.0, 2400.0, 4200.0])
# (first map, last map, x in map `first` (µm), drift (µm/min), azimuth in map `first` (deg),
#  rotation (deg/min))
# Grains are numbered from 0 in the comments.
GAP_GRAINS = [
    (0, 4, 66.0, +0.1, 40.0, +0.8),  # survivor: 4° per 5 min, 24° per 30 min
    (0, 4, 200.0, -0.1, 250.0, -0.5),  # survivor turning the other way
    (0, 2, 100.0, 0.0, 60.0, 0.0),  # dies after map 2 ...
    (3, 4, 133.0, 0.0, 75.0, +0.2),  # ... a new grain in the next column, 15° away
    (1, 3, 300.0, +0.2, 180.0, +1.0),  # born in a 5-min gap, dies in a 30-min gap
    (3, 3, 300.0, 0.0, 270.0, 0.0),  # born in the same column as it died, 90° away
]


def _gap_table() -> GrainTable:
    rows = {name: [] for name in GrainTable.__dataclass_fields__}
    for m, t_s in enumerate(GAP_TIMES_S):
        for g, (first, last, x0, drift, chi0, rate) in enumerate(GAP_GRAINS):
            if first <= m <= last:
                minutes = (t_s - GAP_TIMES_S[first]) / 60.0
                values = dict.fromkeys(GrainTable.__dataclass_fields__, 0.0)
                values.update(
                    map_index=m, label=g + 1, track_id=-1, z_um=27.0,
                    x_um=x0 + drift * minutes, azimuth_deg=(chi0 + rate * minutes) % 360,
                )  # fmt: skip
                for name, value in values.items():
                    rows[name].append(value)
    return GrainTable(**{name: np.asarray(v) for name, v in rows.items()})


def test_grains_across_5_and_30_min_gaps_rotate_drift_are_born_and_die_as_planted():
    table = _gap_table()
    linked = link_grains(table, time_s=GAP_TIMES_S)
    counts = grain_counts(linked, n_maps=5)
    assert counts.total.tolist() == [3, 4, 4, 5, 3]
    assert counts.new.tolist() == [3, 1, 0, 2, 0]  # grain 4 in map 1; grains 3 and 5 in map 3
    assert counts.deceased.tolist() == [0, 0, 0, 1, 2]  # grain 2 by map 3; grains 4, 5 by 4
    # the survivors keep one track through both 30-min gaps (24° and 15° of rotation)
    ids = {int(lab): set(linked.track_id[linked.label == lab].tolist()) for lab in (1, 2)}
    assert all(len(v) == 1 for v in ids.values())
    # an unbounded drift (2 µm/min: 60 µm in 30 min) links the dying grain to the new one
    # in the next column: the over-linking of long gaps
    unbounded = grain_counts(link_grains(table, time_s=GAP_TIMES_S, max_move_um=np.inf), n_maps=5)
    assert unbounded.new.tolist() == [3, 1, 0, 1, 0]
    assert unbounded.deceased.tolist() == [0, 0, 0, 0, 2]
    with pytest.raises(ValueError, match="max_move_um"):
        link_grains(table, time_s=GAP_TIMES_S, max_move_um=-1.0)
