"""The sim devices on the real twin and forward model: one fly line through a RunEngine."""

import bluesky.plan_stubs as bps
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators
from ophyd_async.core import (
    FlyMotorInfo,
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    init_devices,
)

from opmap.analysis.geometry import eiger4m_integrator
from opmap.devices import STREAM_NAME, ProtocolStep, StepTable, Technique
from opmap.devices.sim import (
    SimClock,
    SimEiger,
    SimMapStage,
    SimPotentiostat,
    metadata_from_integrator,
)
from opmap.twin import CellTwin, TwinConfig
from opmap.twin.forward import DiffractionConfig, DiffractionRenderer


@pytest.fixture(scope="module")
def ai():
    return eiger4m_integrator(binning=4)


def _devices(tmp_path, ai, clock):
    twin = CellTwin(TwinConfig(seed=3))
    renderer = DiffractionRenderer(ai, DiffractionConfig(), twin.families)
    with init_devices():
        stage = SimMapStage(clock)
        pstat = SimPotentiostat(twin.electrochemistry, clock)
        eiger = SimEiger(
            StaticPathProvider(StaticFilenameProvider("line"), tmp_path),
            clock,
            twin,
            renderer,
            stage.x,
            stage.z,
            tuple(ai.detector.shape),
            metadata_from_integrator(ai),
        )
    return stage, pstat, eiger


def test_fly_line_in_the_cathode_while_the_cell_charges(tmp_path, ai):
    RE = RunEngine(call_returns_result=True)
    docs = []

    def check(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        docs.append((name, doc))

    RE.subscribe(check)
    clock = SimClock()
    shape = tuple(ai.detector.shape)
    stage, pstat, eiger = _devices(tmp_path, ai, clock)
    n_frames = 6
    fly = FlyMotorInfo(
        start_position=500.0, end_position=500.0 + 33.0 * n_frames, time_for_move=0.05 * n_frames
    )
    charge = StepTable((ProtocolStep(Technique.CONSTANT_VOLTAGE, 3600.0, setpoint=4.3),))

    def plan():
        yield from bps.prepare(pstat, charge, wait=True)
        yield from bps.mv(stage.z, 10.0)
        yield from bps.stage(eiger)
        yield from bps.open_run()
        yield from bps.kickoff(pstat, wait=True)
        yield from bps.prepare(stage.x, fly, wait=True)
        yield from bps.prepare(
            eiger, TriggerInfo(number_of_events=n_frames, livetime=0.05), wait=True
        )
        yield from bps.declare_stream(eiger, name="primary", collect=True)
        yield from bps.declare_stream(pstat, name=STREAM_NAME, collect=True)
        yield from bps.kickoff(stage.x, wait=True)
        yield from bps.kickoff(eiger, wait=True)
        yield from bps.collect_while_completing([stage.x, eiger], [eiger], flush_period=0.5)
        clock.advance(5.0)  # the cell keeps charging after the line
        yield from bps.collect(pstat, name=STREAM_NAME)
        yield from bps.close_run()
        yield from bps.unstage(eiger)

    RE(plan())
    with h5py.File(tmp_path / "line_master.h5", "r") as f:
        frames = f["/entry/data/data"][()]
        x_um = f["/entry/opmap/x_um"][()]
        assert f["/entry/instrument/detector/detector_distance"][()] == pytest.approx(ai.dist)
    assert frames.shape == (n_frames, *shape) and frames.dtype == np.uint32
    assert frames.sum() > 0  # the cathode diffracts
    np.testing.assert_allclose(np.diff(x_um), 33.0, rtol=1e-3)
    pages = [d for n, d in docs if n == "event_page" and "current_a" in d["data"]]
    current = np.concatenate([p["data"]["current_a"] for p in pages])
    times = np.concatenate([p["data"]["time_s"] for p in pages])
    np.testing.assert_allclose(times, np.arange(0.0, 6.0))  # every second, no gap
    assert current[0] == 0.0 and np.all(current[1:] > 0)  # charging at 4.3 V once started
    descriptors = {d["name"]: d for n, d in docs if n == "descriptor"}
    assert descriptors["primary"]["data_keys"]["eiger"]["shape"] == [1, *shape]
