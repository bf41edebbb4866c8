import asyncio
import time

import pytest

from opmap.devices.sim import ClockMode, SimClock


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


async def test_background_waiter_alone_never_moves_time():
    # A potentiostat polling for its protocol's end must not move experiment time, however
    # long the RunEngine is busy elsewhere (or idle) in wall time.
    clock = SimClock()
    background = asyncio.ensure_future(clock.sleep(10.0, background=True))
    await asyncio.sleep(0.3)  # wall time: nothing moves
    assert clock.now_s() == 0.0
    assert not background.done()
    for _ in range(5):
        await clock.sleep(0.05)  # foreground exposures move time; the waiter rides along
    assert clock.now_s() == pytest.approx(0.25)
    assert not background.done()
    clock.advance(10.0)  # an explicit advance past its deadline releases it
    await asyncio.wait_for(background, 1.0)
    assert clock.now_s() == pytest.approx(10.25)


async def test_background_waiter_is_released_when_a_foreground_wait_passes_its_deadline():
    clock = SimClock()
    woke: list[float] = []

    async def poll() -> None:
        await clock.sleep(1.0, background=True)
        woke.append(clock.now_s())

    background = asyncio.ensure_future(poll())
    await clock.sleep(5.0)  # a long motion: the earlier background deadline passes on the way
    await asyncio.wait_for(background, 1.0)
    assert woke == [5.0]  # released at the jump, not one second in
    assert clock.now_s() == pytest.approx(5.0)


async def test_no_time_moves_while_a_task_is_runnable_whatever_the_wall_time():
    clock = SimClock()
    waiter = asyncio.ensure_future(clock.sleep(2.0))
    for _ in range(200):  # a busy task: the loop is never idle, so time must not jump
        await asyncio.sleep(0)
        assert clock.now_s() == 0.0
    time.sleep(0.05)  # wall time passes with the loop blocked: still nothing
    assert clock.now_s() == 0.0
    await asyncio.wait_for(waiter, 1.0)  # the loop goes idle: the jump happens
    assert clock.now_s() == 2.0
    assert clock.jumps == 1


async def test_no_jump_while_a_worker_thread_job_is_pending():
    clock = SimClock()
    seen: list[float] = []

    async def render() -> None:
        # the loop is idle, but the thread's result may bring new requests
        seen.append(await clock.run_in_thread(None, _slow_now, clock, 0.2))
        await clock.sleep(0.5)  # a request made after the thread's work

    await asyncio.gather(render(), clock.sleep(1.0))
    assert seen == [0.0]
    assert clock.now_s() == 1.0


def _slow_now(clock: SimClock, wall_s: float) -> float:
    time.sleep(wall_s)
    return clock.now_s()


async def test_thread_results_come_back_in_start_order_and_errors_propagate():
    clock = SimClock()
    order: list[str] = []

    async def job(name: str, wall_s: float) -> None:
        await clock.run_in_thread(None, time.sleep, wall_s)
        order.append(name)

    await asyncio.gather(job("slow", 0.1), job("fast", 0.0))
    assert order == ["slow", "fast"]
    with pytest.raises(ZeroDivisionError):
        await clock.run_in_thread(None, lambda: 1 / 0)


def _overlap_log(delays_s: list[float]) -> list[tuple[str, float]]:
    """Concurrent devices with wall-time work (threads) of the given durations between
    their requests; returns who woke when."""
    clock = SimClock()
    woke: list[tuple[str, float]] = []

    async def device(name: str, period_s: float, n: int) -> None:
        for k in range(n):
            await clock.sleep(period_s)
            woke.append((name, clock.now_s()))
            await clock.run_in_thread(None, time.sleep, delays_s[k % len(delays_s)])

    async def main() -> None:
        await asyncio.gather(device("frames", 0.5, 4), device("move", 1.2, 1), device("z", 0.5, 2))

    asyncio.run(main())
    return woke


def test_concurrent_foreground_waits_overlap_deterministically_whatever_the_load():
    quiet = _overlap_log([0.0])
    loaded = _overlap_log([0.03, 0.0, 0.01, 0.02])  # uneven wall-clock work between requests
    assert quiet == loaded
    assert quiet == [
        ("frames", 0.5),
        ("z", 0.5),  # a tie: released in registration order
        ("frames", 1.0),
        ("z", 1.0),
        ("move", 1.2),
        ("frames", 1.5),
        ("frames", 2.0),
    ]


def test_advance_from_another_thread_releases_due_waiters():
    clock = SimClock()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(clock.sleep(3.0, background=True))
        await asyncio.sleep(0)
        await loop.run_in_executor(None, clock.advance, 3.0)
        await asyncio.wait_for(waiter, 1.0)
        return clock.now_s()

    assert asyncio.run(main()) == 3.0
