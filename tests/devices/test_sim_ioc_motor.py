"""The simulated IOC's motor record and Channel Access server, in process (no CA client).

A move must end (``.DMOV`` 1, ``.RBV`` at the target) when its trajectory does, as a real
motor record's does, not on the readback tick after; ``.RBV`` still updates while moving.
The server must answer without Nagle's algorithm, as an EPICS IOC does.
"""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest
from caproto.asyncio.server import Context

import opmap.sim_ioc
from opmap.devices.sim import Trajectory
from opmap.sim_ioc import AxisConfig, CaServerContext, MotorRecordPVs


async def _axis(velocity_um_s: float) -> MotorRecordPVs:
    axis = MotorRecordPVs("TEST:X", axis=AxisConfig("x", -10.0, 100.0))
    for prop, value in ((axis.hlm, 100.0), (axis.llm, -10.0), (axis.accl, 0.1)):
        await prop.write(value)
    await axis.velo.write(velocity_um_s)
    return axis


def test_a_move_ends_when_its_trajectory_does_not_on_the_next_readback_tick(monkeypatch):
    # a 1 s readback tick: a move ending on the tick after its trajectory would take >= 1 s
    monkeypatch.setattr(opmap.sim_ioc, "RBV_PERIOD_S", 1.0)

    async def move() -> tuple[float, MotorRecordPVs]:
        axis = await _axis(2000.0)
        start_s = time.monotonic()
        await axis.val.write(1.0)
        return time.monotonic() - start_s, axis

    took_s, axis = asyncio.run(move())
    duration_s = Trajectory.plan(0.0, 0.0, 1.0, 2000.0, 0.1).duration_s
    assert duration_s == pytest.approx(0.01414, rel=1e-3)  # 1 µm, a triangular profile
    assert duration_s <= took_s < 0.5
    assert axis.rbv.value == pytest.approx(1.0) and axis.dmov.value == 1


def test_rbv_updates_while_moving_and_dmov_is_0_until_the_end():
    async def move() -> tuple[list[tuple[float, int]], MotorRecordPVs]:
        axis = await _axis(20.0)  # 4 µm at 20 µm/s with 0.1 s ramps: 0.3 s
        put = asyncio.ensure_future(axis.val.write(4.0))
        seen = []
        while not put.done():
            seen.append((axis.rbv.value, axis.dmov.value))
            await asyncio.sleep(0.005)
        await put
        return seen, axis

    seen, axis = asyncio.run(move())
    moving = {rbv for rbv, dmov in seen if dmov == 0 and 0.0 < rbv < 4.0}
    assert len(moving) >= 5  # an update every RBV_PERIOD_S (20 ms) of the 0.3 s move
    assert all(dmov == 0 for rbv, dmov in seen[1:] if rbv < 4.0)
    assert axis.rbv.value == pytest.approx(4.0) and axis.dmov.value == 1


def test_the_ca_server_turns_nagle_off_on_every_client_circuit(monkeypatch):
    served = []

    async def base_handler(self, client, addr) -> None:
        served.append(addr)

    monkeypatch.setattr(Context, "tcp_handler", base_handler)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        writer = SimpleNamespace(get_extra_info=lambda key: sock if key == "socket" else None)
        context = CaServerContext.__new__(CaServerContext)  # no sockets bound
        asyncio.run(context.tcp_handler(SimpleNamespace(writer=writer), ("127.0.0.1", 1)))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert served == [("127.0.0.1", 1)]
