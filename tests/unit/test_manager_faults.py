"""Faults of the host under the manager: records that cannot be written (a full disk, as
the store's own writes see it: ENOSPC from the one function that writes a record file),
and one sandbox's failure in the deadline timer. Fake runtime, fake clock; waits are on
the manager's notifications and log lines, never on elapsed time."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from fakes import FakeClock
from managed import T0, Platform, asked, expire, started

from wakeproxy.backends.base import SandboxState
from wakeproxy.platform.control import records
from wakeproxy.platform.control.records import NoSpace

S = SandboxState
RETRY = 5.0  # the manager's pause retry interval


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def platform(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Platform]:
    async with started(tmp_path, clock) as running:
        yield running


class Disk:
    """Makes record writes fail with ENOSPC, for every sandbox or for some."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full_for: Callable[[str], bool] = lambda sandbox_id: False
        real = records._write_whole

        def write(path: Path, data: bytes) -> None:
            if self.full_for(path.stem):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data)

        monkeypatch.setattr(records, "_write_whole", write)

    def fill(self, *sandbox_ids: str) -> None:
        self.full_for = (lambda sid: sid in sandbox_ids) if sandbox_ids else (lambda sid: True)

    def free(self) -> None:
        self.full_for = lambda sandbox_id: False


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    return Disk(monkeypatch)


def saved_state(platform: Platform, sandbox_id: str) -> str:
    path = platform.data_dir / "records" / f"{sandbox_id}.json"
    return str(json.loads(path.read_text())["state"])


