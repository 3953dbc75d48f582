"""The upstream pool under its bound: what a request that leaves while waiting hands on.

A real upstream server behind a pool bounded to one connection; requests that wait for
room are tasks, cancelled as a client that leaves would cancel them.
"""

from __future__ import annotations

import asyncio

import pytest
from rawhttp import GUARD
from upstream import Upstream as UpstreamServer

from wakeproxy.backends.base import Upstream
from wakeproxy.proxy.upstream_pool import UpstreamPool


async def both_waiting(pool: UpstreamPool, target: Upstream) -> None:
    """One turn of the loop runs both new tasks up to their wait for room."""
    await asyncio.sleep(0)
    assert len(pool._waiters[target]) == 2


@pytest.mark.parametrize("first_goes", ["released", "closed"])
async def test_what_a_request_that_left_was_handed_goes_to_the_next(
    upstream: UpstreamServer, first_goes: str
) -> None:
    pool = UpstreamPool(1, 5.0, 60.0)
    target = Upstream("127.0.0.1", upstream.port)
    try:
        first = await pool.open(target)
        leaving = asyncio.create_task(pool.open(target))
        staying = asyncio.create_task(pool.open(target))
        await both_waiting(pool, target)
        if first_goes == "released":
            pool.release(first)  # the link itself is handed to `leaving`
        else:
            first.close()  # its place under the bound is offered to `leaving`
        leaving.cancel()  # before `leaving` runs again, as a client that left would
        async with asyncio.timeout(GUARD):
            got = await staying
        assert got.open
        assert (got is first) == (first_goes == "released")
        assert leaving.cancelled()
    finally:
        pool.close()
