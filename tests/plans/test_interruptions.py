"""Pause / resume and suspender trips mid-line: no missing or doubled line, gapless record."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
from bluesky.utils import RunEngineInterrupted
from ophyd_async.core import init_devices, soft_signal_rw

from opmap.devices import ProtocolStep, StepTable, Technique
from opmap.plans import beam_current_suspender, fly_map, operando_experiment

from .conftest import SMALL_MAP


def assert_each_line_once(docs, run_uid: str, n_lines: int, n_x: int) -> int:
    """Every line recorded once, valid frame ranges disjoint; returns frames announced."""
    lines = docs.events_by_stream(run_uid)["lines"]
    assert sorted(e["data"]["line_index"] for e in lines) == list(range(n_lines))
    starts = [e["data"]["line_first_frame"] for e in lines]
    assert all(e["data"]["line_n_frames"] == n_x for e in lines)
    valid = [i for s in starts for i in range(s, s + n_x)]
    assert len(valid) == len(set(valid)) == n_lines * n_x
    announced = docs.frames_announced(run_uid)
    assert max(valid) < announced
    return announced


def pause_while_flying(RE, detector, line: int):
    """A msg_hook that requests a pause once, ~20 ms into the flight of ``line``."""
    kickoffs: list[object] = []

    def hook(msg):
        if msg.command == "kickoff" and msg.obj is detector:
            kickoffs.append(msg)
            if len(kickoffs) == line + 1:
                # request_pause blocks until the loop handles it: call it off the loop thread
                threading.Timer(0.02, RE.request_pause).start()

    return hook


def test_pause_mid_line_retakes_the_line_once(RE, docs, devices):
    det, stage_x, stage_z, _ = devices
    RE.msg_hook = pause_while_flying(RE, det, line=1)
    with pytest.raises(RunEngineInterrupted):
        RE(fly_map(det, stage_x, stage_z, SMALL_MAP))
    assert RE.state == "paused"
    time.sleep(0.2)  # the interrupted acquisition finishes writing its frames
    RE.msg_hook = None
    result = RE.resume()
    assert result.exit_status == "success"
    (start,) = docs.of("start")
    announced = assert_each_line_once(docs, start["uid"], SMALL_MAP.z_count, SMALL_MAP.x_count)
    # the aborted attempt's frames are announced, and claimed by no line record
    assert announced > SMALL_MAP.z_count * SMALL_MAP.x_count


def test_beam_trip_mid_line_retakes_line_and_keeps_the_ec_record_gapless(RE, docs, devices):
    det, stage_x, stage_z, potentiostat = devices
    with init_devices():
        ring_current_ma = soft_signal_rw(float, 200.0)
    RE.install_suspender(
        beam_current_suspender(ring_current_ma, min_current_ma=100.0, sleep_s=0.05)
    )

    async def beam_loss() -> None:
        await ring_current_ma.set(10.0)
        await asyncio.sleep(0.3)
        await ring_current_ma.set(200.0)

    fired: list[int] = []

    def hook(msg):
        if msg.command == "kickoff" and msg.obj is det and not fired:
            fired.append(1)
            RE.loop.call_later(0.02, lambda: RE.loop.create_task(beam_loss()))

    RE.msg_hook = hook
    steps = (ProtocolStep(Technique.CONSTANT_CURRENT, 300.0, setpoint=-1e-6),)
    plan = operando_experiment(
        potentiostat,
        det,
        stage_x,
        stage_z,
        StepTable(steps=steps),
        SMALL_MAP,
        max_maps=1,
        poll_s=0.05,
    )
    result = RE(plan)
    assert result.exit_status == "success"
    assert fired
    starts = docs.of("start")
    assert [s["map_index"] for s in starts] == [0, None]
    assert len({s["experiment_id"] for s in starts}) == 1
    assert_each_line_once(docs, starts[0]["uid"], SMALL_MAP.z_count, SMALL_MAP.x_count)
    assert docs.frames_announced(starts[0]["uid"]) > SMALL_MAP.z_count * SMALL_MAP.x_count
    times = docs.ec_times()
    assert times == [float(k) for k in range(300)]  # every sample once, in order, no gap
    assert not potentiostat.stopped


def test_no_map_starts_during_a_rest_step_when_asked(RE, docs, devices):
    det, stage_x, stage_z, potentiostat = devices
    steps = (
        ProtocolStep(Technique.OPEN_CIRCUIT, 150.0),
        ProtocolStep(Technique.CONSTANT_CURRENT, 150.0, setpoint=-1e-6),
    )
    plan = operando_experiment(
        potentiostat,
        det,
        stage_x,
        stage_z,
        StepTable(steps=steps),
        SMALL_MAP,
        map_during_rest=False,
        poll_s=0.02,
    )
    assert RE(plan).exit_status == "success"
    starts = docs.events_by_stream()["ec_state"][::2]  # start and end of every map
    assert len(starts) >= 2
    # map 0 records the state before the protocol; later maps waited for the rest to end
    # (time only increases, so a reading after the decision cannot be earlier than 150 s)
    assert all(e["data"]["potentiostat_time_s"] >= 150.0 for e in starts[1:])
    assert all(e["data"]["potentiostat_step_index"] == 1 for e in starts[1:])
    assert docs.ec_times() == [float(k) for k in range(300)]


def test_map_interval_spaces_map_starts_in_experiment_time(RE, docs, devices):
    det, stage_x, stage_z, potentiostat = devices
    steps = (ProtocolStep(Technique.CONSTANT_CURRENT, 300.0, setpoint=-1e-6),)
    plan = operando_experiment(
        potentiostat,
        det,
        stage_x,
        stage_z,
        StepTable(steps=steps),
        SMALL_MAP,
        map_interval_s=120.0,
        poll_s=0.02,
    )
    assert RE(plan).exit_status == "success"
    # map 0 is the pristine map, before the protocol: the interval counts from map 1 on
    times = [e["data"]["potentiostat_time_s"] for e in docs.events_by_stream()["ec_state"][::2]]
    assert len(times) >= 3
    assert all(later - earlier >= 120.0 for earlier, later in itertools.pairwise(times[1:]))
    assert docs.ec_times() == [float(k) for k in range(300)]
