"""The `StateStore` contract, run against both stores: the in-memory one and Redis (a real
redis-server). Versioned records, notices, leases held by token, merged activity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis_process import RedisServer

from wakeproxy.backends.base import Lifecycle, SandboxInfo, SandboxState
from wakeproxy.errors import Unavailable
from wakeproxy.state.memory import MemoryStore
from wakeproxy.state.records import (
    KILLED_VERSION,
    Notice,
    Record,
    StateChanged,
    WakeFailed,
    decode_notice,
    encode_notice,
)
from wakeproxy.state.redis_store import RedisStore
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.shared import StateStore
from wakeproxy.state.urls import parse_redis_url

S = SandboxState
TTL = 0.3  # record TTL of these stores: short, so that expiry can be waited out
NOTICE_WAIT = 5.0  # a bound that only turns a lost notice into a failure


def info(state: SandboxState, version: int, sandbox_id: str = "sbx") -> SandboxInfo:
    return SandboxInfo(
        sandbox_id,
        state,
        Lifecycle("pause", True),
        version=version,
        end_at=1_700_000_000.5,
        traffic_token="t0ken",
    )


def record(state: SandboxState, version: int, sandbox_id: str = "sbx") -> Record:
    return Record.of(sandbox_id, info(state, version, sandbox_id))


def settings(redis_url: str) -> StateSettings:
    return StateSettings(redis_url=redis_url, record_ttl=TTL, timeout=2.0)


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Any]]:
    """`await make_store()`: a started store; every call of one test shares the same data
    (for Redis: the same server; for memory: the same instance)."""
    made: list[StateStore] = []
    memory = MemoryStore(shared=True, record_ttl=TTL)
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.ensure_running()
        server.flushall()

    async def make() -> StateStore:
        if server is None:
            return memory
        store = RedisStore(parse_redis_url(server.url), settings(server.url))
        await store.start()
        assert store.healthy
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


class Notices:
    """What a store's listener heard, in order."""

    def __init__(self, store: StateStore) -> None:
        self.queue: asyncio.Queue[Notice] = asyncio.Queue()
        store.listen(self.queue.put_nowait)

    async def next(self) -> Notice:
        async with asyncio.timeout(NOTICE_WAIT):
            return await self.queue.get()

    async def next_for(self, store: StateStore, *records: Record) -> list[Notice]:
        """The notices heard up to a marker: records written meanwhile that make no notice
        show up as absent (a store delivers notices in publishing order)."""
        marker = WakeFailed("marker", "marker", Unavailable, "end")
        await store.announce(marker)
        heard = []
        while (notice := await self.next()) != marker:
            heard.append(notice)
        return heard


# -- records --------------------------------------------------------------------------------