def failures(caplog: pytest.LogCaptureFixture, sandbox_id: str, what: str) -> int:
    return sum(
        1
        for r in caplog.records
        if getattr(r, "event", None) == "failed"
        and getattr(r, "sandbox_id", None) == sandbox_id
        and getattr(r, "what", None) == what
    )


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (bounded in loop turns, not in time)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_full_disk_leaves_timed_out_sandboxes_running_and_retries_their_pause(
    platform: Platform, clock: FakeClock, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wakeproxy.platform.sandboxes")
    first = (await platform.manager.create(asked(10))).sandbox_id
    second = (await platform.manager.create(asked(10))).sandbox_id
    disk.fill()
    # The reserve is real: drain it, so that these writes really fail.
    platform.manager._store._reserve.size = 0

    await expire(platform, clock, 10)
    await until(lambda: failures(caplog, first, "pause") and failures(caplog, second, "pause"))
    for sandbox_id in (first, second):  # not half-done: running, as their records say
        assert platform.manager.get(sandbox_id).state is S.RUNNING  # type: ignore[union-attr]
        assert saved_state(platform, sandbox_id) == "running"
    assert platform.runtime.count("freeze") == 0

    await expire(platform, clock, RETRY)  # still full: tried again, and again not done
    await until(lambda: failures(caplog, first, "pause") == 2)
    timeouts = [r for r in caplog.records if getattr(r, "event", None) == "timeout"]
    assert sorted(r.sandbox_id for r in timeouts) == sorted([first, second])  # type: ignore[attr-defined]
    disk.free()
    await expire(platform, clock, RETRY)
    for sandbox_id in (first, second):
        await platform.log.wait_for(sandbox_id, S.PAUSED)
        assert saved_state(platform, sandbox_id) == "paused"


async def test_one_sandbox_whose_record_fails_does_not_hold_up_the_others(
    platform: Platform, clock: FakeClock, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = (await platform.manager.create(asked(10))).sandbox_id
    others = [(await platform.manager.create(asked(10 + i))).sandbox_id for i in range(3)]
    disk.fill(stuck)
    platform.manager._store._reserve.size = 0
    for step in range(4):
        await expire(platform, clock, 10 if step == 0 else 1)
        if step > 0:
            await platform.log.wait_for(others[step - 1], S.PAUSED)
    assert failures(caplog, stuck, "pause") == 1
    assert platform.manager.get(stuck).state is S.RUNNING  # type: ignore[union-attr]


async def test_a_failure_in_one_timeout_never_stops_the_timer(
    platform: Platform, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = (await platform.manager.create(asked(10))).sandbox_id
    fine = (await platform.manager.create(asked(10))).sandbox_id

    def busy(sandbox_id: str) -> bool:
        if sandbox_id == broken:
            raise RuntimeError("the proxy's in-flight table is broken")
        return False

    platform.manager.set_busy_check(busy)
    await expire(platform, clock, 10)
    await platform.log.wait_for(fine, S.PAUSED)
    assert any("the timeout of sandbox" in r.getMessage() for r in caplog.records)
    platform.manager.set_busy_check(lambda sandbox_id: False)
    await expire(platform, clock, RETRY)
    await platform.log.wait_for(broken, S.PAUSED)


async def test_a_pause_whose_outcome_cannot_be_recorded_is_still_true_and_rewritten(
    platform: Platform, clock: FakeClock, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()
    disk.fill()
    platform.manager._store._reserve.size = 0
    gate.set()
    assert (await pausing).state is S.PAUSED  # the processes are frozen: so it is paused
    # On disk it is still `pausing`, which a restarted platform would finish: no lie.
    assert saved_state(platform, sandbox_id) == "pausing"
    assert failures(caplog, sandbox_id, "record") == 1
    disk.free()
    await expire(platform, clock, RETRY)
    await until(lambda: saved_state(platform, sandbox_id) == "paused")


async def test_on_a_full_disk_the_reserve_keeps_transitions_going(
    platform: Platform, clock: FakeClock, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox_id = (await platform.manager.create(asked(10))).sandbox_id
    reserve = platform.manager._store._reserve
    before = reserve.size
    assert before > 0
    reserve_file = platform.data_dir / "records.reserve"
    assert reserve_file.stat().st_size == before
    disk.fill()
    # The store gives back a slice of the reserve and writes again: the real file system
    # here is not full, so the second write is let through as the freed space would be.
    disk.full_for = _fails_once()
    await expire(platform, clock, 10)
    await platform.log.wait_for(sandbox_id, S.PAUSED)
    assert saved_state(platform, sandbox_id) == "paused"
    [drawn] = [r for r in caplog.records if "written from the platform's reserve" in r.message]
    assert f"({(before - 32 * 1024) // 1024} KiB left)" in drawn.message
    # Space was there for the next write, and the reserve was made whole again.
    assert reserve_file.stat().st_size == before


def _fails_once() -> Callable[[str], bool]:
    calls = iter([True])
    return lambda sandbox_id: next(calls, False)


async def test_api_changes_and_creates_are_refused_on_a_full_disk_and_kill_is_not(
    platform: Platform, disk: Disk
) -> None:
    sandbox_id = (await platform.manager.create(asked(60))).sandbox_id
    end_at = platform.manager.get(sandbox_id).life.end_at  # type: ignore[union-attr]
    disk.fill()
    platform.manager._store._reserve.size = 0
    with pytest.raises(NoSpace, match="not enough disk space"):
        platform.manager.set_timeout(sandbox_id, 600)
    assert platform.manager.get(sandbox_id).life.end_at == end_at  # type: ignore[union-attr]
    with pytest.raises(NoSpace, match="not enough disk space"):
        await platform.manager.pause(sandbox_id)
    assert platform.manager.get(sandbox_id).state is S.RUNNING  # type: ignore[union-attr]
    with pytest.raises(NoSpace, match="not enough disk space"):
        await platform.manager.create(asked())
    assert platform.runtime.count("start") == 1  # the refused create started nothing
    assert [p.name for p in (platform.data_dir / "sandboxes").iterdir()] == [sandbox_id]

    await platform.manager.kill(sandbox_id)  # frees space: never refused for want of it
    assert sandbox_id not in platform.runtime.alive
    assert not (platform.data_dir / "sandboxes" / sandbox_id).exists()
    assert not list((platform.data_dir / "records").glob("*.tmp"))


async def test_lifecycle_events_are_one_line_each_with_id_and_duration(
    platform: Platform, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wakeproxy.platform.sandboxes")
    sandbox_id = (await platform.manager.create(asked(10))).sandbox_id
    await expire(platform, clock, 10)
    await platform.log.wait_for(sandbox_id, S.PAUSED)
    await platform.manager.resume(sandbox_id, auto=True)
    await platform.manager.pause(sandbox_id)
    await platform.manager.resume(sandbox_id, seconds=30)
    await platform.manager.kill(sandbox_id)
    lines = [r for r in caplog.records if r.name == "wakeproxy.platform.sandboxes"]
    seen = [(r.event, getattr(r, "trigger", getattr(r, "action", None))) for r in lines]  # type: ignore[attr-defined]
    assert seen == [
        ("create", None),
        ("timeout", "pause"),
        ("pause", "timeout"),
        ("resume", "traffic"),
        ("pause", "api"),
        ("resume", "api"),
        ("kill", "api"),
    ]
    for line in lines:
        assert line.sandbox_id == sandbox_id  # type: ignore[attr-defined]
        assert line.duration >= 0  # type: ignore[attr-defined]
        assert line.getMessage() == f"sandbox {line.event}"  # type: ignore[attr-defined]
    assert lines[-1].lived == 10  # type: ignore[attr-defined]
