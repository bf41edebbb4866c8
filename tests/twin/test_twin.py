import math

import numpy as np
import pytest

from opmap.devices import SafetyWindow, paper_protocol
from opmap.twin import CellTwin, TwinConfig, beam_x_fraction

MAP_X_UM = 191.5 + 33.0 * (np.arange(49) + 0.5)  # 49 pixels of 33 µm, centred on the cell


def paper_twin(seed: int = 0) -> CellTwin:
    twin = CellTwin(TwinConfig(seed=seed))
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    return twin


@pytest.fixture(scope="module")
def history():
    """Grains in the mapped region every 5 min of the paper protocol (seed 0)."""
    twin = paper_twin(0)
    times_s = np.arange(300.0, 4.0 * 3600, 300.0)
    labels = []
    for t in times_s:
        twin.advance_to(t)
        labels.append(twin.electrochemistry.state.step_label)
    table = twin.grains()
    in_map = (table.x_um > MAP_X_UM[0] - 16.5) & (table.x_um < MAP_X_UM[-1] + 16.5)
    seen = np.array([(table.alive(t) & in_map).sum() for t in times_s])
    new = np.array([(table.alive(t) & ~table.alive(t - 300) & in_map).sum() for t in times_s])
    return times_s, np.array(labels), seen, new, table


def test_grain_counts_follow_the_paper(history):
    times_s, labels, seen, _, _ = history
    early = (times_s >= 1800) & (times_s <= 3000)
    end_of_charge = (labels == "charge") & (times_s >= 7200)
    later = times_s >= 3.5 * 3600
    assert 70 <= seen[early].mean() <= 120  # paper: rises to ~90
    assert 60 <= seen[end_of_charge].mean() <= 110  # paper: ~80
    assert 20 <= seen[later].mean() <= 60  # paper: ~40 in discharge and rest
    assert seen[early].mean() > seen[later].mean() + 25


def test_new_grains_per_map_are_many_and_a_large_share(history):
    times_s, _, seen, new, _ = history
    charge = (times_s >= 600) & (times_s <= 3000)
    assert 15 <= new[charge].mean() <= 35  # paper: 10-30 per map
    assert new[charge].sum() / seen[charge].sum() > 0.2
    assert new[times_s > 3000].mean() >= 5


def test_lifetime_classes_all_occur(history):
    *_, table = history
    lifetime_s = table.death_s - table.birth_s
    assert (lifetime_s < 300).mean() > 0.3  # ephemeral: one map or less
    assert (lifetime_s > 3600).sum() >= 20  # stable: most of the plating


def near(azimuth_deg: np.ndarray, centres_deg, tol_deg: float = 10.0) -> np.ndarray:
    d = (azimuth_deg[:, None] - np.asarray(centres_deg)[None, :] + 180.0) % 360.0 - 180.0
    return (np.abs(d) <= tol_deg).any(axis=1)


def test_burgers_clustering_early_then_spreading(history):
    *_, table = history
    burgers = (0, 60, 120, 180, 240, 300)
    late = (30, 90, 150, 210, 270, 330)
    early = table.birth_s < 20 * 60  # well under 0.8 mAh/cm² of Li
    after = table.birth_s > 90 * 60
    assert near(table.azimuth_deg[early], burgers).mean() > 0.9
    assert near(table.azimuth_deg[early], late).mean() < 0.05
    assert 0.3 < near(table.azimuth_deg[after], late).mean() < 0.7


def test_same_seed_same_history_whatever_the_query_pattern():
    a, b = paper_twin(5), paper_twin(5)
    a.advance_to(1800.0)
    for t in np.linspace(7.3, 1800.0, 41):
        b.advance_to(float(t))
    for name, column in a.grains().to_dict().items():
        np.testing.assert_array_equal(column, b.grains().to_dict()[name], err_msg=name)
    c = paper_twin(6)
    c.advance_to(1800.0)
    assert not np.array_equal(c.grains().x_um[:10], a.grains().x_um[:10])


