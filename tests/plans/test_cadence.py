"""The operando cadence: a pristine map before the protocol, then maps on a schedule."""

from __future__ import annotations

import itertools

import pytest
from ophyd_async.core import init_devices

from opmap.devices import ProtocolStep, StepTable, Technique
from opmap.plans import MapCadence, operando_experiment

from ._doubles import FakePotentiostat
from .conftest import SMALL_MAP

CHARGE = StepTable(steps=(ProtocolStep(Technique.CONSTANT_CURRENT, 240.0, setpoint=1e-6),))


@pytest.mark.parametrize(
    ("stretches", "match"),
    [
        ((), "at least one"),
        (((10.0, 60.0),), r"map_schedule\[0\]: from_time_s=10.0 must be 0 s"),
        (((0.0, 60.0), (0.0, 30.0)), r"map_schedule\[1\]: from_time_s=0.0 must be later"),
        (((0.0, 0.0),), r"map_schedule\[0\]: interval_s=0.0 must be a finite time > 0"),
        (((0.0, float("inf")),), "interval_s=inf"),
        (((0.0, 60.0), (-5.0, 30.0)), "from_time_s=-5.0 must be a finite time >= 0"),
        (((0.0,),), r"map_schedule\[0\]=\(0.0,\) must be a pair"),
        ("0:300", "must be a list"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_stretch(stretches, match):
    with pytest.raises(ValueError, match=match):
        MapCadence(stretches)


def test_the_next_map_starts_after_the_interval_or_when_a_new_stretch_begins():
    cadence = MapCadence(((0.0, 300.0), (2000.0, 1500.0)))
    assert cadence.next_start_s(0.0) == 300.0
    assert cadence.next_start_s(1800.0) == 2000.0  # the new cadence begins on time
    assert cadence.next_start_s(2000.0) == 3500.0
    # 7 maps in the first 2000 s, then one every 1500 s; maps longer than the interval
    # push the next one back
    assert cadence.starts_s(5000.0)[:8] == [0, 300, 600, 900, 1200, 1500, 1800, 2000]
    assert cadence.starts_s(1000.0, map_duration_s=400.0) == [0.0, 400.0, 800.0]
    assert cadence.scaled(0.5).stretches == ((0.0, 150.0), (1000.0, 750.0))


def test_map_interval_and_schedule_together_are_refused(devices):
    det, stage_x, stage_z, potentiostat = devices
    plan = operando_experiment(
        potentiostat,
        det,
        stage_x,
        stage_z,
        CHARGE,
        SMALL_MAP,
        map_interval_s=60.0,
        map_schedule=[(0.0, 60.0)],
    )
    with pytest.raises(ValueError, match="map_interval_s or map_schedule, not both"):
        next(plan)


@pytest.fixture
def slow_potentiostat(RE):
    # 0.2 s of protocol time per 5 ms: a small map lasts a few tens of protocol seconds
    with init_devices():
        potentiostat = FakePotentiostat(time_step_s=0.2)
    return potentiostat


def test_pristine_map_comes_before_the_protocol_then_maps_follow_the_schedule(
    RE, docs, devices, slow_potentiostat
):
    det, stage_x, stage_z, _ = devices
    potentiostat = slow_potentiostat
    order: list[str] = []
    RE.msg_hook = lambda msg: order.append(f"{msg.command}:{getattr(msg.obj, 'name', '')}")
    cadence = MapCadence(((0.0, 30.0), (120.0, 60.0)))
    plan = operando_experiment(
        potentiostat, det, stage_x, stage_z, CHARGE, SMALL_MAP, map_schedule=cadence, poll_s=1.0
    )
    assert RE(plan).exit_status == "success"
    starts = docs.of("start")
    assert starts[0]["map_index"] == 0 and starts[0]["pristine"] is True
    assert starts[0]["purpose"] == "pristine map"
    assert all(s["pristine"] is False for s in starts[1:-1])
    assert starts[-1]["map_index"] is None
    assert starts[0]["plan_args"]["map_schedule"] == [[0.0, 30.0], [120.0, 60.0]]
    # the protocol starts after every frame of the pristine map, inside its run
    kickoff = order.index("kickoff:potentiostat")
    first_stop = order.index("close_run:")
    assert kickoff < first_stop
    assert order[:kickoff].count("kickoff:det") == SMALL_MAP.z_count
    assert "kickoff:det" not in order[kickoff:first_stop]
    # protocol-time map starts (ec_state at each map start) of the maps after the pristine one
    ec_state = docs.events_by_stream()["ec_state"]
    times = [e["data"]["potentiostat_time_s"] for e in ec_state[2::2]]
    assert times[0] < 30.0  # the first protocol map starts as the protocol does
    for earlier, later in itertools.pairwise(times):
        assert later >= cadence.next_start_s(earlier)
    assert any(120.0 <= t < 150.0 for t in times)  # the second stretch starts on time
    late = [t for t in times if t >= 120.0]
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(late))
    # the electrochemical record is still gapless from the protocol's start
    assert docs.ec_times() == pytest.approx([0.2 * k for k in range(1200)])
