import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from event_model import DocumentNames, schema_validators
from ophyd_async.core import init_devices

from opmap.devices import (
    ProtocolError,
    ProtocolStep,
    SafetyWindow,
    StepTable,
    Technique,
)
from opmap.devices.potentiostat import STREAM_NAME, PotentiostatState
from opmap.devices.sim import SimClock, SimPotentiostat
from opmap.twin.electrochem import CellElectrochemistry, ElectrochemConfig

CURRENT_A = 2e-6


class LinearCell:
    """Known truth: constant current, potential rising 1 mV/s from 3.9 V while running."""

    def __init__(self):
        self.t_s, self.t_start_s, self.running, self.done, self.protocol = (
            0.0,
            None,
            False,
            False,
            None,
        )

    def start_protocol(self, protocol, window):
        self.protocol, self.t_start_s, self.running, self.done = protocol, self.t_s, True, False

    def stop_protocol(self):
        self.running, self.done = False, True

    def advance_to(self, time_s):
        assert time_s >= self.t_s, "the model only moves forward"
        self.t_s = time_s
        if self.running and self.t_s - self.t_start_s >= self.protocol.max_duration_s:
            self.running, self.done = False, True

    @property
    def state(self):
        from types import SimpleNamespace

        run_s = (
            0.0
            if self.t_start_s is None
            else min(self.t_s - self.t_start_s, self.protocol.max_duration_s)
        )
        return SimpleNamespace(
            time_s=self.t_s,
            potential_v=3.9 + 1e-3 * run_s,
            current_a=CURRENT_A if self.running else 0.0,
            charge_c=CURRENT_A * run_s,
            step_index=0 if self.running else -1,
            step_label="charge" if self.running else "",
            technique=Technique.CONSTANT_CURRENT if self.running else Technique.OPEN_CIRCUIT,
            protocol_done=self.done,
        )


PROTOCOL = StepTable(
    (ProtocolStep(Technique.CONSTANT_CURRENT, 30.0, setpoint=CURRENT_A, label="charge"),)
)


@pytest.fixture
def RE():
    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()


@pytest.fixture
def rig(RE):
    clock, cell = SimClock(), LinearCell()
    with init_devices():
        pstat = SimPotentiostat(cell, clock, SafetyWindow(max_abs_current_a=10e-6))
    return clock, cell, pstat


def test_collect_returns_every_sample_since_previous_collect_without_gaps(RE, rig):
    clock, _cell, pstat = rig
    docs = []

    def check(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        docs.append((name, doc))

    RE.subscribe(check)

    def two_maps():
        yield from bps.prepare(pstat, PROTOCOL, wait=True)
        for _ in range(2):  # two runs, the protocol keeps going in between
            yield from bps.open_run()
            yield from bps.declare_stream(pstat, name=STREAM_NAME, collect=True)
            if clock.now_s() == 0:
                yield from bps.kickoff(pstat, wait=True)
            clock.advance(7.5)
            yield from bps.collect(pstat, name=STREAM_NAME)
            yield from bps.close_run()
            clock.advance(5.0)  # between maps: not lost

    RE(two_maps())
    pages = [d for n, d in docs if n == "event_page"]
    times = np.concatenate([p["data"]["time_s"] for p in pages])
    np.testing.assert_allclose(times, np.arange(0.0, 21.0))  # 0..20 s every 1 s, no gap
    charge = np.concatenate([p["data"]["charge_c"] for p in pages])
    np.testing.assert_allclose(charge, CURRENT_A * times)
    descriptor = next(d for n, d in docs if n == "descriptor")
    assert descriptor["name"] == STREAM_NAME
    assert descriptor["data_keys"]["potential_v"]["units"] == "V"


def test_kickoff_returns_at_once_and_complete_waits_for_protocol_end(RE, rig):
    clock, _, pstat = rig

    def plan():
        yield from bps.prepare(pstat, PROTOCOL, wait=True)
        yield from bps.open_run()
        yield from bps.kickoff(pstat, wait=True)
        t_kick = clock.now_s()
        # complete() waits in the background: on the event-driven clock it never moves
        # time itself; the plan's foreground wait for elapsed time does (as the operando
        # plan's tail run does)
        yield from bps.complete(pstat, group="protocol")
        yield from bps.wait_for([lambda: pstat.wait_elapsed(35.0)])
        t_waited = clock.now_s()
        yield from bps.wait(group="protocol")
        yield from bps.close_run()
        return t_kick, t_waited

    t_kick, t_waited = RE(plan()).plan_result
    assert t_kick == 0.0
    assert t_waited == 35.0
    assert clock.now_s() == 35.0  # the background poll was released by the jump to 35 s
    reading = RE(bps.rd(pstat.state)).plan_result
    assert reading == PotentiostatState.DONE
    assert RE(bps.rd(pstat.charge)).plan_result == pytest.approx(CURRENT_A * 30.0)


def test_read_gives_readbacks_with_units(RE, rig):
    clock, _, pstat = rig
    RE(_started(pstat, PROTOCOL))
    clock.advance(10.0)
    reading = RE(bps.read(pstat)).plan_result
    assert reading[f"{pstat.name}-potential"]["value"] == pytest.approx(3.91)
    assert reading[f"{pstat.name}-current"]["value"] == CURRENT_A
    assert reading[f"{pstat.name}-elapsed"]["value"] == 10.0
    assert reading[f"{pstat.name}-state"]["value"] == PotentiostatState.RUNNING


def test_setpoint_outside_safety_window_is_refused_before_sending(RE, rig):
    _, cell, pstat = rig
    too_much = StepTable((ProtocolStep(Technique.CONSTANT_CURRENT, 10.0, setpoint=20e-6),))
    with pytest.raises(FailedStatus) as excinfo:
        RE(bps.prepare(pstat, too_much, wait=True))
    assert isinstance(excinfo.value.__cause__, ProtocolError)
    assert "setpoint=2e-05 A exceeds the safety window" in str(excinfo.value.__cause__)
    assert cell.protocol is None


def test_stop_goes_to_open_circuit(RE, rig):
    clock, cell, pstat = rig
    RE(_started(pstat, PROTOCOL))
    clock.advance(3.0)
    RE(bps.stop(pstat))
    assert RE(bps.rd(pstat.state)).plan_result == PotentiostatState.OPEN_CIRCUIT
    assert cell.state.current_a == 0.0


def test_with_the_twin_electrochemistry_charge_follows_current(RE):
    clock = SimClock()
    with init_devices():
        pstat = SimPotentiostat(CellElectrochemistry(ElectrochemConfig()), clock)
    charge = StepTable((ProtocolStep(Technique.CONSTANT_VOLTAGE, 600.0, setpoint=4.3),))
    RE(_started(pstat, charge))
    clock.advance(120.0)
    reading = RE(bps.read(pstat)).plan_result
    assert reading[f"{pstat.name}-current"]["value"] > 0  # charging at 4.3 V
    assert reading[f"{pstat.name}-charge"]["value"] > 0


def _started(pstat, protocol):
    yield from bps.prepare(pstat, protocol, wait=True)
    yield from bps.open_run()
    yield from bps.kickoff(pstat, wait=True)
    yield from bps.close_run()
