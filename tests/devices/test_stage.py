import re
from unittest.mock import call

import bluesky.plan_stubs as bps
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus
from ophyd_async.core import (
    FlyMotorInfo,
    get_mock_put,
    init_devices,
    set_mock_value,
)

from opmap.devices.sim import SimClock, SimMapStage, Trajectory
from opmap.devices.stage import AxisUnreachableError, MapStage, SoftLimitError, SoftLimits

from ._offline_epics import allow_offline_ca, root_cause


@pytest.fixture
def mock_stage(RE, monkeypatch):
    allow_offline_ca(monkeypatch)
    with init_devices(mock=True):
        stage = MapStage("BL13:STAGE:", x_limits_um=(0.0, 2000.0), z_limits_um=(-5.0, 50.0))
    for axis in (stage.x, stage.z):
        set_mock_value(axis.dial_low_limit_travel, -1e4)
        set_mock_value(axis.dial_high_limit_travel, 1e4)
        set_mock_value(axis.low_limit_travel, -1e4)
        set_mock_value(axis.high_limit_travel, 1e4)
        set_mock_value(axis.acceleration_time, 0.1)
    return stage


def test_real_stage_uses_x_and_z_motor_records(mock_stage):
    assert mock_stage.x.user_setpoint.source.endswith("BL13:STAGE:X.VAL")
    assert mock_stage.z.user_readback.source.endswith("BL13:STAGE:Z.RBV")


def test_real_stage_step_move_puts_the_setpoint(RE, mock_stage):
    RE(bps.mv(mock_stage.z, 12.5))
    assert get_mock_put(mock_stage.z.user_setpoint).call_args_list == [call(12.5)]
    assert RE(bps.rd(mock_stage.z)).plan_result == 12.5


def test_real_stage_refuses_target_outside_soft_limits_before_any_put(RE, mock_stage):
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.mv(mock_stage.z, 60.0))
    assert isinstance(root_cause(excinfo.value), SoftLimitError)
    assert re.search(
        r"axis 'z': target 60.0 µm .* \[-5.0, 50.0\] µm", str(root_cause(excinfo.value))
    )
    get_mock_put(mock_stage.z.user_setpoint).assert_not_called()


def test_real_stage_fly_prepare_puts_run_up_start_and_fly_velocity(RE, mock_stage):
    # 33 µm per 0.05 s frame = 660 µm/s; run-up = 0.1 s * 660 / 2 = 33 µm before start
    info = FlyMotorInfo(start_position=100.0, end_position=1700.0, time_for_move=1600 / 660)
    RE(bps.prepare(mock_stage.x, info, wait=True))
    assert get_mock_put(mock_stage.x.user_setpoint).call_args_list == [call(pytest.approx(67.0))]
    assert get_mock_put(mock_stage.x.velocity).call_args_list[-1] == call(pytest.approx(660.0))


def test_real_stage_fly_run_up_outside_soft_limits_is_refused_before_moving(RE, mock_stage):
    info = FlyMotorInfo(start_position=10.0, end_position=1700.0, time_for_move=2.0)
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.prepare(mock_stage.x, info, wait=True))
    assert isinstance(root_cause(excinfo.value), SoftLimitError)
    assert re.search("axis 'x'", str(root_cause(excinfo.value)))
    get_mock_put(mock_stage.x.user_setpoint).assert_not_called()


def test_soft_limits_must_be_ordered():
    with pytest.raises(ValueError, match="low_um=5 must be below high_um=1"):
        SoftLimits("x", 5, 1)


@pytest.mark.parametrize("time_s", [0.0, 0.05, 0.3, 1.0, 1.9, 2.0, 5.0])
def test_trajectory_matches_constant_acceleration_kinematics(time_s):
    traj = Trajectory.plan(0.0, 0.0, 1000.0, velocity_um_s=1000.0, accel_s=0.2)
    a = 1000.0 / 0.2  # µm/s²
    # ramp: a t²/2; cruise from 100 µm at 1000 µm/s; duration = 0.2 + 1.0 (cruise 800 µm) ... + 0.2
    assert traj.duration_s == pytest.approx(1.2)
    t = min(time_s, 1.2)
    if t <= 0.2:
        expected = a * t * t / 2
    elif t >= 1.0:
        expected = 1000.0 - a * (1.2 - t) ** 2 / 2
    else:
        expected = 100.0 + 1000.0 * (t - 0.2)
    assert traj.position_at_um(time_s) == pytest.approx(expected)


def test_short_move_has_a_triangular_profile():
    traj = Trajectory.plan(0.0, 0.0, 10.0, velocity_um_s=1000.0, accel_s=0.2)
    # half the distance in each ramp: 5 = v_peak * t / 2 with v_peak / t = 1000 / 0.2
    assert traj.duration_s == pytest.approx(2 * (5 / 5000) ** 0.5 * 2**0.5)
    assert traj.position_at_um(traj.duration_s / 2) == pytest.approx(5.0)


