"""When the shutdown grace is over, a request still held for a wake or waiting for a
connection to its port gets 503 with Retry-After and `Connection: close` instead of a cut
connection, and is counted as that answer, not as a client that left (499)."""

from __future__ import annotations

import asyncio

from fakes import FakeBackend
from rawhttp import GUARD, RawClient, RawResponse
from support import StartProxy, host_for
from upstream import Upstream

from wakeproxy.backends.base import SandboxState
from wakeproxy.server import Listening


def answered(proxy: Listening, code: int) -> float:
    assert proxy.metrics is not None
    value = proxy.metrics.registry.get_sample_value(
        "wakeproxy_requests_total", {"kind": "http", "code": str(code)}
    )
    return value or 0.0


def assert_shed(response: RawResponse) -> None:
    assert response.status == 503
    assert response.get("Retry-After") is not None
    assert response.get("Connection") == "close"
    assert b"shutting_down" in response.body


async def test_a_request_held_for_a_wake_past_the_grace_gets_503(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    backend = FakeBackend()
    backend.add("sleepy", SandboxState.PAUSED)
    backend.resume_gate = asyncio.Event()  # never set: the wake outlasts the grace
    try:
        async with start_proxy(backend=backend, shutdown_grace=0.2) as proxy:
            raw = await RawClient(proxy.port).__aenter__()
            await raw.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host_for(1, "sleepy").encode())
            waiting = asyncio.create_task(raw.response())
            async with asyncio.timeout(GUARD):
                await backend.resume_started.wait()
        assert_shed(await waiting)
        assert await raw.closed_by_peer()
        raw.abort()
        assert answered(proxy, 503) == 1
        assert answered(proxy, 499) == 0
    finally:
        backend.resume_gate.set()


async def test_requests_waiting_for_a_busy_port_past_the_grace_get_503(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with start_proxy(upstream_connections=1, shutdown_grace=0.2) as proxy:
        slow = await RawClient(proxy.port).__aenter__()
        queued = await RawClient(proxy.port).__aenter__()
        await slow.send(f"GET /slow?delay={GUARD * 2} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await upstream.wait_until(lambda: upstream.slow_started == 1)
        await queued.send(f"GET /count HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert proxy.gateway is not None
        in_flight = proxy.gateway.in_flight
        async with asyncio.timeout(GUARD):
            while True:  # until the second waits for the one connection
                if in_flight.count("sbx1") == 2:
                    break
                await asyncio.sleep(0.01)
        answers = [asyncio.create_task(client.response()) for client in (slow, queued)]
    for answer in answers:
        assert_shed(await answer)
    slow.abort()
    queued.abort()
    assert answered(proxy, 503) == 2
    assert answered(proxy, 499) == 0
