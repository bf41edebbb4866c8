"""The paper's protocol on the twin: charge shape, biphasic front, insulating surface layer."""

import numpy as np
import pytest

from opmap.devices import SafetyWindow, Technique, paper_protocol
from opmap.twin.electrochem import CellElectrochemistry, ElectrochemConfig

MAH_PER_CM2_TO_C = 3.6
CHARGE_S = 2.3 * 3600


class Run:
    """The paper protocol advanced like a rehearsal: many small increments."""

    def __init__(self, config: ElectrochemConfig, *, dt_s: float = 0.25, stop_s: float = 6 * 3600):
        self.config = config
        self.model = CellElectrochemistry(config)
        self.model.start_protocol(paper_protocol(), SafetyWindow())
        self.rows = []  # (time_s, potential_v, current_a, charge_c, step_index)
        self.profiles = {}
        self.step_end_profiles = {}
        self.step_last_states = {}
        last_step = 0
        previous = self.model.state
        n = 0
        while not self.model.state.protocol_done and n * dt_s < stop_s:
            n += 1
            self.model.advance_to(n * dt_s)
            s = self.model.state
            if s.step_index != last_step:
                self.step_end_profiles[last_step] = self.model.profile()
                self.step_last_states[last_step] = previous
                last_step = s.step_index
            previous = s
            if n % int(30 / dt_s) == 0:
                self.rows.append((s.time_s, s.potential_v, s.current_a, s.charge_c, s.step_index))
                self.profiles[round(s.time_s)] = self.model.profile()
        self.calls = n
        self.table = np.array(self.rows)

    def at(self, time_s: float) -> np.ndarray:
        return self.table[np.argmin(abs(self.table[:, 0] - time_s))]

    def areal_mah(self, charge_c: float) -> float:
        return charge_c / self.config.area_cm2 / MAH_PER_CM2_TO_C


@pytest.fixture(scope="module")
def paper_run() -> Run:
    return Run(ElectrochemConfig())


def top_layer(profile, depth_um: float) -> np.ndarray:
    return profile.rich_fraction[
        profile.z_um > profile.z_um[-1] + 0.5 * (profile.z_um[1] - profile.z_um[0]) - depth_um
    ]


def test_whole_protocol_runs_on_its_own_through_many_small_increments(paper_run):
    # ~66 000 small increments, as in a rehearsal; the wall time is a benchmark figure
    # (benchmarks/bench_twin.py), not a test.
    assert paper_run.model.state.protocol_done
    assert paper_run.model.stop_reason == "completed"
    assert paper_run.calls > 60_000
    assert 4 * 3600 < paper_run.model.time_s < 5 * 3600


def test_charge_reaches_1p4_mah_per_cm2_after_2p3_h(paper_run):
    _, v, _, q, k = paper_run.at(CHARGE_S - 30)
    assert k == 0 and v == pytest.approx(4.3)
    assert paper_run.areal_mah(q) == pytest.approx(1.4, rel=0.03)
    # and the plated Li is 6.8 µm (1.4 mAh/cm² of Li at 13.0 cm³/mol)
    assert paper_run.model.plated_li_thickness_um() > 0
    first_rest = paper_run.table[paper_run.table[:, 4] == 1]
    assert first_rest[0, 2] == 0.0


def test_charge_current_is_nearly_constant_then_decays(paper_run):
    _, _, i_early, _, _ = paper_run.at(5 * 60)
    plateau = paper_run.table[(paper_run.table[:, 0] >= 120) & (paper_run.table[:, 0] <= 33 * 60)]
    assert np.all(abs(plateau[:, 2] / i_early - 1) < 0.10)
    _, _, i_60, _, _ = paper_run.at(60 * 60)
    _, _, i_end, _, _ = paper_run.at(CHARGE_S - 30)
    assert i_60 < 0.6 * i_early
    assert i_end < 0.1 * i_early
    charge = paper_run.table[paper_run.table[:, 4] == 0]
    assert np.all(np.diff(charge[10:, 2]) <= 1e-15)  # monotonic decay after the plateau start
    assert 0.6 < paper_run.areal_mah(paper_run.at(45 * 60)[3]) < 1.0


def test_solid_solution_after_the_front_has_no_depth_gradient(paper_run):
    profile = paper_run.profiles[round(paper_run.at(90 * 60)[0])]
    assert profile.rich_fraction.max() == 0.0
    assert np.ptp(profile.x_li) < 0.02
    assert 0.5 < profile.x_li.mean() < 0.6


def test_discharge_ends_by_the_3_v_cutoff_with_a_li_rich_surface_layer(paper_run):
    discharge = paper_run.table[paper_run.table[:, 4] == 2]
    duration_s = discharge[-1, 0] - discharge[0, 0]
    assert duration_s < 0.8 * 3 * 3600  # ended by the cut-off, not by its time limit
    last = paper_run.step_last_states[2]
    assert last.technique == Technique.CONSTANT_CURRENT
    assert 3.0 < last.potential_v < 3.3  # the potential collapses onto the cut-off ...
    assert discharge[len(discharge) // 2, 1] > 3.7  # ... after a flat discharge
    end = paper_run.step_end_profiles[2]
    assert top_layer(end, 5.0).mean() == pytest.approx(0.5, abs=0.15)
    layer_um = end.z_um[-1] - end.z_um[end.rich_fraction > 0.05].min()
    assert layer_um == pytest.approx(5.0, abs=1.0)
    assert end.rich_fraction[end.z_um < 10].max() == 0.0
    assert end.x_li.mean() == pytest.approx(0.75, abs=0.03)


def test_li_rich_layer_fades_during_the_following_rest(paper_run):
    at_cutoff = top_layer(paper_run.step_end_profiles[2], 5.0).mean()
    last = paper_run.profiles[max(paper_run.profiles)]
    assert paper_run.rows[-1][4] == 3
    assert top_layer(last, 5.0).mean() < 0.25 * at_cutoff


def test_cutoff_is_caused_by_the_insulating_layer_not_scripted(paper_run):
    # Without the slow transport across the Li-rich mixture no surface layer forms and the
    # same discharge runs much further before the potential collapses.
    config = ElectrochemConfig(
        lithiation_gap_diffusivity_um2_per_s=2.0, lithiation_slowdown_dx=0.01
    )
    fast = Run(config, dt_s=5.0)

    def discharged_mah(run):
        d = run.table[run.table[:, 4] == 2]
        return run.areal_mah(d[0, 3] - d[-1, 3])

    assert discharged_mah(fast) > 1.3 * discharged_mah(paper_run)
    assert top_layer(fast.step_end_profiles[2], 5.0).mean() == pytest.approx(
        fast.step_end_profiles[2].rich_fraction.mean(), abs=0.05
    )
