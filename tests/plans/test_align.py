"""align_stack finds a known stack in a simulated z scan."""

from __future__ import annotations

import time

import numpy as np
import pytest
from event_model import DataKey
from ophyd_async.sim import SimMotor

from opmap.plans import MapGeometry, align_stack, find_stack, propose_map


class StackMonitor:
    """Diffracted intensity: 1000 counts inside the stack [0, 24] µm, 10 outside."""

    parent = None
    name = "monitor"

    def __init__(self, stage_z: SimMotor) -> None:
        self._stage_z = stage_z

    async def read(self):
        z = await self._stage_z.user_readback.get_value()
        counts = 1000.0 if 0.0 <= z <= 24.0 else 10.0
        return {"monitor_sum": {"value": counts, "timestamp": time.time()}}

    async def describe(self):
        return {"monitor_sum": DataKey(source="test", dtype="number", shape=[])}


def test_align_stack_finds_the_cathode_and_electrolyte(RE, docs, devices):
    _, _, stage_z, _ = devices
    template = MapGeometry(z_step_um=2.0, x_count=7)
    result = RE(
        align_stack(
            StackMonitor(stage_z),
            stage_z,
            -10.0,
            40.0,
            51,
            intensity_field="monitor_sum",
            template=template,
        )
    ).plan_result
    assert (result.z_bottom_um, result.z_top_um) == (0.0, 24.0)
    assert result.geometry.z_start_um == 0.0 and result.geometry.z_count == 13  # 0..24 step 2
    assert result.geometry.x_count == 7
    (event,) = docs.events_by_stream()["stack_alignment"]
    assert event["data"]["stack_z_top_um"] == 24.0
    assert len(docs.events_by_stream()["primary"]) == 51


def test_find_stack_and_propose_map_validate():
    with pytest.raises(ValueError, match="flat"):
        find_stack(np.arange(5.0), np.ones(5))
    with pytest.raises(ValueError, match="threshold_fraction"):
        find_stack(np.arange(5.0), np.arange(5.0), threshold_fraction=1.5)
    assert propose_map(1.0, 5.0, MapGeometry()).z_count == 5


def test_align_stack_rejects_bad_range_before_any_message(devices):
    _, _, stage_z, _ = devices
    plan = align_stack(StackMonitor(stage_z), stage_z, 5.0, 5.0, 10, intensity_field="x")
    with pytest.raises(ValueError, match=r"z_stop_um=5\.0"):
        next(plan)