async def test_a_record_reads_back_as_written(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    assert await store.read("sbx") is None
    assert await store.write(record(S.PAUSED, 3), "a") is True
    assert await store.read("sbx") == record(S.PAUSED, 3)


async def test_an_older_version_never_replaces_a_newer_one(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    await store.write(record(S.PAUSED, 5), "a")
    assert await store.write(record(S.RUNNING, 4), "b") is False
    assert await store.read("sbx") == record(S.PAUSED, 5)
    assert await store.write(record(S.RUNNING, 6), "b") is True
    assert await store.read("sbx") == record(S.RUNNING, 6)


async def test_a_tombstone_outranks_every_version(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    await store.write(Record.of("sbx", None), "a")
    assert await store.write(record(S.RUNNING, 10**12), "b") is False
    stored = await store.read("sbx")
    assert stored == Record("sbx", KILLED_VERSION, None)
    assert stored.settled


async def test_records_expire_after_the_record_ttl(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    await store.write(record(S.RUNNING, 1), "a")
    await asyncio.sleep(TTL + 0.2)
    assert await store.read("sbx") is None
    # An expired record no longer outranks anything.
    assert await store.write(record(S.PAUSED, 0), "a") is True


async def test_each_sandbox_has_its_own_record(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    await store.write(record(S.RUNNING, 7, "one"), "a")
    await store.write(record(S.PAUSED, 2, "two"), "a")
    assert await store.read("one") == record(S.RUNNING, 7, "one")
    assert await store.read("two") == record(S.PAUSED, 2, "two")


# -- notices --------------------------------------------------------------------------------


async def test_a_newer_version_is_announced_to_every_listener(
    make_store: Callable[[], Any],
) -> None:
    writer, reader = await make_store(), await make_store()
    heard = Notices(reader)
    await writer.write(record(S.PAUSED, 1), "writer")
    await writer.write(record(S.RUNNING, 2), "writer")
    assert await heard.next_for(writer) == [
        StateChanged("writer", record(S.PAUSED, 1)),
        StateChanged("writer", record(S.RUNNING, 2)),
    ]


async def test_what_is_no_news_makes_no_notice(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    heard = Notices(store)
    await store.write(record(S.RUNNING, 4), "a")  # a lookup finding it running
    await store.write(record(S.RUNNING, 4), "a")  # the same again
    await store.write(record(S.PAUSED, 3), "a")  # stale
    assert await heard.next_for(store) == []


async def test_an_announced_write_is_news_unless_stale(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    heard = Notices(store)
    await store.write(record(S.RUNNING, 4), "a", announce=True)
    await store.write(record(S.RUNNING, 4), "a", announce=True)
    await store.write(record(S.PAUSED, 3), "a", announce=True)
    assert await heard.next_for(store) == [StateChanged("a", record(S.RUNNING, 4))] * 2


async def test_a_first_record_of_a_sleeping_or_gone_sandbox_is_news(
    make_store: Callable[[], Any],
) -> None:
    store = await make_store()
    heard = Notices(store)
    await store.write(record(S.PAUSED, 4, "p"), "a")
    await store.write(Record.of("k", None), "a")
    assert await heard.next_for(store) == [
        StateChanged("a", record(S.PAUSED, 4, "p")),
        StateChanged("a", Record("k", KILLED_VERSION, None)),
    ]


async def test_a_wake_failure_reaches_listeners_with_its_error(
    make_store: Callable[[], Any],
) -> None:
    store = await make_store()
    heard = Notices(store)
    failure = WakeFailed("a", "sbx", Unavailable, "backend down")
    await store.announce(failure)
    assert await heard.next() == failure


def test_notices_survive_the_wire_and_junk_is_dropped() -> None:
    for notice in (
        StateChanged("o", record(S.PAUSING, 9)),
        StateChanged("o", Record.of("gone", None)),
        WakeFailed("o", "sbx", Unavailable, "down"),
    ):
        assert decode_notice(encode_notice(notice)) == notice
    for junk in ("", "[]", '{"t": "state"}', '{"t": "other", "id": "x"}', "{"):
        assert decode_notice(junk) is None


# -- leases ---------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_released(make_store: Callable[[], Any]) -> None:
    one, two = await make_store(), await make_store()
    lease = await one.acquire("wake:sbx", 5.0)
    assert lease is not None
    assert await two.acquire("wake:sbx", 5.0) is None
    assert 4.0 < await two.lease_left("wake:sbx") <= 5.0
    assert await two.acquire("wake:other", 5.0) is not None
    await one.release(lease)
    assert await two.lease_left("wake:sbx") == 0
    assert await two.acquire("wake:sbx", 5.0) is not None


async def test_only_the_holder_renews_or_releases(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    lease = await store.acquire("wake:sbx", 0.5)
    assert lease is not None
    impostor = type(lease)(lease.name, "not-the-token")
    assert await store.renew(impostor, 5.0) is False
    await store.release(impostor)
    assert await store.acquire("wake:sbx", 5.0) is None
    assert await store.renew(lease, 5.0) is True
    assert await store.lease_left("wake:sbx") > 4.0


async def test_a_lease_nobody_renews_expires(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    dead = await store.acquire("wake:sbx", 0.2)
    assert dead is not None
    await asyncio.sleep(0.3)
    assert await store.lease_left("wake:sbx") == 0
    taken = await store.acquire("wake:sbx", 5.0)
    assert taken is not None
    # The expired holder can no longer renew or release the new holder's lease.
    assert await store.renew(dead, 5.0) is False
    await store.release(dead)
    assert await store.acquire("wake:sbx", 5.0) is None


# -- activity -------------------------------------------------------------------------------


async def test_activity_keeps_the_latest_time_and_is_taken_oldest_first(
    make_store: Callable[[], Any],
) -> None:
    one, two = await make_store(), await make_store()
    await one.add_activity({"a": 100.0, "b": 50.0, "c": 70.0})
    await two.add_activity({"a": 90.0, "b": 60.0})
    assert await one.take_activity(2) == {"b": 60.0, "c": 70.0}
    assert await two.take_activity(10) == {"a": 100.0}
    assert await two.take_activity(10) == {}
    assert await one.last_activity("a") == 100.0
    assert await one.last_activity("nobody") is None


async def test_forgetting_idle_activity_keeps_recent_times(make_store: Callable[[], Any]) -> None:
    store = await make_store()
    await store.add_activity({"old": 1.0, "new": 4_000_000_000.0})
    await store.forget_idle()
    assert await store.last_activity("old") is None
    assert await store.last_activity("new") == 4_000_000_000.0