def test_time_only_moves_forward():
    twin = paper_twin()
    twin.advance_to(100.0)
    with pytest.raises(ValueError, match="time_s"):
        twin.advance_to(50.0)


def test_ti_and_li_follow_the_electrochemistry():
    twin = paper_twin()
    twin.advance_to(2700.0)
    h_um = twin.electrochemistry.plated_li_thickness_um()
    truth = twin.truth(z_um=np.array([10.0]), x_um=MAP_X_UM, time_s=2700.0)
    np.testing.assert_allclose(truth.li_thickness_um, h_um)
    np.testing.assert_allclose(truth.ti_centre_um, 24.0 + h_um + 0.25)
    scene = twin.scene(z_um=24.0 + h_um / 2, x_start_um=500, x_stop_um=533, time_s=2700.0)
    # the Gaussian beam (1 µm FWHM) in the middle of the Li layer: its tails reach LiPON
    # and Ti, the rest is Li (erf of half the thickness over sigma * sqrt 2)
    sigma_um = 1.0 / 2.3548
    expected = math.erf(h_um / 2 / (sigma_um * math.sqrt(2)))
    assert scene.layer_weights["li"] == pytest.approx(expected, rel=1e-6)
    assert sum(scene.layer_weights.values()) == pytest.approx(1.0)


def test_lco_phase_weights_sum_to_the_cathode_weight():
    twin = paper_twin()
    twin.advance_to(1500.0)  # biphasic front inside the cathode
    for z_um in (0.3, 5.0, 15.2, 19.8, 20.0):
        scene = twin.scene(z_um=z_um, x_start_um=800, x_stop_um=833, time_s=1500.0)
        total = sum(p.weight for p in scene.lco_phases)
        assert total == pytest.approx(scene.layer_weights["lco"], rel=1e-9)
    top = twin.scene(z_um=19.5, x_start_um=800, x_stop_um=833, time_s=1500.0)
    bottom = twin.scene(z_um=0.5, x_start_um=800, x_stop_um=833, time_s=1500.0)
    perp = {p.family for p in top.lco_phases}
    assert perp == {"perp", "par"}
    # the front comes down from the electrolyte: the top is more delithiated (larger c)
    c_top = max(p.c_angstrom for p in top.lco_phases if p.family == "perp")
    c_bottom = max(p.c_angstrom for p in bottom.lco_phases if p.family == "perp")
    assert c_top > c_bottom + 0.05


def test_truth_matches_what_scene_renders():
    twin = paper_twin(2)
    t = 2400.0
    twin.advance_to(t)
    z_um = np.arange(0.5, 33.0, 1.0)
    truth = twin.truth(z_um=z_um, x_um=MAP_X_UM, time_s=t)
    li_mid = 24.0 + truth.li_thickness_um[0] / 2
    rendered: set[int] = set()
    for x in MAP_X_UM:
        scene = twin.scene(z_um=li_mid, x_start_um=x - 16.5, x_stop_um=x + 16.5, time_s=t)
        rendered |= {s.grain_id for s in scene.li_spots}
    assert rendered == set(truth.grain_id.tolist())
    assert len(rendered) > 20
    for iz in (3, 12, 19):
        for ix in (0, 24, 48):
            x = MAP_X_UM[ix]
            scene = twin.scene(z_um=z_um[iz], x_start_um=x, x_stop_um=x, time_s=t)
            for family in ("perp", "par"):
                phases = [p for p in scene.lco_phases if p.family == family]
                w = sum(p.weight for p in phases)
                c = sum(p.weight * p.c_angstrom for p in phases) / w
                assert truth.c_angstrom[family][iz, ix] == pytest.approx(c, abs=1e-9)
    above = z_um > 20 + twin.geometry.beam_half_extent_um()  # the beam misses the cathode
    assert np.isnan(truth.c_angstrom["perp"][above]).all()
    assert np.isnan(truth.x_li[above]).all()
    assert np.nanmax(truth.x_li) <= 1.0
    flat = truth.to_dict()
    assert flat["perp_c_angstrom"].shape == (len(z_um), len(MAP_X_UM))
    assert flat["grain_id"].shape == truth.grain_id.shape


