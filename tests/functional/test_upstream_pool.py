"""The upstream pool under its bound: what a request that leaves while waiting hands on.

A real upstream server behind a pool bounded to one connection; requests that wait for
room are tasks, cancelled as a client that leaves would cancel them.
"""

from __future__ import annotations

import asyncio

from rawhttp import GUARD
from upstream import Upstream as UpstreamServer

from wakeproxy.backends.base import Upstream
from wakeproxy.proxy.upstream_pool import UpstreamPool


async def both_waiting(pool: UpstreamPool, target: Upstream) -> None:
    """One turn of the loop runs both new tasks up to their wait for room."""
    await asyncio.sleep(0)
    assert len(pool._waiters[target]) == 2


async def test_a_link_handed_to_a_request_that_left_goes_to_the_next(
    upstream: UpstreamServer,
) -> None:
    pool = UpstreamPool(1, 5.0, 60.0)
    target = Upstream("127.0.0.1", upstream.port)
    try:
        first = await pool.open(target)
        leaving = asyncio.create_task(pool.open(target))
        staying = asyncio.create_task(pool.open(target))
        await both_waiting(pool, target)
        pool.release(first)  # handed to `leaving`, which is cancelled before it runs
        leaving.cancel()
        async with asyncio.timeout(GUARD):
            assert await staying is first
        assert leaving.cancelled()
    finally:
        pool.close()


async def test_room_given_to_a_request_that_left_goes_to_the_next(
    upstream: UpstreamServer,
) -> None:
    pool = UpstreamPool(1, 5.0, 60.0)
    target = Upstream("127.0.0.1", upstream.port)
    try:
        first = await pool.open(target)
        leaving = asyncio.create_task(pool.open(target))
        staying = asyncio.create_task(pool.open(target))
        await both_waiting(pool, target)
        first.close()  # its place is offered to `leaving`, which is cancelled
        leaving.cancel()
        async with asyncio.timeout(GUARD):
            second = await staying
        assert second is not first
        assert second.open
    finally:
        pool.close()
