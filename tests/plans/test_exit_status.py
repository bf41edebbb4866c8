"""Stop, abort and exceptions: one stop document each, right exit status, devices unstaged."""

from __future__ import annotations

import threading
import time

import pytest
from bluesky.utils import FailedStatus, RunEngineInterrupted
from event_model import DataKey
from ophyd_async.core import AsyncStatus

from opmap.devices import ProtocolStep, StepTable, Technique
from opmap.plans import fly_map, operando_experiment

from .conftest import SMALL_MAP


class FaultyZ:
    """A z axis whose second move fails (a drive fault)."""

    parent = None
    name = "stage_z"

    def __init__(self) -> None:
        self.moves = 0
        self.position_um = 0.0

    def set(self, value: float) -> AsyncStatus:
        self.moves += 1

        async def move() -> None:
            if self.moves >= 2:
                raise RuntimeError("z drive fault")
            self.position_um = value

        return AsyncStatus(move())

    def read(self):
        return {"stage_z": {"value": self.position_um, "timestamp": time.time()}}

    def describe(self):
        return {"stage_z": DataKey(source="test", dtype="number", shape=[])}


def file_closed(det) -> bool:
    return det.pattern_generator._file is None


def pause_in_first_line(RE, det):
    def hook(msg):
        if msg.command == "kickoff" and msg.obj is det and RE.msg_hook is hook:
            RE.msg_hook = None
            threading.Timer(0.02, RE.request_pause).start()

    return hook


@pytest.mark.parametrize(("action", "status"), [("stop", "success"), ("abort", "abort")])
def test_stop_or_abort_while_paused_closes_the_run_once(RE, docs, devices, action, status):
    det, stage_x, stage_z, _ = devices
    RE.msg_hook = pause_in_first_line(RE, det)
    with pytest.raises(RunEngineInterrupted):
        RE(fly_map(det, stage_x, stage_z, SMALL_MAP))
    time.sleep(0.1)
    getattr(RE, action)()
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == status
    assert file_closed(det)


def test_device_fault_fails_the_run_once_and_unstages(RE, docs, devices):
    det, stage_x, _, _ = devices
    with pytest.raises(FailedStatus):
        RE(fly_map(det, stage_x, FaultyZ(), SMALL_MAP))
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "fail"
    assert stop["num_events"]["lines"] == 1  # the first line completed and was recorded
    assert file_closed(det)


def test_operando_fault_stops_the_potentiostat(RE, docs, devices):
    det, stage_x, _, potentiostat = devices
    protocol = StepTable(steps=(ProtocolStep(Technique.OPEN_CIRCUIT, 1000.0),))
    with pytest.raises(FailedStatus):
        RE(operando_experiment(potentiostat, det, stage_x, FaultyZ(), protocol, SMALL_MAP))
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "fail"
    assert potentiostat.stopped
    assert file_closed(det)
