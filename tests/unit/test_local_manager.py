"""The sandbox manager and `LocalBackend` over a fake runtime and a fake clock.

Deadlines are driven by moving the fake clock and calling `reschedule()`; waiting is on
the manager's own state notifications, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from pathlib import Path

import pytest
from fakes import FakeClock
from fakes_runtime import AGENT_PORT_WHEN_SHARED, FakeRuntime
from managed import T0, Platform, asked, expire, started

from wakeproxy.backends.base import AGENT_PORT, SandboxInfo, SandboxState
from wakeproxy.errors import LimitExceeded, NotAllowed, NotFound, Unavailable
from wakeproxy.platform.contracts import RuntimeInfo
from wakeproxy.platform.control.backend import LocalBackend
from wakeproxy.platform.control.lifecycle import IllegalTransition
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.control.records import RecordStore, new_record

S = SandboxState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def platform(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Platform]:
    async with started(tmp_path, clock) as running:
        yield running


# -- create ------------------------------------------------------------------------------------


async def test_create_starts_the_runtime_with_the_spec_and_records_the_sandbox(
    platform: Platform,
) -> None:
    record = await platform.manager.create(asked(envs={"A": "1"}, allow_internet=False))
    spec = platform.runtime.specs[record.sandbox_id]
    assert spec.root == platform.data_dir / "sandboxes" / record.sandbox_id
    assert (spec.root / "home").is_dir()
    assert (dict(spec.envs), spec.allow_internet) == ({"A": "1"}, False)
    assert spec.agent_token is not None
    assert spec.agent_token == record.envd_token
    assert (record.state, record.life.version, record.life.end_at) == (S.RUNNING, 1, T0 + 60)
    saved = json.loads((platform.data_dir / "records" / f"{record.sandbox_id}.json").read_text())
    assert (saved["state"], saved["runtime"]["pid"]) == ("running", record.runtime.pid)  # type: ignore[union-attr]


async def test_an_insecure_public_sandbox_has_no_tokens(platform: Platform) -> None:
    record = await platform.manager.create(asked(secure=False))
    assert (record.envd_token, record.traffic_token) == (None, None)
    private = await platform.manager.create(asked(allow_public_traffic=False))
    assert private.traffic_token
    assert private.info().traffic_token == private.traffic_token


async def test_a_failed_start_leaves_nothing_behind(platform: Platform) -> None:
    platform.runtime.errors["start"].append(OSError("no such binary"))
    with pytest.raises(Unavailable, match="no such binary"):
        await platform.manager.create(asked())
    assert platform.manager.records() == []
    assert list((platform.data_dir / "records").iterdir()) == []
    assert list((platform.data_dir / "sandboxes").iterdir()) == []


async def test_the_sandbox_limit_is_enforced(tmp_path: Path, clock: FakeClock) -> None:
    manager = SandboxManager(FakeRuntime(), tmp_path, clock=clock, max_sandboxes=1)
    await manager.start()
    try:
        await manager.create(asked())
        with pytest.raises(LimitExceeded):
            await manager.create(asked())
    finally:
        await manager.close(kill_all=True)


# -- single-flight transitions -----------------------------------------------------------------


async def test_pause_and_resume_publish_every_state(platform: Platform) -> None:
    record = await platform.manager.create(asked())
    await platform.manager.pause(record.sandbox_id)
    resumed, was_paused = await platform.manager.resume(record.sandbox_id, seconds=120)
    assert was_paused
    assert resumed.life.end_at == T0 + 120
    assert platform.log.states(record.sandbox_id) == [
        S.RUNNING,
        S.PAUSING,
        S.PAUSED,
        S.RESUMING,
        S.RUNNING,
    ]
    assert [i.version for i in platform.log.seen] == [1, 2, 3, 4, 5]
    assert platform.runtime.frozen == set()


async def test_pausing_a_paused_sandbox_is_refused(platform: Platform) -> None:
    record = await platform.manager.create(asked())
    await platform.manager.pause(record.sandbox_id)
    with pytest.raises(IllegalTransition, match="paused"):
        await platform.manager.pause(record.sandbox_id)
    assert platform.runtime.count("freeze") == 1


async def test_concurrent_resumes_share_one_thaw(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    await platform.manager.pause(sandbox_id)
    gate = platform.runtime.gates["thaw"] = asyncio.Event()
    resumes = [
        asyncio.create_task(platform.manager.resume(sandbox_id, auto=True)) for _ in range(5)
    ]
    await platform.runtime.entered["thaw"].wait()
    gate.set()
    results = await asyncio.gather(*resumes)
    assert platform.runtime.count("thaw") == 1
    assert all(resumed and r.state is S.RUNNING for r, resumed in results)


async def test_a_resume_during_a_pause_waits_for_it_then_resumes(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()
    resuming = asyncio.create_task(platform.manager.resume(sandbox_id, auto=True))
    await asyncio.sleep(0)
    assert not resuming.done()
    assert platform.runtime.count("thaw") == 0
    gate.set()
    record, resumed = await resuming
    await pausing
    assert resumed
    assert record.state is S.RUNNING
    assert [op for op, _ in platform.runtime.calls if op != "start"] == ["freeze", "thaw"]


async def test_concurrent_pauses_share_one_freeze(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pauses = [asyncio.create_task(platform.manager.pause(sandbox_id)) for _ in range(3)]
    await platform.runtime.entered["freeze"].wait()
    gate.set()
    assert {r.state for r in await asyncio.gather(*pauses)} == {S.PAUSED}
    assert platform.runtime.count("freeze") == 1


async def test_a_cancelled_caller_does_not_cancel_the_transition(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    caller = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()
    caller.cancel()
    gate.set()
    await platform.log.wait_for(sandbox_id, S.PAUSED)


async def test_a_failed_resume_leaves_it_paused_and_says_so(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    await platform.manager.pause(sandbox_id)
    platform.runtime.errors["thaw"].append(OSError("cgroup is gone"))
    with pytest.raises(Unavailable, match="cgroup is gone"):
        await platform.manager.resume(sandbox_id, auto=True)
    assert platform.manager.get(sandbox_id).state is S.PAUSED  # type: ignore[union-attr]


async def test_auto_resume_is_refused_when_off_but_connect_resumes(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked(auto_resume=False))).sandbox_id
    await platform.manager.pause(sandbox_id)
    with pytest.raises(NotAllowed, match="auto-resume is off"):
        await platform.manager.resume(sandbox_id, auto=True)
    record, resumed = await platform.manager.resume(sandbox_id, seconds=30)
    assert resumed
    assert record.state is S.RUNNING


async def test_kill_during_a_pause_waits_for_it_and_is_final(platform: Platform) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()
    killing = asyncio.create_task(platform.manager.kill(sandbox_id))
    await asyncio.sleep(0)
    assert platform.runtime.count("kill") == 0
    gate.set()
    await asyncio.gather(pausing, killing)
    assert platform.manager.get(sandbox_id) is None
    assert sandbox_id not in platform.runtime.alive
    assert not (platform.data_dir / "sandboxes" / sandbox_id).exists()
    for attempt in (platform.manager.kill, platform.manager.pause):
        with pytest.raises(NotFound):
            await attempt(sandbox_id)
    assert platform.log.states(sandbox_id)[-1] is S.KILLED


# -- timers ------------------------------------------------------------------------------------


async def test_the_timeout_pauses_and_auto_resume_restarts_the_cycle(
    platform: Platform, clock: FakeClock
) -> None:
    backend = LocalBackend(platform.manager)
    sandbox_id = (await platform.manager.create(asked(60))).sandbox_id
    for cycle in (1, 2):
        await expire(platform, clock, 59)
        await asyncio.sleep(0)
        assert (await backend.get(sandbox_id)).state is S.RUNNING  # type: ignore[union-attr]
        await expire(platform, clock, 1)
        await platform.log.wait_for(sandbox_id, S.PAUSED, count=cycle)
        clock.advance(1000)  # paused sandboxes do not expire
        info = await backend.resume(sandbox_id)
        assert (info.state, info.end_at) == (S.RUNNING, clock.now + 60)
    assert platform.runtime.count("freeze") == 2


async def test_the_kill_timeout_kills(platform: Platform, clock: FakeClock) -> None:
    sandbox_id = (await platform.manager.create(asked(30, "kill"))).sandbox_id
    await expire(platform, clock, 30)
    await platform.log.wait_for(sandbox_id, S.KILLED)
    await platform.manager.close()  # lets the kill finish
    assert platform.runtime.count("kill", sandbox_id) == 1
    assert not (platform.data_dir / "records" / f"{sandbox_id}.json").exists()


async def test_the_timer_sleeps_until_a_shortened_deadline(tmp_path: Path) -> None:
    """Real clock, tiny timeout: the one timer task must wake for the new deadline."""
    platform = Platform(tmp_path, FakeRuntime(), __import__("time").time)
    await platform.manager.start()
    try:
        sandbox_id = (await platform.manager.create(asked(3600))).sandbox_id
        platform.manager.set_timeout(sandbox_id, 0.05)
        await platform.log.wait_for(sandbox_id, S.PAUSED)
    finally:
        await platform.manager.close(kill_all=True)


async def test_a_timed_pause_that_fails_is_retried_later(
    platform: Platform, clock: FakeClock
) -> None:
    sandbox_id = (await platform.manager.create(asked(10))).sandbox_id
    platform.runtime.errors["freeze"].append(OSError("busy"))
    await expire(platform, clock, 10)
    await platform.log.wait_for(sandbox_id, S.RUNNING, count=2)  # the pause failed
    assert platform.runtime.count("freeze") == 1
    await expire(platform, clock, 5)
    await platform.log.wait_for(sandbox_id, S.PAUSED)
    assert platform.runtime.count("freeze") == 2


async def test_activity_extends_the_timeout_only_when_asked(
    platform: Platform, clock: FakeClock
) -> None:
    backend = LocalBackend(platform.manager)
    idle = (await platform.manager.create(asked(60, activity_extends=True))).sandbox_id
    fixed = (await platform.manager.create(asked(60))).sandbox_id
    await backend.touch({idle: T0 + 50, fixed: T0 + 50, "unknown": T0})
    assert platform.manager.get(idle).life.end_at == T0 + 110  # type: ignore[union-attr]
    await expire(platform, clock, 60)
    await platform.log.wait_for(fixed, S.PAUSED)
    assert platform.manager.get(idle).state is S.RUNNING  # type: ignore[union-attr]


# -- restart -----------------------------------------------------------------------------------


def test_a_record_keeps_every_runtime_field_across_a_save(tmp_path: Path) -> None:
    """What `Runtime.adopt` needs to recognise a sandbox must come back unchanged."""
    samples: dict[str, object] = {"int": 7, "bool": False, "str": "x", "tuple[str, ...]": ("w",)}
    runtime = RuntimeInfo(**{f.name: samples[str(f.type)] for f in fields(RuntimeInfo)})  # type: ignore[arg-type]
    record = new_record(asked(), "abc", tmp_path / "abc", T0)
    record = replace(record, runtime=runtime, metadata={"k": "v"}, envs={"E": "1"})
    store = RecordStore(tmp_path / "records")
    store.save(record)
    assert store.load_all() == [record]


def test_an_unreadable_record_is_set_aside(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    assert store.load_all() == []
    assert (tmp_path / "broken.broken").exists()


async def test_a_restart_re_adopts_live_sandboxes_and_ends_gone_ones(
    platform: Platform, clock: FakeClock
) -> None:
    manager = platform.manager
    running = await manager.create(asked(60))
    paused = (await manager.create(asked(60))).sandbox_id
    await manager.pause(paused)
    gone = (await manager.create(asked(60))).sandbox_id
    again = await platform.restart(survivors={running.sandbox_id, paused})

    assert platform.runtime.count("kill") == 0  # the restart itself killed nothing
    assert {sid for op, sid in platform.runtime.calls if op == "adopt"} == {
        running.sandbox_id,
        paused,
        gone,
    }
    adopted = again.manager.get(running.sandbox_id)
    assert adopted is not None
    assert adopted.life == running.life
    assert again.manager.get(paused).state is S.PAUSED  # type: ignore[union-attr]
    assert again.manager.get(gone) is None
    assert not (platform.data_dir / "records" / f"{gone}.json").exists()
    assert not (platform.data_dir / "sandboxes" / gone).exists()
    try:
        await expire(again, clock, 60)  # timers came back with the records
        await again.log.wait_for(running.sandbox_id, S.PAUSED)
        record, resumed = await again.manager.resume(paused, seconds=60)
        assert resumed
        assert record.state is S.RUNNING
    finally:
        await again.manager.close(kill_all=True)
    assert platform.runtime.alive == {}


async def test_a_restart_finishes_a_pause_that_was_under_way(
    platform: Platform, clock: FakeClock, tmp_path: Path
) -> None:
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    gate = platform.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(platform.manager.pause(sandbox_id))
    await platform.runtime.entered["freeze"].wait()
    # The platform "crashes" here: a copy of its data dir is what a new process finds.
    crashed = tmp_path / "after-crash"
    shutil.copytree(platform.data_dir, crashed, ignore=shutil.ignore_patterns("after-crash"))
    runtime = FakeRuntime()
    runtime.alive = dict(platform.runtime.alive)
    again = Platform(crashed, runtime, clock)
    await again.manager.start()
    try:
        await again.log.wait_for(sandbox_id, S.PAUSED)
        assert runtime.count("freeze", sandbox_id) == 1
    finally:
        await again.manager.close(kill_all=True)
        gate.set()
        await pausing


async def test_a_record_whose_start_never_finished_is_killed_at_the_next_start(
    platform: Platform, clock: FakeClock
) -> None:
    gate = platform.runtime.gates["start"] = asyncio.Event()
    creating = asyncio.create_task(platform.manager.create(asked()))
    await platform.runtime.entered["start"].wait()
    [path] = (platform.data_dir / "records").glob("*.json")
    copy = path.read_bytes()
    gate.set()
    await creating
    await platform.manager.close(kill_all=True)
    path.write_bytes(copy)  # as if the platform had died during the start
    runtime = FakeRuntime()
    again = SandboxManager(runtime, platform.data_dir, clock=clock)
    await again.start()
    try:
        assert again.records() == []
        assert runtime.count("kill", path.stem) == 1
        assert not path.exists()
    finally:
        await again.close()


async def test_close_with_kill_all_kills_every_sandbox(platform: Platform) -> None:
    for _ in range(3):
        await platform.manager.create(asked())
    await platform.manager.close(kill_all=True)
    assert platform.runtime.alive == {}
    assert platform.runtime.count("kill") == 3
    assert list((platform.data_dir / "records").iterdir()) == []


# -- LocalBackend ------------------------------------------------------------------------------


async def test_the_backend_reports_state_and_forgets_killed_sandboxes(platform: Platform) -> None:
    backend = LocalBackend(platform.manager)
    record = await platform.manager.create(asked(auto_resume=True))
    info = await backend.get(record.sandbox_id)
    assert info is not None
    assert info.lifecycle.auto_resume
    assert info.lifecycle.on_timeout == "pause"
    assert info.agent_port == AGENT_PORT
    await platform.manager.kill(record.sandbox_id)
    assert await backend.get(record.sandbox_id) is None
    with pytest.raises(NotFound, match="The sandbox was not found"):
        await backend.resume(record.sandbox_id)


async def test_watchers_learn_every_change_and_killed_as_none(platform: Platform) -> None:
    heard: list[tuple[str, SandboxInfo | None]] = []
    LocalBackend(platform.manager).watch(lambda sid, info: heard.append((sid, info)))
    sandbox_id = (await platform.manager.create(asked())).sandbox_id
    await platform.manager.pause(sandbox_id)
    await platform.manager.kill(sandbox_id)
    states = [None if info is None else info.state for _, info in heard]
    assert states == [S.RUNNING, S.PAUSING, S.PAUSED, None]


async def test_upstream_opens_sockets_through_the_runtime(tmp_path: Path, clock: FakeClock) -> None:
    server = await asyncio.start_server(_hello, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    runtime = FakeRuntime(isolated=False)
    manager = SandboxManager(runtime, tmp_path, clock=clock)
    await manager.start()
    try:
        backend = LocalBackend(manager)
        sandbox_id = (await manager.create(asked())).sandbox_id
        runtime.ports[(sandbox_id, AGENT_PORT_WHEN_SHARED)] = address
        info = await backend.get(sandbox_id)
        assert info is not None
        agent = await backend.upstream(info, AGENT_PORT)
        assert agent.opener is not None
        assert agent.port == AGENT_PORT
        with await agent.opener() as sock:
            reader, writer = await asyncio.open_connection(sock=sock)
            assert await reader.readline() == b"hello\n"
            writer.close()
        other = await backend.upstream(info, 3000)
        assert other.opener is not None
        with pytest.raises(ConnectionRefusedError):
            await other.opener()
        await manager.pause(sandbox_id)
        with pytest.raises(ConnectionRefusedError, match="not running"):
            await agent.opener()  # a frozen process would accept and never answer
    finally:
        await manager.close(kill_all=True)
        server.close()
        await server.wait_closed()


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello\n")
    await writer.drain()
    writer.close()


async def test_a_floor_on_the_auto_resume_window_follows_e2b(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With `auto_resume_min_timeout=300` (E2B's rule) a sandbox woken by traffic runs
    max(5 min, its timeout); `connect` keeps the window it asks for."""
    manager = SandboxManager(FakeRuntime(), tmp_path, clock=clock, auto_resume_min_timeout=300)
    await manager.start()
    try:
        short = (await manager.create(asked(60))).sandbox_id
        long = (await manager.create(asked(900))).sandbox_id
        for sandbox_id, window in ((short, 300), (long, 900)):
            await manager.pause(sandbox_id)
            record, _ = await manager.resume(sandbox_id, auto=True)
            assert record.life.end_at == clock.now + window
        await manager.pause(short)
        record, _ = await manager.resume(short, seconds=30)
        assert record.life.end_at == clock.now + 30
    finally:
        await manager.close(kill_all=True)
