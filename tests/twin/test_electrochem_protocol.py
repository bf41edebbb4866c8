"""StepTable running, limits, safety and time of the twin's electrochemistry."""

import numpy as np
import pytest

from opmap.devices import (
    ProtocolError,
    ProtocolStep,
    SafetyWindow,
    StepTable,
    Technique,
    paper_protocol,
)
from opmap.twin.electrochem import CellElectrochemistry, ElectrochemConfig

CC = Technique.CONSTANT_CURRENT
CV = Technique.CONSTANT_VOLTAGE
OC = Technique.OPEN_CIRCUIT


def test_plated_li_is_6p8_um_after_1p4_mah_per_cm2():
    config = ElectrochemConfig()
    charge_c = 1.4 * 3.6 * config.area_cm2  # 1.4 mAh/cm² over the cell
    step = ProtocolStep(CC, 5 * 3600, setpoint=5e-6, max_abs_charge_c=charge_c, label="c")
    model = CellElectrochemistry(config)
    model.start_protocol(StepTable((step,)), SafetyWindow(max_potential_v=4.6))
    model.advance_to(3 * 3600)
    assert model.stop_reason == "completed"
    assert model.state.protocol_done
    assert model.state.charge_c == pytest.approx(charge_c, rel=1e-9)
    assert model.state.current_a == 0.0
    assert model.plated_li_thickness_um() == pytest.approx(6.8, abs=0.05)
    # 0.8 mAh/cm² is 3.9 µm: the thickness is linear in the charge
    assert model.plated_li_thickness_um() * 0.8 / 1.4 == pytest.approx(3.9, abs=0.03)


def test_charge_passed_equals_li_removed_from_the_cathode():
    config = ElectrochemConfig()
    model = CellElectrochemistry(config)
    model.start_protocol(paper_protocol(), SafetyWindow())
    model.advance_to(1.5 * 3600)
    removed_x = 1.0 - model.profile().x_li.mean()
    expected_x = model.state.charge_c / config.area_cm2 / config.charge_per_x_c_per_cm2
    # the profile lags the reported time by less than one internal step
    assert removed_x == pytest.approx(expected_x, rel=2e-3)


def test_a_4p6_v_step_is_rejected_before_anything_changes():
    model = CellElectrochemistry(ElectrochemConfig())
    model.start_protocol(paper_protocol(), SafetyWindow())
    model.advance_to(600.0)
    before_state, before_x = model.state, model.profile().x_li
    bad = StepTable((ProtocolStep(CV, 60.0, setpoint=4.6, label="too high"),))
    with pytest.raises(ProtocolError, match=r"too high.*4\.6 V is outside the safety window"):
        model.start_protocol(bad, SafetyWindow())
    assert model.state == before_state
    np.testing.assert_array_equal(model.profile().x_li, before_x)
    model.advance_to(700.0)
    assert model.state.step_label == "charge" and model.state.potential_v == 4.3


def test_time_never_goes_back():
    model = CellElectrochemistry(ElectrochemConfig())
    model.advance_to(100.0)
    with pytest.raises(ValueError, match=r"time_s=50\.0 s is before the current time 100\.0 s"):
        model.advance_to(50.0)
    with pytest.raises(ValueError, match="time_s=nan must be finite"):
        model.advance_to(float("nan"))
    model.advance_to(100.0)  # standing still is allowed
    assert model.time_s == 100.0


def test_many_small_increments_give_the_same_result_as_one_jump():
    a = CellElectrochemistry(ElectrochemConfig())
    b = CellElectrochemistry(ElectrochemConfig())
    for m in (a, b):
        m.start_protocol(paper_protocol(), SafetyWindow())
    for t in np.arange(0.1, 3000.0, 0.1):
        a.advance_to(float(t))
    a.advance_to(3000.0)
    b.advance_to(3000.0)
    assert a.state == b.state
    np.testing.assert_array_equal(a.profile().x_li, b.profile().x_li)


def test_steps_end_on_their_time_limit_exactly_and_protocol_starts_now():
    model = CellElectrochemistry(ElectrochemConfig(), x_initial=0.6)
    model.advance_to(1000.0)
    steps = (ProtocolStep(OC, 100.0, label="rest"), ProtocolStep(CC, 50.0, setpoint=-1e-6))
    model.start_protocol(StepTable(steps), SafetyWindow())
    model.advance_to(1099.999)
    assert model.state.step_label == "rest"
    model.advance_to(1100.0)
    assert model.state.step_index == 1 and model.state.current_a == -1e-6
    model.advance_to(1150.0)
    assert model.state.protocol_done and model.state.step_index == -1
    assert model.state.charge_c == pytest.approx(-50e-6, rel=1e-9)


def test_constant_voltage_step_ends_on_its_current_floor():
    config = ElectrochemConfig()
    floor_a = 0.5e-3 * config.area_cm2  # 0.5 mA/cm², reached after the biphasic plateau
    step = ProtocolStep(CV, 3 * 3600, setpoint=4.3, min_abs_current_a=floor_a, label="cv")
    model = CellElectrochemistry(config)
    model.start_protocol(StepTable((step, ProtocolStep(OC, 3600, label="rest"))), SafetyWindow())
    t = 0.0
    while model.state.step_index == 0:
        last = model.state
        t += 10.0
        model.advance_to(t)
    assert last.current_a >= floor_a
    assert model.state.step_label == "rest"
    assert 40 * 60 < t < 90 * 60


def test_constant_current_step_ends_on_its_upper_cutoff():
    step = ProtocolStep(CC, 5 * 3600, setpoint=6e-6, max_potential_v=4.35, label="cc")
    model = CellElectrochemistry(ElectrochemConfig())
    model.start_protocol(StepTable((step,)), SafetyWindow())
    t = 0.0
    while not model.state.protocol_done:
        last = model.state
        t += 5.0
        model.advance_to(t)
    assert 4.3 < last.potential_v < 4.35
    assert model.state.potential_v < 4.1  # relaxed to open circuit
    # on the biphasic plateau the potential stays flat below the cut-off: it is only
    # reached in the solid solution, once the whole film is Li-poor
    assert model.profile().rich_fraction.max() == 0.0
    assert model.profile().x_li.mean() < 0.75


def test_stop_protocol_goes_to_open_circuit():
    model = CellElectrochemistry(ElectrochemConfig())
    model.start_protocol(paper_protocol(), SafetyWindow())
    model.advance_to(601.0)
    model.stop_protocol()
    state = model.state
    assert state.protocol_done and state.current_a == 0.0 and state.technique == OC
    assert state.step_index == -1
    assert 3.9 < state.potential_v < 4.0  # the OCV of the partly charged surface
    charge = state.charge_c
    model.advance_to(2000.0)
    assert model.state.charge_c == charge


def test_potential_outside_the_safety_window_stops_the_protocol():
    # discharging a pristine cell: no vacancies at the surface, the potential collapses
    step = ProtocolStep(CC, 3600, setpoint=-2e-6, label="over-discharge")
    model = CellElectrochemistry(ElectrochemConfig())
    model.start_protocol(StepTable((step,)), SafetyWindow(min_potential_v=3.2))
    model.advance_to(60.0)
    assert model.state.protocol_done and model.state.current_a == 0.0
    assert model.stop_reason.startswith("safety stop: potential")


def test_x_initial_outside_the_ocv_range_is_rejected():
    with pytest.raises(ValueError, match=r"x_initial=1\.2 must lie in \[0\.35, 1\.0\]"):
        CellElectrochemistry(ElectrochemConfig(), x_initial=1.2)
