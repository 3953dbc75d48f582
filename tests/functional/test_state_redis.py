"""The Redis store when Redis fails: killed, frozen, never there, or a port that accepts
and never answers. Calls never hang, the store says it is degraded, and it reconnects
(subscription, scripts, notices) once Redis is back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis_process import RedisServer
from support import free_port

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.errors import StoreUnavailable
from wakeproxy.state.records import Notice, Record, StateChanged
from wakeproxy.state.redis_store import RedisStore
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.urls import parse_redis_url

MakeStore = Callable[[str], Awaitable[RedisStore]]
TIMEOUT = 0.3  # the stores' call timeout
GUARD = 15.0  # only turns a hang into a failure


def quick(url: str) -> StateSettings:
    return StateSettings(
        redis_url=url,
        timeout=TIMEOUT,
        health_interval=0.2,
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.3,
    )


@pytest.fixture
async def stores() -> AsyncIterator[MakeStore]:
    made: list[RedisStore] = []

    async def make(url: str) -> RedisStore:
        store = RedisStore(parse_redis_url(url), quick(url))
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD):
            while not predicate():  # noqa: ASYNC110 - the store's health has no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still waiting after {GUARD}s for {what}") from None


async def failing(call: Callable[[], Awaitable[object]]) -> None:
    """The call fails with `StoreUnavailable` instead of waiting on Redis. How fast is not
    asserted (no wall-clock thresholds on a shared machine); GUARD only catches a hang."""
    async with asyncio.timeout(GUARD):
        with pytest.raises(StoreUnavailable):
            await call()


def paused(version: int) -> Record:
    return Record.of("sbx", SandboxInfo("sbx", SandboxState.PAUSED, version=version))


async def test_a_killed_redis_degrades_the_store_and_its_return_restores_it(
    redis_server: RedisServer, stores: MakeStore
) -> None:
    store = await stores(redis_server.url)
    health: list[bool] = []
    store.watch_health(health.append)
    heard: asyncio.Queue[Notice] = asyncio.Queue()
    store.listen(heard.put_nowait)
    assert store.healthy

    redis_server.kill()
    await until(lambda: not store.healthy, "the store to notice the outage")
    await failing(lambda: store.read("sbx"))
    await failing(lambda: store.acquire("wake:sbx", 1.0))

    redis_server.restart()
    await until(lambda: store.healthy, "the store to reconnect")
    assert health == [False, True]
    # The new server knows no scripts: they are loaded again on first use.
    assert await store.write(paused(1), "other")
    other = await stores(redis_server.url)
    await other.write(paused(2), "other")
    async with asyncio.timeout(GUARD):
        assert await heard.get() == StateChanged("other", paused(1))
        assert await heard.get() == StateChanged("other", paused(2))


async def test_a_frozen_redis_never_holds_a_call_longer_than_the_timeout(
    redis_server: RedisServer, stores: MakeStore
) -> None:
    store = await stores(redis_server.url)
    redis_server.freeze()
    try:
        await failing(lambda: store.read("sbx"))
        assert not store.healthy
        await failing(lambda: store.write(paused(1), "a"))
    finally:
        redis_server.thaw()
    await until(lambda: store.healthy, "the store to see Redis answer again")
    assert await store.write(paused(1), "a")


async def test_a_store_started_without_redis_runs_degraded_until_redis_comes(
    redis_server: RedisServer, stores: MakeStore
) -> None:
    redis_server.kill()
    async with asyncio.timeout(GUARD):  # starting without Redis does not wait for it
        store = await stores(redis_server.url)
    assert not store.healthy
    await failing(lambda: store.read("sbx"))
    redis_server.start()
    await until(lambda: store.healthy, "the store to connect")
    assert await store.read("sbx") is None


async def test_a_port_that_accepts_and_never_answers_is_no_redis(
    stores: MakeStore,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", free_port()))
    silent.listen(16)
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        async with asyncio.timeout(GUARD):
            store = await stores(url)
        assert not store.healthy
        await failing(lambda: store.lease_left("wake:sbx"))
    finally:
        silent.close()
