"""``opmap sim-ioc`` in its own process, driven over Channel Access by ophyd-async devices.

Both sides are pinned to loopback and to unused ports (``EPICS_CA_SERVER_PORT``,
``EPICS_CAS_SERVER_PORT``, ``EPICS_CA_REPEATER_PORT``, ``EPICS_CA_ADDR_LIST=127.0.0.1``,
``EPICS_CA_AUTO_ADDR_LIST=NO``). libca reads them once per process, when its context is
made, so this module sets them before its first Channel Access call.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import init_devices, wait_for_value
from ophyd_async.epics.motor import Motor, MotorLimitsError

from opmap.cli import main
from opmap.devices import (
    BeamMonitor,
    MapStage,
    PotentiostatState,
    ProtocolError,
    ProtocolStep,
    SafetyWindow,
    ShutterState,
    SoftLimitError,
    StepTable,
    Technique,
    epics_potentiostat,
    paper_protocol,
)

from ._ca_env import ca_environment, wait_for_banner
from ._simplon_servers import stop_process

pytestmark = pytest.mark.slow

SPEEDUP = 100.0
PREFIX = f"OPMAPT{os.getpid()}:"


def _run(coro, timeout_s: float = 30.0):
    return call_in_bluesky_event_loop(asyncio.wait_for(coro, timeout_s))


async def _awaited(method, *args):
    """Call ``method`` in the event loop (an AsyncStatus needs a running loop) and await it."""
    return await method(*args)


@pytest.fixture(scope="module")
def ioc(RE_module):
    """``opmap sim-ioc`` on loopback with unique ports; yields the PV prefix."""
    env = ca_environment()  # the same ports as every CA test of this process
    opmap = Path(sys.executable).with_name("opmap")
    command = [str(opmap), "sim-ioc", "--prefix", PREFIX, "--speedup", str(SPEEDUP)]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_for_banner(process, "opmap sim-ioc: serving", 60.0)
            yield PREFIX
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def RE_module():
    from bluesky import RunEngine

    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()


def test_bad_options_exit_2_with_a_message(capsys):
    assert main(["sim-ioc", "--speedup", "0"]) == 2
    assert "speedup=0.0 must be a finite number > 0" in capsys.readouterr().err
    assert main(["sim-ioc", "--prefix", "A B:"]) == 2
    assert main(["sim-ioc", "--twin-config", "no-such-twin.toml"]) == 2
    assert "no-such-twin.toml is not a file" in capsys.readouterr().err


def test_stage_motor_records_move_with_rbv_dmov_and_limits(RE_module, ioc):
    with init_devices():
        stage = MapStage(f"{ioc}STAGE:")
        motor = Motor(f"{ioc}STAGE:X")  # ophyd-async's own Motor: every field it connects
    RE_module(bps.mv(stage.x, 2.0, stage.z, 1.5))
    assert RE_module(bps.rd(stage.x)).plan_result == pytest.approx(2.0)
    assert RE_module(bps.rd(stage.z)).plan_result == pytest.approx(1.5)

    async def slow_move() -> tuple[list[int], list[float], float]:
        await motor.velocity.set(20.0)  # µm/s: 4 µm take 0.2 s + 0.1 s of ramps
        start = time.monotonic()
        status = motor.set(6.0)
        done, positions = [], []
        while not status.done:
            done.append(await motor.motor_done_move.get_value())
            positions.append(await motor.user_readback.get_value())
            await asyncio.sleep(0.03)
        await status
        return done, positions, time.monotonic() - start

    done, positions, took_s = _run(slow_move())
    assert 0 in done and took_s >= 0.25
    assert all(2.0 <= p <= 6.0 for p in positions) and len(set(positions)) > 2
    assert _run(motor.user_readback.get_value()) == pytest.approx(6.0)
    assert _run(motor.motor_done_move.get_value()) == 1
    assert _run(motor.motor_egu.get_value()) == "um"
    with pytest.raises(MotorLimitsError):  # beyond .HLM: refused before any put
        _run(_awaited(motor.set, 2300.0))
    with pytest.raises(SoftLimitError):
        _run(_awaited(stage.x.set, 2300.0))
    assert _run(motor.user_readback.get_value()) == pytest.approx(6.0)


def test_a_put_beyond_hlm_is_refused_by_the_record_and_stop_stops(RE_module, ioc):
    from aioca import caget, caput

    x = f"{ioc}STAGE:X"
    _run(caput(f"{x}.VAL", 2300.0, wait=True))  # as a motor record: LVIO, no motion
    assert _run(caget(f"{x}.LVIO")) == 1
    assert _run(caget(f"{x}.VAL")) == _run(caget(f"{x}.RBV"))
    with init_devices():
        motor = Motor(x)

    async def stopped_move() -> tuple[float, float]:
        await motor.velocity.set(50.0)  # 1000 µm would take 20 s
        start = await motor.user_readback.get_value()
        status = motor.set(1000.0)
        # moving for sure (DMOV 0): Motor.stop() does nothing while DMOV is still 1
        while await motor.user_readback.get_value() < start + 1.0:
            await asyncio.sleep(0.02)
        await motor.stop(success=True)  # the pending move then completes
        await asyncio.wait_for(status, 5.0)
        stopped_at = await motor.user_readback.get_value()
        await asyncio.sleep(0.3)
        return stopped_at, await motor.user_readback.get_value()

    stopped_at, later = _run(stopped_move())
    assert 1.0 <= stopped_at < 500.0 and later == stopped_at
    assert _run(caget(f"{x}.DMOV")) == 1
    assert _run(caget(f"{x}.VAL")) == pytest.approx(stopped_at)
    _run(_awaited(motor.velocity.set, 2000.0))


def test_limits_an_operator_changes_apply_to_the_next_move(RE_module, ioc):
    # MapStage monitors the record's limits and speeds instead of reading them per move:
    # the monitor must bring an operator's change before the next move
    from aioca import caput

    with init_devices():
        stage = MapStage(f"{ioc}STAGE:")
    hlm = stage.z.high_limit_travel
    RE_module(bps.mv(stage.z, 0.0))
    _run(caput(f"{ioc}STAGE:Z.HLM", 10.0, wait=True))
    try:  # the monitor's update may come after the put's completion: wait for it
        _run(wait_for_value(hlm, 10.0, timeout=10.0))
        with pytest.raises(MotorLimitsError, match=r"<= 10\.0"):
            _run(_awaited(stage.z.set, 20.0))
        _run(caput(f"{ioc}STAGE:Z.HLM", 60.0, wait=True))
        _run(wait_for_value(hlm, 60.0, timeout=10.0))
        RE_module(bps.mv(stage.z, 20.0))
        assert RE_module(bps.rd(stage.z)).plan_result == pytest.approx(20.0)
    finally:
        _run(caput(f"{ioc}STAGE:Z.HLM", 60.0, wait=True))
    RE_module(bps.mv(stage.z, 0.0))


def test_ring_current_and_shutter(RE_module, ioc):
    with init_devices():
        beam = BeamMonitor(f"{ioc}BEAM:CURRENT", f"{ioc}BEAM:SHUTTER:")
    reading = _run(beam.read())
    assert reading["beam-beam_current_ma"]["value"] == pytest.approx(200.0, rel=1e-2)
    units = _run(beam.describe())["beam-beam_current_ma"]["units"]
    assert units == "mA"
    RE_module(bps.mv(beam.shutter, ShutterState.OPEN))
    assert _run(beam.shutter.get_value()) == ShutterState.OPEN


def _short_protocol() -> StepTable:
    return paper_protocol(
        charge_duration_s=60.0,
        first_rest_s=20.0,
        max_discharge_s=60.0,
        final_rest_s=20.0,
    )


async def _drain(potentiostat) -> list[dict]:
    pages = [page async for page in potentiostat.collect_pages()]
    return [{key: page["data"][key][i] for key in page["data"]} for page in pages for i in
            range(len(page["time"]))]  # fmt: skip


def test_potentiostat_runs_a_protocol_with_a_gapless_buffer(RE_module, ioc):
    with init_devices():
        potentiostat = epics_potentiostat(f"{ioc}EC:", name="potentiostat")
    protocol = _short_protocol()

    async def run_protocol() -> list[dict]:
        await potentiostat.prepare(protocol)
        await potentiostat.kickoff()
        assert await potentiostat.driver.state.get_value() == PotentiostatState.RUNNING
        samples = []
        for _ in range(4):  # drained while it runs, as plans collect after each line
            await asyncio.sleep(0.3)
            samples += await _drain(potentiostat)
        await potentiostat.complete()
        return samples + await _drain(potentiostat)

    samples = _run(run_protocol(), 60.0)
    times = np.array([s["time_s"] for s in samples])
    assert len(times) >= protocol.max_duration_s - 5
    np.testing.assert_allclose(np.diff(times), 1.0)  # every sample interval, no gap
    steps = [s["step_index"] for s in samples]
    assert sorted(set(steps)) == [-1, 0, 1, 2, 3]  # -1: not started, or finished
    running = [k for k in steps if k >= 0]
    assert running == sorted(running)
    charge = [s for s in samples if s["step_index"] == 0]
    assert all(s["current_a"] > 0 for s in charge[1:])
    reading = _run(potentiostat.read())
    assert reading["potentiostat-state"]["value"] == PotentiostatState.DONE
    assert math.isfinite(reading["potentiostat-protocol_start"]["value"])
    driver = potentiostat.driver

    async def units(*signals) -> list[str]:
        return [(await s.describe())[s.name].get("units") for s in signals]

    readbacks = (driver.potential, driver.current, driver.charge, driver.elapsed, driver.time)
    assert _run(units(*readbacks)) == ["V", "A", "C", "s", "s"]  # served by the IOC


def test_stop_puts_the_cell_at_open_circuit_and_bad_tables_are_refused(RE_module, ioc):
    with init_devices():
        potentiostat = epics_potentiostat(f"{ioc}EC:", name="potentiostat")
    driver = potentiostat.driver

    async def stop_midway() -> tuple[str, str, float]:
        await potentiostat.prepare(_short_protocol())
        await potentiostat.kickoff()
        await asyncio.sleep(0.2)
        await potentiostat.stop()
        await asyncio.sleep(0.1)
        return (
            await driver.state.get_value(),
            await driver.technique.get_value(),
            await driver.current.get_value(),
        )

    state, technique, current_a = _run(stop_midway())
    assert state == PotentiostatState.OPEN_CIRCUIT
    assert technique == Technique.OPEN_CIRCUIT
    assert current_a == 0.0
    assert _run(potentiostat.state.get_value()) == PotentiostatState.OPEN_CIRCUIT
    too_high = StepTable(
        (ProtocolStep(Technique.CONSTANT_VOLTAGE, 10.0, setpoint=4.3, label="cv"),)
    )
    with pytest.raises(RuntimeError, match=r"LOAD refused.*outside the safety window"):
        _run(driver.load(too_high, SafetyWindow(max_potential_v=4.2)))  # the IOC checks too
    long_label = StepTable((ProtocolStep(Technique.OPEN_CIRCUIT, 10.0, label="x" * 40),))
    with pytest.raises(ProtocolError, match="longer than 39 bytes"):  # refused before any put
        _run(driver.load(long_label, SafetyWindow()))
