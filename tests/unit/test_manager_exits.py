"""Sandboxes that end by themselves, as the manager hears of them from its runtime: they end
as killed, with the exit logged and passed on. Fake runtime and fake clock; waits are on
the manager's own state notifications."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import FakeClock
from managed import T0, Platform, asked, started

from wakeproxy.backends.base import SandboxState
from wakeproxy.errors import NotFound
from wakeproxy.platform.contracts import SandboxExit

S = SandboxState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def platform(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Platform]:
    async with started(tmp_path, clock) as running:
        yield running


def lifecycle_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "wakeproxy.platform.sandboxes" and getattr(r, "event", None) == event
    ]


async def test_a_sandbox_that_ends_by_itself_ends_as_killed_and_is_logged(
    platform: Platform, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    heard: list[SandboxExit] = []
    platform.manager.subscribe_exits(heard.append)
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    other = (await platform.manager.create(asked())).sandbox_id
    clock.advance(42)

    platform.runtime.end_by_itself(sandbox_id, "oom")

    assert platform.manager.get(sandbox_id) is None  # at once: the API says not found
    await platform.log.wait_for(sandbox_id, S.KILLED)
    with pytest.raises(NotFound):
        await platform.manager.pause(sandbox_id)
    assert heard == [SandboxExit(sandbox_id, "oom", "ended (oom)")]
    [line] = lifecycle_lines(caplog, "exit")
    assert (line.sandbox_id, line.reason, line.duration) == (sandbox_id, "oom", 42)  # type: ignore[attr-defined]
    assert line.levelno == logging.WARNING
    await platform.manager.close()  # waits for the kill under way
    [kill] = lifecycle_lines(caplog, "kill")
    assert (kill.sandbox_id, kill.trigger) == (sandbox_id, "exit")  # type: ignore[attr-defined]
    assert platform.runtime.count("kill", sandbox_id) == 1  # what it left is ended
    assert not (platform.data_dir / "records" / f"{sandbox_id}.json").exists()
    assert other in platform.runtime.alive  # the others are untouched


async def test_an_exit_during_a_pause_waits_for_it_then_ends_the_sandbox(
    platform: Platform,
) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()

    platform.runtime.end_by_itself(sandbox_id, "signal")
    await asyncio.sleep(0)
    assert platform.runtime.count("kill", sandbox_id) == 0  # one operation at a time
    gate.set()
    await asyncio.wait([pausing])
    await platform.log.wait_for(sandbox_id, S.KILLED)
    assert platform.manager.get(sandbox_id) is None


async def test_an_exit_of_a_sandbox_being_killed_is_not_a_second_kill(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["kill"] = asyncio.Event()
    killing = asyncio.create_task(platform.manager.kill(sandbox_id))
    await platform.runtime.entered["kill"].wait()
    platform.runtime.end_by_itself(sandbox_id, "signal")
    gate.set()
    await killing
    assert platform.runtime.count("kill", sandbox_id) == 1
    assert lifecycle_lines(caplog, "exit") == []
