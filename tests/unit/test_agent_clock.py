"""Running time of a sandbox: a freeze is not counted against command timeouts."""

from __future__ import annotations

import asyncio
import time

from wakeproxy.platform.agent.clock import ActiveClock


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_observed_in_small_steps_counts_in_full() -> None:
    fake = FakeTime()
    clock = ActiveClock(fake, max_gap=1.5)
    for _ in range(10):
        fake.now += 0.5
        clock.observe()
    assert clock.observe() == 5.0


def test_a_long_gap_is_a_freeze_and_counts_only_up_to_the_largest_gap() -> None:
    fake = FakeTime()
    clock = ActiveClock(fake, max_gap=1.5)
    fake.now += 0.5
    assert clock.observe() == 0.5
    fake.now += 3600  # paused for an hour
    assert clock.observe() == 2.0
    fake.now += 0.5
    assert clock.observe() == 2.5


def test_time_never_runs_backwards() -> None:
    fake = FakeTime()
    clock = ActiveClock(fake)
    fake.now -= 10
    assert clock.observe() == 0.0


async def test_sleep_lasts_its_running_time() -> None:
    clock = ActiveClock()
    ticker = asyncio.create_task(clock.tick(0.01))
    try:
        started = time.monotonic()
        await clock.sleep(0.1)
        assert time.monotonic() - started >= 0.09  # never shorter; how much longer is load
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