@pytest.fixture
def sim_stage(RE):
    clock = SimClock()
    with init_devices():
        stage = SimMapStage(clock, x_limits_um=(-100.0, 2100.0), z_limits_um=(-5.0, 50.0))
    return stage, clock


def test_sim_fly_takes_the_modelled_time_and_ends_past_the_end(RE, sim_stage):
    stage, clock = sim_stage
    info = FlyMotorInfo(start_position=0.0, end_position=1617.0, time_for_move=2.45)
    RE(bps.prepare(stage.x, info, wait=True))
    accel_s = 0.1
    run_up_um = accel_s * info.speed / 2
    assert RE(bps.rd(stage.x)).plan_result == pytest.approx(-run_up_um)
    t_ready = clock.now_s()

    def fly():
        yield from bps.open_run()
        yield from bps.kickoff(stage.x, wait=True)
        yield from bps.complete(stage.x, wait=True)
        yield from bps.close_run()

    RE(fly())
    # ramp up + constant-speed section + ramp down
    assert clock.now_s() - t_ready == pytest.approx(2.45 + 2 * accel_s, abs=1e-6)
    assert RE(bps.rd(stage.x)).plan_result == pytest.approx(1617.0 + run_up_um)
    mid_s = t_ready + accel_s + 2.45 / 2
    assert stage.x.position_at_um(mid_s) == pytest.approx(1617.0 / 2)


def test_sim_fly_too_fast_is_refused_before_moving(RE, sim_stage):
    stage, clock = sim_stage
    info = FlyMotorInfo(start_position=0.0, end_position=2000.0, time_for_move=0.1)
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.prepare(stage.x, info, wait=True))
    assert isinstance(root_cause(excinfo.value), ValueError)
    assert re.search(
        r"axis 'x': fly speed 20000 µm/s exceeds max_velocity", str(root_cause(excinfo.value))
    )
    assert clock.now_s() == 0.0
    assert RE(bps.rd(stage.x)).plan_result == 0.0


def test_sim_fly_acceleration_limit_is_checked(RE, sim_stage):
    stage, _ = sim_stage
    RE(bps.mv(stage.x.acceleration_time, 0.001))
    info = FlyMotorInfo(start_position=0.0, end_position=1000.0, time_for_move=1.0)
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.prepare(stage.x, info, wait=True))
    assert isinstance(root_cause(excinfo.value), ValueError)
    assert re.search("acceleration 1e\\+06 µm/s² exceeds", str(root_cause(excinfo.value)))


def test_sim_step_outside_soft_limits_is_refused_before_moving(RE, sim_stage):
    stage, clock = sim_stage
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.mv(stage.z, 51.0))
    assert isinstance(root_cause(excinfo.value), SoftLimitError)
    assert re.search(r"axis 'z': target 51.0 µm", str(root_cause(excinfo.value)))
    assert RE(bps.rd(stage.z)).plan_result == 0.0
    assert clock.now_s() == 0.0


def test_sim_step_move_advances_clock_by_move_time(RE, sim_stage):
    stage, clock = sim_stage
    RE(bps.mv(stage.z, 1.0))  # 1 µm at 100 µm/s with 0.1 s ramps: triangular
    expected = Trajectory.plan(0.0, 0.0, 1.0, 100.0, 0.1).duration_s
    assert clock.now_s() == pytest.approx(expected)
    assert RE(bps.rd(stage.z)).plan_result == 1.0


def _unreachable(pv: str):
    async def get_value() -> float:
        raise TimeoutError(pv)  # what ophyd-async raises when a PV does not answer

    return get_value


def test_a_move_completed_by_a_dead_ioc_fails_naming_the_axis_and_pv(RE, mock_stage, monkeypatch):
    # the put "completes" (a CA disconnect looks like success), then .DMOV does not answer
    monkeypatch.setattr(
        mock_stage.z.motor_done_move, "get_value", _unreachable("ca://BL13:STAGE:Z.DMOV")
    )
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.mv(mock_stage.z, 12.5))
    error = excinfo.value
    while not isinstance(error, AxisUnreachableError):  # FailedStatus wraps it
        assert error.__cause__ is not None, excinfo.value
        error = error.__cause__
    assert str(error).startswith("stage-z: move to 12.5 failed: ca://BL13:STAGE:Z.DMOV")
    assert get_mock_put(mock_stage.z.user_setpoint).call_args_list == [call(12.5)]


def test_reading_an_axis_whose_ioc_is_gone_names_the_axis_and_pv(RE, mock_stage, monkeypatch):
    # StandardReadable.read gathers the bound reads of its readables: replace them
    monkeypatch.setattr(mock_stage.x, "_read_funcs", (_unreachable("ca://BL13:STAGE:X.RBV"),))
    with pytest.raises(AxisUnreachableError, match=r"stage-x: read failed: ca://BL13:STAGE:X.RBV"):
        call_in_bluesky_event_loop(mock_stage.x.read())
