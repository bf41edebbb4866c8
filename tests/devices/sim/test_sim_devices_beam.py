import bluesky.plan_stubs as bps
import pytest
from bluesky import RunEngine
from ophyd_async.core import init_devices

from opmap.devices.beam import BeamMonitor, ShutterState
from opmap.devices.sim import BeamTrip, SimBeamMonitor, SimClock

from .._offline_epics import allow_offline_ca


@pytest.fixture
def RE():
    run_engine = RunEngine(call_returns_result=True)
    yield run_engine
    if run_engine.state != "idle":
        run_engine.halt()


def test_trip_drops_the_beam_current_for_its_duration(RE):
    clock = SimClock()
    with init_devices():
        beam = SimBeamMonitor(clock, current_ma=200.0)
    beam.trip(start_s=10.0, duration_s=5.0)
    values = []
    for t_s in (0.0, 10.0, 14.9, 15.0):
        clock.advance(t_s - clock.now_s())
        reading = RE(bps.read(beam)).plan_result
        values.append(reading[beam.beam_current_ma.name]["value"])
    assert values == [200.0, 0.0, 0.0, 200.0]


def test_subscribers_see_the_trip_through_the_background_refresh(RE):
    clock = SimClock()
    with init_devices():
        beam = SimBeamMonitor(clock, poll_period_s=0.01)
    seen = []

    def record(reading):
        seen.append(reading[beam.beam_current_ma.name]["value"])

    RE(_subscribe(beam, record))
    beam.trips.append(BeamTrip(start_s=1.0, duration_s=1.0))  # no explicit update()
    clock.advance(1.5)
    RE(bps.sleep(0.1))  # wall time: the poller runs in the RunEngine loop
    clock.advance(1.0)
    RE(bps.sleep(0.1))
    assert seen[0] == 200.0
    assert 0.0 in seen
    assert seen[-1] == 200.0


def test_shutter_and_bad_trip(RE):
    clock = SimClock()
    with init_devices():
        beam = SimBeamMonitor(clock)
    RE(bps.mv(beam.shutter, ShutterState.OPEN))
    assert RE(bps.rd(beam.shutter)).plan_result == ShutterState.OPEN
    with pytest.raises(ValueError, match="duration_s=0 must be > 0"):
        beam.trip(1.0, 0)


def test_real_beam_monitor_pvs(RE, monkeypatch):
    allow_offline_ca(monkeypatch)
    with init_devices(mock=True):
        beam = BeamMonitor("SR:CURRENT", "BL13:SHUTTER:")
    assert beam.beam_current_ma.source.endswith("SR:CURRENT")
    assert beam.shutter.source.endswith("BL13:SHUTTER:Pos-Sts")


def _subscribe(beam, record):
    async def go():
        beam.beam_current_ma.subscribe_reading(record)

    yield from bps.wait_for([go])