def test_beam_x_fraction_is_one_inside_and_linear_in_overlap():
    lo, hi = np.array([-100.0, 10.0, 0.0]), np.array([100.0, 20.0, 0.5])
    f = beam_x_fraction(lo, hi, 0.0, 33.0, 1.0)
    assert f[0] == pytest.approx(1.0)
    assert f[1] == pytest.approx(10.0 / 33.0)  # fully crossed: its width over the travel
    # half-grain at the start edge: integral of the ramp gives (0.5)²/2... over w T
    assert 0 < f[2] < 0.5 / 33.0


def test_scene_at_mid_exposure_after_the_potentiostat_ran_ahead():
    # The potentiostat advances the shared electrochemistry to the clock's time; a frame is
    # rendered at its mid-exposure time, slightly earlier. The twin must not step back.
    twin = paper_twin()
    twin.advance_to(100.0)
    twin.electrochemistry.advance_to(105.0)
    scene = twin.scene(z_um=10.0, x_start_um=500.0, x_stop_um=533.0, time_s=104.9)
    assert scene.time_s == 104.9
    assert scene.layer_weights["lco"] == pytest.approx(1.0)
    twin.scene(z_um=10.0, x_start_um=500.0, x_stop_um=533.0, time_s=107.0)
    assert twin.electrochemistry.time_s >= 107.0


def test_samples_have_no_gap_when_the_detector_drives_the_electrochemistry_ahead():
    # The Eiger's frames advance the shared model; the potentiostat's buffer must still hold
    # one exact sample per second of experiment time.
    twin = paper_twin()
    sampled: list[float] = []
    twin.electrochemistry.add_observer(lambda state: sampled.append(state.time_s))
    for t_s in (0.025, 0.4, 2.6, 7.0, 7.05):
        twin.scene(z_um=10.0, x_start_um=500.0, x_stop_um=533.0, time_s=t_s)
    twin.electrochemistry.advance_to(3.0)  # a driver that is behind never steps back
    assert sampled == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])


def test_what_the_twin_shows_at_a_time_does_not_depend_on_who_advanced_it_first():
    # Frames ask for their mid-exposure time after the potentiostat (or nobody) has driven
    # the shared electrochemistry ahead: the scene, the truth and the grains must be the same.
    times = (130.4, 131.0, 250.7, 2000.2)
    scene_args = {"z_um": 19.0, "x_start_um": 500.0, "x_stop_um": 533.0}
    in_order, ran_ahead = paper_twin(3), paper_twin(3)
    for t_s in times:
        ran_ahead.electrochemistry.advance_to(t_s + 37.0)  # the potentiostat, ahead
        a = in_order.scene(**scene_args, time_s=t_s)
        b = ran_ahead.scene(**scene_args, time_s=t_s)
        assert a == b
    z, x = np.array([5.0, 19.0, 25.0]), MAP_X_UM
    truth_a = in_order.truth(z_um=z, x_um=x, time_s=2000.0)
    truth_b = ran_ahead.truth(z_um=z, x_um=x, time_s=2000.0)
    for field in ("x_li", "rich_fraction", "li_thickness_um", "grain_id"):
        np.testing.assert_array_equal(getattr(truth_a, field), getattr(truth_b, field))
    for name, column in in_order.grains().to_dict().items():
        np.testing.assert_array_equal(column, ran_ahead.grains().to_dict()[name], err_msg=name)


