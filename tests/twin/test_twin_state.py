"""The twin's state against known answers: rotating and drifting grains, the out-of-equilibrium
Li-poor phase, the phase boundary and its kinematics, the pristine cell, the parallax offset,
and the Gaussian beam footprint."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from opmap.devices import SafetyWindow, paper_protocol
from opmap.twin import CellTwin, TwinConfig, beam_x_fraction

MAP_X_UM = 191.5 + 33.0 * (np.arange(49) + 0.5)
MAP_Z_UM = np.arange(0.0, 49.0)


@pytest.fixture(scope="module")
def charged_twin():
    """The paper's protocol run to 4000 s (biphasic stage ~100-1800 s)."""
    twin = CellTwin(TwinConfig())
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    twin.advance_to(4000.0)
    return twin


def test_grain_azimuth_at_t_follows_its_rotation_rate(charged_twin):
    t = 3900.0
    truth = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=t)
    table = charged_twin.grains()
    rows = np.searchsorted(table.grain_id, truth.grain_id)
    assert len(rows) > 20
    rate = table.rotation_deg_per_s[rows]
    age = t - table.birth_s[rows]
    expected = (table.azimuth_deg[rows] + rate * age) % 360.0
    np.testing.assert_allclose(truth.grain_azimuth_deg, expected, atol=1e-9)
    moved = np.abs((truth.grain_azimuth_deg - table.azimuth_deg[rows] + 180) % 360 - 180)
    assert moved.max() > 1.0  # grains do rotate within the minutes they live
    np.testing.assert_allclose(
        truth.grain_x_um, table.x_um[rows] + table.drift_um_per_s[rows] * age
    )
    # rates drawn with the configured spread (0.5 °/min, 0.3 µm/min)
    assert np.std(table.rotation_deg_per_s) * 60 == pytest.approx(0.5, rel=0.15)
    assert np.std(table.drift_um_per_s) * 60 == pytest.approx(0.3, rel=0.15)


def test_scene_draws_each_grain_at_its_rotated_azimuth(charged_twin):
    t = 3900.0
    truth = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=t)
    li_mid = 24.0 + 0.5 * float(truth.li_thickness_um[0])
    azimuths = dict(zip(truth.grain_id.tolist(), truth.grain_azimuth_deg.tolist(), strict=True))
    seen = 0
    for x in MAP_X_UM:
        scene = charged_twin.scene(z_um=li_mid, x_start_um=x - 16.5, x_stop_um=x + 16.5, time_s=t)
        for spot in scene.li_spots:
            assert spot.azimuth_deg == pytest.approx(azimuths[spot.grain_id], abs=1e-9)
            seen += 1
    assert seen > 20


def test_new_and_deceased_grains_between_two_maps(charged_twin):
    before, now = 3600.0, 3900.0
    truth = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=now, previous_time_s=before)
    earlier = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=before)
    then = set(earlier.grain_id[earlier.grain_visible].tolist())
    current = set(truth.grain_id[truth.grain_visible].tolist())
    assert set(truth.grain_id[truth.grain_new].tolist()) == current - then
    assert truth.grains_deceased == len(then - current)
    assert 0 < truth.grain_new.sum() < len(current)
    with pytest.raises(ValueError, match="previous_time_s"):
        charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=before, previous_time_s=now)


def test_li_poor_phase_c_drifts_up_during_the_biphasic_stage(charged_twin):
    """Out of equilibrium (paper Fig. 2f): LCO⊥'s Li-poor c starts below 14.13 Å and
    reaches it as the front crosses the cathode; pure Li-poor regions are not 14.13 Å."""

    def poor_c(t: float) -> float:
        z_um = charged_twin.front_um(t)  # the two-phase mixture at the boundary
        scene = charged_twin.scene(z_um=z_um, x_start_um=500, x_stop_um=533, time_s=t)
        poor = [p for p in scene.lco_phases if p.family == "perp" and p.c_angstrom > 14.05]
        return max(poor, key=lambda p: p.weight).c_angstrom

    early, late = poor_c(500.0), poor_c(1700.0)
    assert 14.10 < early < 14.12
    assert late == pytest.approx(14.13, abs=0.005)
    assert late - early > 0.01


