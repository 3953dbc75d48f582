"""A `SandboxManager` over the fake runtime and a fake clock, for the manager's tests.

`started` gives a started manager in a data dir whose runtime is a `FakeRuntime` (test
modules make it their ``platform`` fixture, with a `FakeClock` at `T0`); ``expire``
moves the clock and lets the deadline timer see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fakes import FakeClock
from fakes_runtime import FakeRuntime, StateLog

from wakeproxy.platform.control.lifecycle import Policy
from wakeproxy.platform.control.manager import CreateRequest, SandboxManager

__all__ = ["T0", "Platform", "asked", "expire", "started"]

T0 = 1_700_000_000.0


def asked(timeout: float = 60, on_timeout: str = "pause", **fields: object) -> CreateRequest:
    auto = bool(fields.pop("auto_resume", on_timeout == "pause"))
    extends = bool(fields.pop("activity_extends", False))
    policy = Policy(timeout, on_timeout, auto, extends)  # type: ignore[arg-type]
    return CreateRequest("base", policy, **fields)  # type: ignore[arg-type]


class Platform:
    def __init__(self, data_dir: Path, runtime: FakeRuntime, clock: Callable[[], float]) -> None:
        self.data_dir = data_dir
        self.runtime = runtime
        self.clock = clock
        self.log = StateLog()
        self.manager = SandboxManager(runtime, data_dir, clock=clock)
        self.manager.subscribe(self.log)

    async def restart(self, survivors: set[str] | None = None) -> Platform:
        """Close this manager (sandboxes keep running) and start a new one on its records."""
        await self.manager.close(kill_all=False)
        self.runtime.survivors = survivors
        self.runtime.forget()
        again = Platform(self.data_dir, self.runtime, self.clock)
        await again.manager.start()
        return again


async def expire(platform: Platform, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    platform.manager.reschedule()


@asynccontextmanager
async def started(data_dir: Path, clock: FakeClock) -> AsyncIterator[Platform]:
    running = Platform(data_dir, FakeRuntime(), clock)
    await running.manager.start()
    try:
        yield running
    finally:
        await running.manager.close(kill_all=True)
