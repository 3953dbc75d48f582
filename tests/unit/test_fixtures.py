"""The shared fixtures behave as documented (no proxy involved)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_process import RedisServer, redis_binary
from support import free_port
from upstream import Upstream, pattern, pattern_sha256, start_upstream


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (requests carry Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


# redis_server


def test_free_port_is_bindable_and_not_the_system_redis() -> None:
    port = free_port()
    assert port != 6379
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_server_outage_and_recovery(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0), socket_timeout=2)
    try:
        assert client.ping() is True
        client.set("key", "value")

        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()

        redis_server.restart()
        assert client.ping() is True
        assert client.get("key") is None  # nothing is persisted across the outage
    finally:
        client.close()


def test_redis_server_ensure_running_and_flushall(redis_server: RedisServer) -> None:
    redis_server.kill()
    redis_server.ensure_running()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("key", "value")
        assert client.dbsize() == 1
        redis_server.flushall()
        assert client.dbsize() == 0
    finally:
        client.close()


async def test_redis_url_works_with_the_asyncio_client(redis_url: str) -> None:
    client = redis.asyncio.from_url(redis_url)
    try:
        assert await client.ping() is True
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


def test_redis_start_failure_is_reported_with_the_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    clash = RedisServer(redis_binary(), tmp_path, port=redis_server.port)
    with pytest.raises(RuntimeError, match=r"exited with code \d+ while starting") as failure:
        clash.start(timeout=5)
    assert str(tmp_path / "redis.log") in str(failure.value)
    assert not clash.running


# upstream: HTTP


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


async def test_echo_streams_each_chunk_back_before_the_body_ends(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await chunks.get()) is not None:
            yield chunk

    chunks.put_nowait(b"first")
    async with session.put(upstream.url + "/echo", data=body()) as response:
        assert response.headers["X-Method"] == "PUT"
        assert response.headers["Transfer-Encoding"] == "chunked"
        # The second chunk is not even produced until the first has come back.
        assert await response.content.readexactly(5) == b"first"
        chunks.put_nowait(b"second")
        chunks.put_nowait(None)
        assert await response.read() == b"second"


async def test_headers_reports_wire_order_spelling_and_raw_host(upstream: Upstream) -> None:
    raw = await _raw_exchange(
        upstream.port,
        b"GET /headers?q=1 HTTP/1.1\r\nHost: Sandbox.Example:81\r\nX-Z: 1\r\n"
        b"x-a: 2\r\nX-Z: 3\r\nConnection: close\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    report = json.loads(body)
    assert report["host"] == "Sandbox.Example:81"
    assert report["path"] == "/headers?q=1"
    assert report["headers"] == [
        ["Host", "Sandbox.Example:81"],
        ["X-Z", "1"],
        ["x-a", "2"],
        ["X-Z", "3"],
        ["Connection", "close"],
    ]
    assert upstream.seen[-1].host == "Sandbox.Example:81"


async def test_upload_counts_and_hashes_a_streamed_body(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    size = 3 * 1024 * 1024 + 7

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, size, 100_000):
            yield pattern(min(100_000, size - offset), offset)

    async with session.post(upstream.url + "/upload", data=body()) as response:
        result = await response.json()
    expected = hashlib.sha256((bytes(range(256)) * (size // 256 + 1))[:size]).hexdigest()
    assert result == {"bytes": size, "sha256": expected}
    assert pattern_sha256(size) == expected


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_sends_the_documented_pattern(
    upstream: Upstream, session: aiohttp.ClientSession, chunked: bool
) -> None:
    query = "size=300000&chunk=1000" + ("&chunked=1" if chunked else "")
    async with session.get(f"{upstream.url}/download?{query}") as response:
        body = await response.read()
        if chunked:
            assert "Content-Length" not in response.headers
            assert response.headers["Transfer-Encoding"] == "chunked"
        else:
            assert response.headers["Content-Length"] == "300000"
    assert body == (bytes(range(256)) * 1200)[:300000]
    assert pattern(10, 250) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])


async def test_status_codes_follow_no_body_rules(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(upstream.url + "/status/204") as response:
        assert response.status == 204
        assert "Content-Length" not in response.headers
        assert await response.read() == b""
    async with session.get(upstream.url + "/status/304") as response:
        assert response.status == 304
        assert response.headers["ETag"] == '"upstream-304"'
        assert await response.read() == b""
    async with session.get(upstream.url + "/status/404") as response:
        assert (response.status, await response.text()) == (404, "404 Not Found\n")
    async with session.get(upstream.url + "/status/307", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (307, "/headers")
    async with session.head(upstream.url + "/download?size=5") as response:
        assert response.headers["Content-Length"] == "5"
        assert await response.read() == b""


async def test_status_1xx_is_an_interim_response_before_a_final_200(upstream: Upstream) -> None:
    raw = await _raw_exchange(
        upstream.port, b"GET /status/103 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    final = raw.split(b"\r\n\r\n", 1)[1]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert final.endswith(b"\r\n\r\nfinal response after 103\n")


async def test_sse_events_arrive_one_by_one(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    events = []
    async with session.get(upstream.url + "/sse?n=3&interval=0.2") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        for index in range(3):
            raw = await response.content.readuntil(b"\n\n")
            arrived = time.monotonic()
            lines = raw.decode().splitlines()
            assert lines[0] == f"id: {index}"
            data = json.loads(lines[1].removeprefix("data: "))
            assert data["i"] == index
            events.append((data["sent"], arrived))
        assert await response.read() == b""
    for (_, arrived), (sent_next, _) in itertools.pairwise(events):
        assert arrived < sent_next, "an event was held back until the next one was sent"


async def test_sse_step_mode_sends_each_next_event_only_when_told(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(upstream.url + "/sse?n=3&step=1") as response:
        for index in range(3):
            raw = await response.content.readuntil(b"\n\n")
            assert raw.startswith(f"id: {index}\n".encode())
            assert upstream.sse_sent == index + 1
            upstream.sse_step()
        assert await response.read() == b""


async def test_requests_record_the_connection_that_carried_them(upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        for client in (first, first, second, first):
            async with client.get(upstream.url + "/count") as response:
                await response.read()
    assert [seen.connection for seen in upstream.seen] == [1, 1, 2, 1]
    assert upstream.connections == 2


async def test_slow_records_that_a_client_disconnect_cancelled_it(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(TimeoutError):
        await session.get(upstream.url + "/slow?delay=30", timeout=aiohttp.ClientTimeout(0.3))
    await upstream.wait_until(lambda: upstream.cancelled == 1)
    assert upstream.cancelled_event.is_set()
    assert (upstream.slow_started, upstream.slow_completed) == (1, 0)


async def test_slow_answers_after_the_delay(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    async with session.get(upstream.url + "/slow?delay=0.2") as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.2
    assert (upstream.slow_completed, upstream.cancelled) == (1, 0)


async def test_count_and_hits(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    for expected in (1, 2):
        async with session.get(upstream.url + "/count") as response:
            assert await response.json() == {"count": expected}
    async with session.post(upstream.url + "/count") as response:
        assert response.headers["X-Count"] == "3"
    assert upstream.hits["GET /count"] == 2
    assert upstream.hits["POST /count"] == 1
    assert upstream.hits["GET /echo"] == 0
    assert upstream.requests == 3


async def test_refuse_and_accept_connections(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    port = upstream.port
    async with session.get(upstream.url + "/count") as response:
        assert response.status == 200  # leaves a pooled keep-alive connection

    async with upstream.refusing():
        assert not upstream.listening
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(upstream.url + "/count")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    assert upstream.port == port
    async with session.get(upstream.url + "/count") as response:
        assert await response.json() == {"count": 2}
    assert upstream.hits["GET /count"] == 2


async def test_start_upstream_without_pytest_and_factory(
    upstream: Upstream, upstream_factory: object
) -> None:
    async with await start_upstream() as extra, aiohttp.ClientSession() as client:
        assert extra.port != upstream.port
        async with client.get(extra.url + "/count") as response:
            assert await response.json() == {"count": 1}
    assert upstream.count == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", extra.port)


# upstream: WebSocket


async def test_ws_echoes_text_binary_and_answers_ping(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url, autoping=False) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
        await ws.send_bytes(b"\x00\xff")
        assert (await ws.receive()).data == b"\x00\xff"
        await ws.ping(b"probe")
        pong = await ws.receive()
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"probe")
    assert upstream.ws_connections == 1


async def test_ws_negotiates_the_first_offered_supported_protocol(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url, protocols=("mqtt", "superchat", "chat")) as ws:
        assert ws.protocol == "superchat"
    async with session.ws_connect(upstream.ws_url) as ws:
        assert ws.protocol is None
    assert upstream.ws_protocols == ["superchat", None]


async def test_ws_hello_echoes_the_query_string(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url + "?hello=1&token=a%20b") as ws:
        assert await ws.receive_str() == "hello=1&token=a%20b"


async def test_ws_server_close_with_requested_code(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url) as ws:
        await ws.send_str("close:4001")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001


async def test_ws_drop_aborts_without_a_close_frame(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url) as ws:
        await ws.send_str("drop")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSED
        assert ws.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE


async def test_ws_records_the_client_close_code(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(upstream.ws_url) as ws:
        await ws.close(code=4000, message=b"bye")
    await upstream.wait_until(lambda: upstream.ws_close_codes)
    assert upstream.ws_close_codes == [4000]
    assert upstream.ws_close_reasons == ["bye"]


async def test_ws_endpoint_without_upgrade_is_426(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(upstream.url + "/ws") as response:
        assert response.status == 426