def test_front_truth_is_the_li_field_boundary_and_its_speed_the_kinematics(charged_twin):
    times = np.arange(400.0, 1601.0, 300.0)
    fronts = np.array([charged_twin.front_um(t) for t in times])
    speeds = np.array([charged_twin.front_speed_nm_per_s(t) for t in times])
    assert np.all(np.diff(fronts) < 0)  # moving down from the electrolyte
    # the paper's ~10 nm/s, and the kinematic speed is the boundary's own motion
    assert np.mean(speeds) == pytest.approx(-10.0, rel=0.15)
    mean_motion = 1e3 * (fronts[-1] - fronts[0]) / (times[-1] - times[0])
    assert np.mean(speeds) == pytest.approx(mean_motion, rel=0.05)
    truth = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=1300.0)
    np.testing.assert_allclose(truth.front_position_um, charged_twin.front_um(1300.0))
    # the per-pixel Li-rich share of the truth crosses one half at the front
    column = truth.rich_fraction[:, 0]
    below = truth.front_position_um[0] - 1.5 > MAP_Z_UM
    above = (truth.front_position_um[0] + 1.5 < MAP_Z_UM) & (MAP_Z_UM < 19)
    assert (column[below] > 0.5).all() and (column[above] < 0.5).all()
    assert math.isnan(charged_twin.front_um(3000.0))  # solid solution: no boundary


def test_cell_is_pristine_before_the_protocol_starts():
    twin = CellTwin(TwinConfig())
    twin.advance_to(600.0)
    truth = twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=600.0)
    cathode = MAP_Z_UM < 19
    np.testing.assert_allclose(truth.c_angstrom["perp"][cathode], 14.0, atol=1e-9)
    np.testing.assert_allclose(truth.x_li[cathode], 1.0)
    assert np.isnan(truth.front_position_um).all()
    assert truth.li_thickness_um.max() == 0.0 and len(truth.grain_id) == 0
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    twin.advance_to(600.0 + 1300.0)
    assert 5.0 < twin.front_um(1900.0) < 15.0  # the protocol runs from its own start


def test_scene_carries_the_sample_offset_of_its_column(charged_twin):
    scene = charged_twin.scene(z_um=10.0, x_start_um=1000.0, x_stop_um=1033.0, time_s=3900.0)
    expected = 60.0 + 1016.5 * math.tan(math.radians(0.5))
    assert scene.sample_offset_um == pytest.approx(expected)
    truth = charged_twin.truth(z_um=MAP_Z_UM, x_um=MAP_X_UM, time_s=3900.0)
    np.testing.assert_allclose(
        truth.sample_offset_um, 60.0 + MAP_X_UM * math.tan(math.radians(0.5))
    )


@pytest.mark.parametrize("x_start, x_stop", [(0.0, 33.0), (5.0, 5.0), (-2.0, 1.0)])
def test_gaussian_beam_x_fraction_matches_numerical_integration(x_start, x_stop):
    lo, hi, fwhm = np.array([-0.4, 3.0]), np.array([0.9, 30.0]), 1.0
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    got = beam_x_fraction(lo, hi, x_start, x_stop, fwhm, profile="gaussian")
    for i in range(2):

        def inside(u, i=i):
            return norm.cdf((hi[i] - u) / sigma) - norm.cdf((lo[i] - u) / sigma)

        if x_stop == x_start:
            expected = inside(x_start)
        else:
            expected = quad(inside, x_start, x_stop, points=[lo[i], hi[i]])[0] / (x_stop - x_start)
        assert got[i] == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ValueError, match="profile"):
        beam_x_fraction(lo, hi, 0.0, 1.0, 1.0, profile="lorentzian")
