"""Every byte the relay holds and every wait it makes is bounded, in both directions.

A header line that never ends is refused once it is surely over the head bound (431 from
the proxy, 502 when an upstream sends it), a request body that trickles gets 408, a wait
for one of an upstream's pooled connections ends with 503 + Retry-After, and a response
head trickled byte by byte is bounded by `proxy.response_timeout` like a silent one.

Nothing here waits for time to pass: the timeouts are short, and the guard on every read
(`rawhttp.GUARD`) only turns a hang, which is what the unbounded relay did, into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from proxy_process import ProxyProcess
from rawhttp import GUARD, Handler, RawClient, RawResponse, raw_upstream, read_head
from support import RssSampler, StartProxy, host_for
from upstream import Upstream

from wakeproxy.proxy.wire import MAX_LINE
from wakeproxy.server import Listening

FILLER = b"a" * 16 * 1024
POUR_CAP = 8 * 1024 * 1024  # far past any bound: a relay that kept reading would hold it all


async def pour(raw: RawClient, prefix: bytes, *, cap: int = POUR_CAP) -> None:
    """Send `prefix`, then filler bytes until the proxy hangs up or `cap` is sent."""
    with contextlib.suppress(ConnectionError):
        await raw.send(prefix)
        sent = 0
        while sent < cap:
            await raw.send(FILLER)
            sent += len(FILLER)


async def flood(raw: RawClient, prefix: bytes) -> RawResponse:
    """`prefix` followed by endless filler; the answer, read while still sending."""
    pouring = asyncio.create_task(pour(raw, prefix))
    try:
        return await raw.response()
    finally:
        pouring.cancel()
        await asyncio.gather(pouring, return_exceptions=True)


async def assert_serves(proxy: Listening, upstream: Upstream) -> None:
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/count", host_for(upstream.port))
        assert response.status == 200


# --- request heads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        b"GET /count HTTP/1.1\r\nHost: {host}\r\nX-Endless: ",
        b"GET /count HTTP/1.1\r\nHost: {host}\r\nX-Endless-Name-",
        b"GET /count HTTP/1.1\r\nHost: {host}\r\n" + b"X-Pad: p\r\n" * 6000 + b"X-Endless: ",
    ],
    ids=["value", "name", "after-many-lines"],
)
async def test_an_endless_request_header_line_is_refused_431(
    proxy: Listening, upstream: Upstream, prefix: bytes
) -> None:
    async with RawClient(proxy.port) as raw:
        response = await flood(raw, prefix.replace(b"{host}", host_for(upstream.port).encode()))
        assert response.status == 431
        assert await raw.closed_by_peer()
    assert upstream.requests == 0
    await assert_serves(proxy, upstream)


@pytest.mark.parametrize(
    "prefix",
    [
        b"5\r\nhello\r\n1;x=",  # a chunk-size line (its extension) without end
        b"5\r\nhello\r\n0\r\nX-Trailer: ",  # a trailer line without end
    ],
    ids=["chunk-size-line", "trailer"],
)
async def test_an_endless_line_inside_a_chunked_body_is_answered_400(
    proxy: Listening, upstream: Upstream, prefix: bytes
) -> None:
    head = (
        f"POST /upload HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    async with RawClient(proxy.port) as raw:
        response = await flood(raw, head + prefix)
        assert response.status == 400
        assert "longer than" in response.body.decode()
        assert await raw.closed_by_peer()
    await assert_serves(proxy, upstream)


FLOODERS = 100
ANSWERS_DURING_FLOOD = 20
# Measured: about 3 MiB (100 ordinary clients: about 1 MiB). Unbounded, the 100 lines
# would hold 800 MiB.
FLOOD_RSS_LIMIT = 16 * 1024 * 1024


async def test_endless_header_lines_from_many_clients_keep_memory_flat(
    proxy_process: Callable[..., ProxyProcess], upstream: Upstream
) -> None:
    """100 clients at once send header lines that never end while another client asks
    for 20 answers: it gets them, each flooder gets 431, and the proxy's memory stays
    flat."""
    proxy = proxy_process()
    assert proxy.proc is not None
    host = host_for(upstream.port)
    prefix = f"GET /count HTTP/1.1\r\nHost: {host}\r\nX-Endless: ".encode()

    async def flooder() -> int:
        async with RawClient(proxy.port) as raw:
            return (await flood(raw, prefix)).status

    async def prober() -> list[int]:
        statuses = []
        for _ in range(ANSWERS_DURING_FLOOD):
            async with RawClient(proxy.port) as raw:
                statuses.append((await raw.request("GET", "/count", host)).status)
        return statuses

    await assert_serves_port(proxy.port, host)
    async with RssSampler(proxy.proc.pid) as rss:
        flooders = [asyncio.create_task(flooder()) for _ in range(FLOODERS)]
        answers = await prober()
        refusals = await asyncio.gather(*flooders)
    growth = rss.peak - rss.baseline
    print(f"{FLOODERS} endless header lines: proxy RSS grew {growth / 2**20:.1f} MiB")
    assert answers == [200] * ANSWERS_DURING_FLOOD
    assert refusals == [431] * FLOODERS
    assert growth < FLOOD_RSS_LIMIT, f"proxy RSS grew by {growth / 2**20:.1f} MiB"


async def assert_serves_port(port: int, host: str) -> None:
    async with RawClient(port) as raw:
        response = await raw.request("GET", "/count", host)
        assert response.status == 200


# --- request bodies --------------------------------------------------------------------


async def test_a_trickling_request_body_gets_408(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with start_proxy(client_body_timeout=0.3) as proxy, RawClient(proxy.port) as raw:
        await raw.send(
            f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n".encode()
        )

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await raw.send(b"x")
                    await asyncio.sleep(0.05)  # pacing only: far under any minimal rate

        trickling = asyncio.create_task(trickle())
        try:
            response = await raw.response("POST")
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
        assert response.status == 408
        assert response.get("Connection") == "close"
        assert "bytes per second" in response.body.decode()
        assert await raw.closed_by_peer()
        await assert_serves(proxy, upstream)


# --- upstream connections --------------------------------------------------------------


async def test_a_wait_for_a_busy_upstream_connection_ends_with_503(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with (
        start_proxy(upstream_connections=1, connect_timeout=0.3) as proxy,
        RawClient(proxy.port) as slow,
        RawClient(proxy.port) as waiting,
    ):
        await slow.send(f"GET /slow?delay={GUARD * 2} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await upstream.wait_until(lambda: upstream.slow_started == 1)
        response = await waiting.request("GET", "/count", host)
        assert response.status == 503
        assert response.get("Retry-After") == "1"
        assert b"busy" in response.body
        slow.abort()  # its connection comes back closed: room for the next request
        await upstream.wait_until(lambda: upstream.cancelled == 1)
        again = await waiting.request("GET", "/count", host)
        assert again.status == 200


async def _trickle_a_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A response head one byte at a time, each well inside the silence timeout."""
    await read_head(reader)
    with contextlib.suppress(ConnectionError):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 100_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)  # pacing only


async def test_a_trickled_response_head_is_bounded_by_the_response_timeout(
    start_proxy: StartProxy,
) -> None:
    async with (
        start_proxy(response_timeout=0.3) as proxy,
        raw_upstream(_trickle_a_head) as port,
        RawClient(proxy.port) as raw,
    ):
        response = await raw.request("GET", "/", host_for(port))
        assert response.status == 504


async def _an_endless_header_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_head(reader)
    with contextlib.suppress(ConnectionError):
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(POUR_CAP // len(FILLER)):
            writer.write(FILLER)
            await writer.drain()


@pytest.mark.parametrize("script", [_an_endless_header_line], ids=["endless-line"])
async def test_an_endless_response_header_line_is_502(
    proxy: Listening, upstream: Upstream, script: Handler
) -> None:
    async with raw_upstream(script) as port, RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/", host_for(port))
        assert response.status == 502
        assert f"line over {MAX_LINE} bytes".encode() in response.body
    await assert_serves(proxy, upstream)