def test_forgetting_old_snapshots_changes_nothing_at_or_after_the_kept_time():
    # A day-long rehearsal drops the snapshots no later map needs: what the twin shows from
    # the kept time on must be exactly what a twin that forgot nothing shows.
    z, x = np.array([5.0, 12.0, 19.0]), np.array([500.0, 533.0, 566.0])
    scene_args = {"z_um": 12.0, "x_start_um": 500.0, "x_stop_um": 533.0}
    forgetful, complete = paper_twin(5), paper_twin(5)
    for twin in (forgetful, complete):
        twin.scene(**scene_args, time_s=3000.0)
    forgetful.forget_before(2500.0)
    for t_s in (2530.0, 2600.4, 3000.0, 4100.7):  # a truth's front speed looks back 30 s
        assert forgetful.scene(**scene_args, time_s=t_s) == complete.scene(
            **scene_args, time_s=t_s
        )
        kept, full = (
            forgetful.truth(z_um=z, x_um=x, time_s=t_s),
            complete.truth(z_um=z, x_um=x, time_s=t_s),
        )
        np.testing.assert_array_equal(kept.c_angstrom["perp"], full.c_angstrom["perp"])
        assert kept.front_speed_nm_per_s == full.front_speed_nm_per_s or (
            np.isnan(kept.front_speed_nm_per_s) and np.isnan(full.front_speed_nm_per_s)
        )
    assert forgetful.scene(**scene_args, time_s=2500.0) == complete.scene(
        **scene_args, time_s=2500.0
    )
    with pytest.raises(ValueError, match=r"time_s=2400.0 is before the first sample"):
        forgetful.scene(**scene_args, time_s=2400.0)
    with pytest.raises(ValueError, match="time_s=nan must be finite"):
        forgetful.forget_before(float("nan"))


def test_the_front_as_scanned_is_where_the_boundary_crossed_the_row_being_measured():
    """Rows scanned bottom-up over 4 min while the boundary moves down: the map shows the
    boundary where, at that row's scan time, it crossed that row — above where it is at
    mid-map (its rows were scanned earlier), by about the speed × the time offset."""
    twin = paper_twin()
    twin.advance_to(1000.0)
    z_um = np.arange(-2.0, 47.0)
    row_time_s = 700.0 + 240.0 * (np.arange(z_um.size) + 0.5) / z_um.size
    front_um, time_s = twin.front_as_scanned(z_um, row_time_s)
    assert front_um == pytest.approx(twin.front_um(time_s), abs=1e-9)
    assert time_s == pytest.approx(np.interp(front_um, z_um, row_time_s), abs=0.2)
    mid_s = float(np.mean(row_time_s))
    speed_um_per_s = 1e-3 * twin.front_speed_nm_per_s(mid_s)
    assert speed_um_per_s < 0  # charge: the boundary moves down
    expected_um = twin.front_um(mid_s) + speed_um_per_s * (time_s - mid_s)
    assert front_um == pytest.approx(expected_um, abs=0.15)
    assert front_um > twin.front_um(mid_s) + 0.2  # rows below mid-map are scanned early
    assert all(map(math.isnan, twin.front_as_scanned(z_um[:5], row_time_s[:5])))


def test_a_front_leaving_the_cathode_is_seen_by_the_rows_scanned_before_it_left():
    """A 4-min map from 1800 s: the boundary reaches the Pt (z = 0) at ~1850 s, before the
    map's mid time (1920 s), but the bottom rows were scanned at ~1810 s while it was still
    ~1.6 µm above the Pt. The truth is that crossing, not NaN for the mid time."""
    twin = paper_twin()
    twin.advance_to(2100.0)
    z_um = np.arange(-2.0, 47.0)
    row_time_s = 1800.0 + 240.0 * (np.arange(z_um.size) + 0.5) / z_um.size
    assert math.isnan(twin.front_um(float(np.mean(row_time_s))))  # gone at mid-map
    front_um, time_s = twin.front_as_scanned(z_um, row_time_s)
    assert 0.0 < front_um < 3.0
    assert front_um == pytest.approx(twin.front_um(time_s), abs=1e-9)
    row = np.searchsorted(z_um, front_um)
    assert row_time_s[row - 1] <= time_s <= row_time_s[row]  # the rows around it, then
