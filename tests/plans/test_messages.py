"""Exact message sequences (RunEngineSimulator) and inputs rejected before any message."""

from __future__ import annotations

import pytest
from bluesky.simulators import RunEngineSimulator

from opmap.devices import ProtocolError, ProtocolStep, StepTable, Technique
from opmap.plans import MapGeometry, fly_map, operando_experiment

ONE_LINE = MapGeometry(z_count=1, x_stop_um=20.0, x_count=2, exposure_s=0.01)


def test_fly_map_message_sequence_of_one_line(devices):
    det, stage_x, stage_z, _ = devices
    msgs = RunEngineSimulator().simulate_plan(fly_map(det, stage_x, stage_z, ONE_LINE))
    commands = [(m.command, getattr(m.obj, "name", None)) for m in msgs]
    assert commands == [
        ("open_run", None),
        ("stage", "det"),
        ("prepare", "stage_x"),
        ("prepare", "det"),
        ("wait", None),
        ("declare_stream", None),
        ("checkpoint", None),
        ("set", "stage_z"),
        ("wait", None),
        ("prepare", "stage_x"),
        ("prepare", "det"),
        ("wait", None),
        ("kickoff", "stage_x_readback"),  # the x readback is recorded during the line
        ("wait", None),
        ("kickoff", "stage_x"),
        ("wait", None),
        ("kickoff", "det"),
        ("wait", None),
        ("complete", "stage_x"),
        ("complete", "det"),
        ("wait", None),
        ("complete", "stage_x_readback"),
        ("wait", None),
        ("collect", "det"),
        ("read", "det_frames_written"),
        ("create", None),
        ("read", "line"),
        ("read", "stage_z"),
        ("save", None),
        ("unstage", "det"),
        ("close_run", None),
    ]
    (prepare_det,) = [m for m in msgs[:5] if m.command == "prepare" and m.obj is det]
    assert prepare_det.args[0].number_of_events == 2
    assert prepare_det.args[0].livetime == 0.01


def test_fly_map_rejects_a_non_geometry_before_any_message(devices):
    det, stage_x, stage_z, _ = devices
    with pytest.raises(TypeError, match="geometry must be a MapGeometry"):
        next(fly_map(det, stage_x, stage_z, {"z_count": 3}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_maps": 0}, "max_maps=0"),
        ({"map_interval_s": -1.0}, "map_interval_s=-1.0"),
        ({"poll_s": 0.0}, "poll_s=0.0"),
    ],
)
def test_operando_rejects_bad_options_before_any_message(devices, kwargs, match):
    det, stage_x, stage_z, potentiostat = devices
    protocol = StepTable(steps=(ProtocolStep(Technique.OPEN_CIRCUIT, 10.0),))
    plan = operando_experiment(potentiostat, det, stage_x, stage_z, protocol, ONE_LINE, **kwargs)
    with pytest.raises(ValueError, match=match):
        next(plan)


def test_protocol_outside_safety_window_fails_before_anything_moves(RE, docs, devices):
    det, stage_x, stage_z, potentiostat = devices
    seen = []
    RE.msg_hook = seen.append
    unsafe = StepTable(steps=(ProtocolStep(Technique.CONSTANT_VOLTAGE, 10.0, setpoint=5.0),))
    with pytest.raises(ProtocolError, match="safety window"):
        RE(operando_experiment(potentiostat, det, stage_x, stage_z, unsafe, ONE_LINE))
    assert [m.command for m in seen] == ["prepare", "stop"]  # then the safe-state stop
    assert docs.docs == []


def test_ec_value_reads_both_reading_conventions():
    from opmap.plans import ec_value

    assert ec_value({"pstat-elapsed": {"value": 12.5, "timestamp": 0}}, "time_s") == 12.5
    assert ec_value({"p_step_index": {"value": 2, "timestamp": 0}}, "step_index") == 2.0
    with pytest.raises(ValueError, match="no time_s field"):
        ec_value({"p-potential": {"value": 3.9, "timestamp": 0}}, "time_s")
