"""`SharedBackend`: replicas sharing one store — one resume across them, shared lookups,
announced changes, activity reported once — and what happens when the store is down.

Replicas are `SharedBackend`s in this process over one `MemoryStore(shared=True)`, which
keeps the Redis store's rules (the contract tests check both against each other)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from fakes import FakeBackend

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.errors import NotFound, StoreUnavailable, Unavailable
from wakeproxy.state.memory import MemoryStore
from wakeproxy.state.records import Lease, Record, StateChanged, WakeFailed
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.shared import SharedBackend
from wakeproxy.state.wake import ends_wait, woken

S = SandboxState
LEASE_TTL = 0.2
GUARD = 10.0  # only turns a hang into a failure


class FlakyStore(MemoryStore):
    """A shared memory store that can be switched off: while down it is unhealthy and
    every call raises `StoreUnavailable`, as the Redis store does."""

    def __init__(self) -> None:
        super().__init__(shared=True, record_ttl=60.0)
        self.down = False
        self._health: list[Callable[[bool], None]] = []

    @property
    def healthy(self) -> bool:
        return not self.down

    def watch_health(self, listener: Callable[[bool], None]) -> None:
        self._health.append(listener)

    def set_down(self, down: bool) -> None:
        self.down = down
        for listener in self._health:
            listener(not down)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("switched off")

    async def read(self, sandbox_id: str) -> Record | None:
        self._check()
        return await super().read(sandbox_id)

    async def write(self, record: Record, origin: str, *, announce: bool = False) -> bool:
        self._check()
        return await super().write(record, origin, announce=announce)

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        self._check()
        return await super().acquire(name, ttl)

    async def lease_left(self, name: str) -> float:
        self._check()
        return await super().lease_left(name)

    async def add_activity(self, activity: Mapping[str, float]) -> None:
        self._check()
        await super().add_activity(activity)


Make = Callable[..., SharedBackend]


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def replica(store: FlakyStore, backend: FakeBackend) -> AsyncIterator[Make]:
    """`replica(backend=..., store=...)`: one more replica; all are closed after the test."""
    made: list[SharedBackend] = []

    def make(**options: Any) -> SharedBackend:
        settings = StateSettings(lease_ttl=LEASE_TTL, wake_wait=GUARD)
        shared = SharedBackend(
            options.pop("backend", backend), options.pop("store", store), settings, **options
        )
        made.append(shared)
        return shared

    yield make
    for shared in made:
        await shared.close()


class Heard:
    """What a replica tells its coordinator (its `watch` listener)."""

    def __init__(self, replica: SharedBackend) -> None:
        self.changes: list[tuple[str, SandboxInfo | None]] = []
        self.event = asyncio.Event()
        replica.watch(self._hear)

    def _hear(self, sandbox_id: str, info: SandboxInfo | None) -> None:
        self.changes.append((sandbox_id, info))
        self.event.set()

    async def next(self) -> tuple[str, SandboxInfo | None]:
        async with asyncio.timeout(GUARD):
            while not self.changes:
                self.event.clear()
                await self.event.wait()
        return self.changes.pop(0)


async def settle() -> None:
    """Let delivered notices and spawned writes run."""
    for _ in range(5):
        await asyncio.sleep(0)


def running_at(version: int, sandbox_id: str = "a") -> Record:
    return Record.of(sandbox_id, SandboxInfo(sandbox_id, S.RUNNING, version=version))


# -- one wake ---------------------------------------------------------------------------------


async def test_replicas_waking_one_sandbox_call_resume_once(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    replicas = [replica() for _ in range(3)]
    for one in replicas:
        assert (await one.get("a")).state is S.PAUSED  # type: ignore[union-attr]
    wakes = [asyncio.create_task(one.resume("a")) for one in replicas]
    await asyncio.wait_for(backend.resume_started.wait(), GUARD)
    await asyncio.sleep(LEASE_TTL * 2)  # longer than the lease: the leader renews it
    assert backend.total_resumes == 1
    backend.resume_gate.set()
    woken = await asyncio.wait_for(asyncio.gather(*wakes), GUARD)
    assert {info.state for info in woken} == {S.RUNNING}
    assert len({info.version for info in woken}) == 1
    assert backend.total_resumes == 1


async def test_a_follower_takes_over_the_wake_of_a_replica_that_died(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    dead = await store.acquire("wake:a", LEASE_TTL)  # held by a replica that is gone
    assert dead is not None
    survivor = replica()
    await survivor.get("a")
    woken = await asyncio.wait_for(survivor.resume("a"), GUARD)
    assert woken.state is S.RUNNING
    assert backend.total_resumes == 1


async def test_a_follower_is_released_by_the_leaders_notice_without_calling_the_backend(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    leader = await store.acquire("wake:a", GUARD)  # another replica, resuming
    assert leader is not None
    follower = replica()
    await follower.get("a")
    waiting = asyncio.create_task(follower.resume("a"))
    await settle()
    assert not waiting.done()
    await store.write(running_at(2), "leader", announce=True)
    woken = await asyncio.wait_for(waiting, GUARD)
    assert (woken.state, woken.version) == (S.RUNNING, 2)
    assert backend.total_resumes == 0


async def test_a_replica_that_gets_the_lease_after_the_wake_ended_follows_it(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    late = replica()
    await late.get("a")
    # Another replica resumed it and released the lease before this one asked for it; its
    # notice is still on the way (written under this replica's origin, which it skips).
    await store.write(running_at(5), late.origin, announce=True)
    woken = await asyncio.wait_for(late.resume("a"), GUARD)
    assert (woken.state, woken.version) == (S.RUNNING, 5)
    assert backend.total_resumes == 0
    assert late.followed("a")  # not counted as a wake this replica made


async def test_a_resume_asked_for_after_word_that_the_sandbox_runs_calls_nothing(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    late = replica()
    assert (await late.get("a")).state is S.PAUSED  # type: ignore[union-attr]
    # Another replica's wake, heard through the backend's events before this replica's
    # resume job ran.
    backend.set_state("a", S.RUNNING)
    await settle()
    woken = await asyncio.wait_for(late.resume("a"), GUARD)
    assert woken.state is S.RUNNING
    assert backend.total_resumes == 0
    assert late.followed("a")
    # Asleep again: the next resume is this replica's own.
    backend.set_state("a", S.PAUSED)
    await settle()
    assert (await asyncio.wait_for(late.resume("a"), GUARD)).state is S.RUNNING
    assert backend.total_resumes == 1
    assert not late.followed("a")


async def test_a_failed_wake_fails_every_replica_waiting_for_it(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    backend.resume_errors.append(Unavailable("the control plane is down"))
    one, two = replica(), replica()
    wakes = [asyncio.create_task(r.resume("a")) for r in (one, two)]
    await asyncio.wait_for(backend.resume_started.wait(), GUARD)
    backend.resume_gate.set()
    results = await asyncio.wait_for(asyncio.gather(*wakes, return_exceptions=True), GUARD)
    assert all(isinstance(result, Unavailable) for result in results)
    assert {str(result) for result in results} == {"the control plane is down"}
    assert backend.total_resumes == 1


async def test_a_sandbox_killed_during_the_wake_is_not_found_everywhere(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    assert await store.acquire("wake:a", GUARD) is not None
    follower = replica()
    waiting = asyncio.create_task(follower.resume("a"))
    await settle()
    await store.write(Record.of("a", None), "leader")
    with pytest.raises(NotFound):
        await asyncio.wait_for(waiting, GUARD)


async def test_a_wake_that_already_happened_is_not_repeated(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    late = replica()
    assert (await late.get("a")).version == 1  # type: ignore[union-attr]
    await store.write(running_at(2), "early", announce=True)  # woken meanwhile elsewhere
    woken = await late.resume("a")
    assert (woken.state, woken.version) == (S.RUNNING, 2)
    assert backend.total_resumes == 0


# -- lookups and changes ------------------------------------------------------------------------


async def test_a_lookup_by_one_replica_serves_the_others(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.RUNNING)
    one, two = replica(), replica()
    assert await one.get("a") == backend.sandboxes["a"]
    assert await two.get("a") == backend.sandboxes["a"]
    assert backend.get_calls["a"] == 1


async def test_a_sandbox_in_transition_is_always_looked_up_at_the_backend(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.RESUMING)
    one, two = replica(), replica()
    await one.get("a")
    await two.get("a")
    assert backend.get_calls["a"] == 2


async def test_after_a_refused_connect_the_backend_is_asked_and_the_news_shared(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.RUNNING)
    one, two = replica(), replica()
    heard = Heard(one)
    await one.get("a")
    paused = backend.set_state("a", S.PAUSED, notify=False)  # nobody was told
    assert (await two.get("a")).state is S.RUNNING  # type: ignore[union-attr]
    two.invalidate("a")
    assert await two.get("a") == paused
    assert await heard.next() == ("a", paused)


async def test_the_backends_own_changes_reach_the_other_replicas(replica: Make) -> None:
    platform, remote = FakeBackend(), FakeBackend()  # the embedded platform; an http one
    platform.add("a", S.RUNNING)
    local, other = replica(backend=platform), replica(backend=remote)
    local_heard, other_heard = Heard(local), Heard(other)
    paused = platform.set_state("a", S.PAUSED)
    assert await local_heard.next() == ("a", paused)  # at once, from the backend
    assert await other_heard.next() == ("a", paused)  # through the store
    platform.kill("a")
    assert await other_heard.next() == ("a", None)


# -- activity -----------------------------------------------------------------------------------


async def test_activity_of_every_replica_is_reported_once_with_the_latest_times(
    backend: FakeBackend, replica: Make
) -> None:
    one, two = replica(), replica()
    await one.touch({"a": 10.0, "b": 5.0})
    await two.touch({"a": 12.0})
    assert backend.touched == []
    assert await one.flush_activity() == 2
    assert await two.flush_activity() == 0  # the interval's lease is one's
    assert backend.touched == [{"b": 5.0, "a": 12.0}]


async def test_activity_the_backend_refused_is_reported_again(
    backend: FakeBackend, replica: Make, store: FlakyStore
) -> None:
    one = replica(activity_interval=0.05)
    await one.touch({"a": 10.0})
    backend.touch_errors.append(Unavailable("busy"))
    assert await one.flush_activity() == 0
    await one.touch({"a": 9.0})  # older: the refused time stands
    await asyncio.sleep(0.06)  # the lease of the failed flush ran out
    assert await one.flush_activity() == 1
    assert backend.touched == [{"a": 10.0}]


async def test_without_a_shared_store_lookups_and_activity_go_to_the_backend(
    backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.RUNNING)
    alone = replica(store=MemoryStore())
    await alone.get("a")
    await alone.get("a")
    await alone.touch({"a": 1.0})
    assert backend.get_calls["a"] == 2
    assert backend.touched == [{"a": 1.0}]


# -- the store down -----------------------------------------------------------------------------


async def test_without_the_store_each_replica_resumes_once_and_nothing_waits(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    backend.add("b", S.RUNNING)
    one, two = replica(), replica()
    store.set_down(True)
    woken = await asyncio.wait_for(asyncio.gather(one.resume("a"), two.resume("a")), GUARD)
    assert [info.state for info in woken] == [S.RUNNING, S.RUNNING]
    assert backend.total_resumes == 2
    assert (await one.get("b")).state is S.RUNNING  # type: ignore[union-attr]
    await one.touch({"b": 3.0})
    assert backend.touched == [{"b": 3.0}]


async def test_a_follower_stops_following_when_the_store_goes_down(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    assert await store.acquire("wake:a", GUARD) is not None  # a leader we cannot hear from
    follower = replica()
    waiting = asyncio.create_task(follower.resume("a"))
    await settle()
    store.set_down(True)
    assert (await asyncio.wait_for(waiting, GUARD)).state is S.RUNNING
    assert backend.total_resumes == 1


async def test_what_was_learned_without_the_store_is_written_when_it_returns(
    store: FlakyStore, backend: FakeBackend, replica: Make
) -> None:
    backend.add("a", S.PAUSED)
    one, two = replica(), replica(backend=FakeBackend())
    heard = Heard(two)
    store.set_down(True)
    woken = await one.resume("a")
    await settle()
    assert heard.changes == []
    store.set_down(False)
    assert await heard.next() == ("a", woken)
    assert await store.read("a") == Record.of("a", woken)


# -- the decisions, without I/O -------------------------------------------------------------------


def test_what_ends_a_followers_wait() -> None:
    running, paused = running_at(4), Record.of("a", SandboxInfo("a", S.PAUSED, version=5))
    assert ends_wait(StateChanged("x", running)) == running.info
    assert ends_wait(StateChanged("x", paused)) is False
    assert ends_wait(StateChanged("x", Record.of("a", None))) is None
    failed = WakeFailed("x", "a", Unavailable, "down")
    assert ends_wait(failed) == failed


def test_a_stored_record_shows_a_wake_only_when_newer_than_the_sleep_seen() -> None:
    assert woken(running_at(4), asleep_at=3) == running_at(4).info
    assert woken(running_at(3), asleep_at=3) is None  # the same version: not a later wake
    assert woken(running_at(4), asleep_at=None) is None  # nothing to compare with
    assert woken(Record.of("a", SandboxInfo("a", S.RESUMING, version=9)), asleep_at=3) is None
    assert woken(None, asleep_at=3) is None
