import asyncio

import pytest

from opmap.devices.sim._clock import ClockMode, SimClock


class FakeWall:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_accelerated_clock_follows_wall_time_times_speedup():
    wall = FakeWall()
    clock = SimClock(ClockMode.ACCELERATED, speedup=60.0, start_s=10.0, wall_clock=wall)
    assert clock.now_s() == 10.0
    wall.t += 2.5  # nobody waits (e.g. RunEngine paused): time still flows
    assert clock.now_s() == pytest.approx(10.0 + 2.5 * 60.0)


def test_real_time_clock_rejects_speedup():
    with pytest.raises(ValueError, match=r"speedup=2\.0 must be 1"):
        SimClock(ClockMode.REAL_TIME, speedup=2.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_speedup_is_rejected(bad):
    with pytest.raises(ValueError, match="speedup="):
        SimClock(ClockMode.ACCELERATED, speedup=bad)


async def test_event_driven_sequential_sleeps_add_up_and_wall_time_does_not_count():
    clock = SimClock()
    await clock.sleep(1.5)
    await clock.sleep(0.25)
    assert clock.now_s() == pytest.approx(1.75)
    await asyncio.sleep(0.01)
    assert clock.now_s() == pytest.approx(1.75)


async def test_event_driven_concurrent_sleeps_overlap_like_discrete_events():
    clock = SimClock()
    woke: list[tuple[str, float]] = []

    async def frames() -> None:
        for _ in range(4):
            await clock.sleep(0.5)
            woke.append(("frame", clock.now_s()))

    async def move() -> None:
        await clock.sleep(1.2)
        woke.append(("move", clock.now_s()))

    await asyncio.gather(frames(), move())
    assert clock.now_s() == pytest.approx(2.0)  # max(4 x 0.5, 1.2), not the sum
    assert woke == [
        ("frame", pytest.approx(0.5)),
        ("frame", pytest.approx(1.0)),
        ("move", pytest.approx(1.2)),
        ("frame", pytest.approx(1.5)),
        ("frame", pytest.approx(2.0)),
    ]


async def test_accelerated_sleep_takes_duration_over_speedup_of_wall_time():
    clock = SimClock(ClockMode.ACCELERATED, speedup=100.0)
    start = clock.now_s()
    await clock.sleep(3.0)
    assert clock.now_s() - start >= 3.0 * 0.99


async def test_negative_sleep_and_advance_in_wall_mode_are_rejected():
    clock = SimClock()
    with pytest.raises(ValueError, match="duration_s=-1"):
        await clock.sleep(-1)
    clock.advance(5.0)
    assert clock.now_s() == 5.0
    with pytest.raises(ValueError, match="needs mode 'event driven'"):
        SimClock(ClockMode.ACCELERATED, speedup=5).advance(1.0)


async def test_background_waiter_does_not_jump_in_short_gaps_between_device_operations():
    # A potentiostat waiting for its protocol's end must not move experiment time while the
    # RunEngine is between two motions of a fly line (a gap shorter than idle_s).
    clock = SimClock(idle_s=0.2)
    background = asyncio.ensure_future(clock.sleep(10.0, background=True))
    for _ in range(5):
        await clock.sleep(0.05)  # a foreground exposure
        await asyncio.sleep(0.02)  # the RunEngine's work between operations
    assert clock.now_s() == pytest.approx(0.25)
    assert not background.done()
    await asyncio.sleep(0.4)  # idle longer than idle_s: the background waiter moves time
    await asyncio.wait_for(background, 1.0)
    assert clock.now_s() == pytest.approx(10.0)


async def test_background_waiter_jumps_when_it_is_earliest_while_a_device_also_waits():
    clock = SimClock(idle_s=10.0)
    background = asyncio.ensure_future(clock.sleep(1.0, background=True))
    await clock.sleep(5.0)  # a long motion: the earlier background deadline passes on the way
    assert background.done()
    assert clock.now_s() == pytest.approx(5.0)
