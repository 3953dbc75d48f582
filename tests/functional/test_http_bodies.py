"""HTTP forwarding of messages and their bodies: keep-alive and pooling, streamed uploads
and downloads, HEAD/204/304, ``Expect: 100-continue`` and Server-Sent Events.

Everything runs against a real proxy and the real upstream over loopback sockets. Where
framing matters the client is `rawhttp.RawClient`, which shows the bytes as sent.
Streaming is shown by lockstep, never by timing: the client sends (or the upstream
emits) the next piece only after the previous one came out of the proxy, so a proxy
that buffers waits forever and the test fails at `rawhttp.GUARD`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from rawhttp import GUARD, RawClient, chunked, request_bytes
from support import host_for
from upstream import Upstream, pattern, pattern_sha256

from wakeproxy.server import Listening


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --- keep-alive and pooling ------------------------------------------------------------


async def test_one_client_connection_carries_many_requests_over_one_upstream_connection(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        for expected in range(1, 6):
            response = await raw.request("GET", "/count", host)
            assert response.status == 200
            assert response.get("X-Count") == str(expected)
            assert (response.get("Connection") or "").lower() != "close"
    assert upstream.count == 5
    assert [seen.connection for seen in upstream.seen] == [1] * 5


async def test_separate_client_connections_share_a_pooled_upstream_connection(
    proxy: Listening, upstream: Upstream
) -> None:
    for _ in range(4):
        # A new session per request: a new client connection each time.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                proxy.url + "/count", headers={"Host": host_for(upstream.port)}
            ) as response,
        ):
            assert response.status == 200
    assert upstream.count == 4
    assert upstream.connections == 1


# --- request bodies --------------------------------------------------------------------


async def test_content_length_upload_arrives_intact(
    proxy: Listening, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    payload = pattern(3 * 1024 * 1024 + 17, offset=5)
    async with client.post(
        proxy.url + "/upload", data=io.BytesIO(payload), headers={"Host": host_for(upstream.port)}
    ) as response:
        assert response.status == 200
        assert await response.json() == {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    seen = {name.lower(): value for name, value in upstream.seen[-1].headers}
    assert seen["content-length"] == str(len(payload))
    assert "transfer-encoding" not in seen


async def test_chunked_upload_arrives_intact_and_leaves_the_connection_usable(
    proxy: Listening, upstream: Upstream
) -> None:
    pieces = [pattern(1), pattern(1000, 1), pattern(70_000, 1001), pattern(5, 71_001)]
    whole = b"".join(pieces)
    body = chunked(*pieces, trailers="X-Checksum: whatever\r\n")
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        response = await raw.request(
            "POST", "/upload", host, [("Transfer-Encoding", "chunked")], body
        )
        assert response.status == 200
        assert json.loads(response.body) == {
            "bytes": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        }
        # The framing was consumed exactly: the next request on the connection works.
        after = await raw.request("GET", "/count", host)
        assert after.status == 200
    assert [seen.connection for seen in upstream.seen] == [1, 1]
    names = [name.lower() for name, _ in upstream.seen[0].headers]
    # The proxy frames the body itself, once; the client's trailer stays behind.
    assert names.count("transfer-encoding") == 1
    assert "content-length" not in names
    assert "x-checksum" not in names


async def test_upload_and_echo_stream_in_lockstep(proxy: Listening, upstream: Upstream) -> None:
    """The response head and every echoed piece come back before the next piece is sent.

    The client sends nothing of the body until the response head has arrived, so a
    proxy that waits for the whole request, or for the first response byte before
    sending the head, never answers.
    """
    async with RawClient(proxy.port) as raw:
        await raw.send(
            request_bytes(
                "PUT", "/echo", host_for(upstream.port), [("Transfer-Encoding", "chunked")]
            )
        )
        async with asyncio.timeout(GUARD):
            head = await raw.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nx-method: put\r\n" in head.lower()
        for index in range(3):
            piece = f"piece {index}\n".encode()
            await raw.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            async with asyncio.timeout(GUARD):
                size = int(await raw.reader.readuntil(b"\r\n"), 16)
                echoed = await raw.reader.readexactly(size + 2)
            assert echoed == piece + b"\r\n"
        await raw.send(b"0\r\n\r\n")
        async with asyncio.timeout(GUARD):
            assert await raw.reader.readuntil(b"\r\n\r\n") == b"0\r\n\r\n"


# --- response bodies -------------------------------------------------------------------


@pytest.mark.parametrize("chunked_download", [False, True], ids=["content-length", "chunked"])
async def test_download_arrives_intact(
    proxy: Listening, upstream: Upstream, client: aiohttp.ClientSession, chunked_download: bool
) -> None:
    size = 5 * 1024 * 1024 + 3
    query = f"/download?size={size}&chunk=100000" + ("&chunked=1" if chunked_download else "")
    digest = hashlib.sha256()
    received = 0
    async with client.get(proxy.url + query, headers={"Host": host_for(upstream.port)}) as response:
        assert response.status == 200
        if chunked_download:
            assert "Content-Length" not in response.headers
            assert response.headers["Transfer-Encoding"] == "chunked"
        else:
            assert response.headers["Content-Length"] == str(size)
        async for block in response.content.iter_chunked(256 * 1024):
            digest.update(block)
            received += len(block)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)


@pytest.mark.parametrize(
    ("target", "length"),
    [("/download?size=12345", "12345"), ("/download?size=12345&chunked=1", None)],
    ids=["content-length", "chunked"],
)
async def test_head_has_the_get_headers_and_no_body(
    proxy: Listening, upstream: Upstream, target: str, length: str | None
) -> None:
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        response = await raw.request("HEAD", target, host)
        assert response.status == 200
        assert response.get("Content-Type") == "application/octet-stream"
        assert response.get("Content-Length") == length
        # Had any body bytes followed the head, they would be read as the next status line.
        after = await raw.request("GET", "/count", host)
        assert after.status == 200
        assert json.loads(after.body) == {"count": 1}
    assert upstream.hits["HEAD /download"] == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_keep_the_connection_usable(
    proxy: Listening, upstream: Upstream, status: int
) -> None:
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", f"/status/{status}", host)
        assert response.status == status
        assert response.body == b""
        assert "transfer-encoding" not in response.names()
        if status == 304:
            assert response.get("ETag") == '"upstream-304"'
        after = await raw.request("GET", "/count", host)
        assert after.status == 200
        assert json.loads(after.body) == {"count": 1}


# --- Expect: 100-continue --------------------------------------------------------------


async def test_expect_100_continue_invites_the_body_then_answers(
    proxy: Listening, upstream: Upstream
) -> None:
    payload = pattern(200_000)
    head = request_bytes(
        "POST",
        "/upload",
        host_for(upstream.port),
        [("Expect", "100-continue"), ("Content-Length", str(len(payload)))],
    )
    async with RawClient(proxy.port) as raw:
        await raw.send(head)
        # Nothing of the body is sent until the proxy says so.
        interim = await raw.response("POST")
        assert interim.status == 100
        await raw.send(payload)
        final = await raw.response("POST")
        assert final.status == 200
        assert json.loads(final.body) == {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    assert "expect" not in {name.lower() for name, _ in upstream.seen[-1].headers}


@pytest.mark.parametrize(
    ("refusal", "status"),
    [("unknown-host", 404), ("malformed-host", 400), ("port-not-open", 502)],
)
async def test_expect_100_continue_is_not_sent_for_a_request_that_is_refused(
    proxy: Listening, upstream: Upstream, refusal: str, status: int
) -> None:
    host = {
        "unknown-host": "www.example.com",
        "malformed-host": "notaport-sbx1.localhost",
        "port-not-open": host_for(upstream.port),
    }[refusal]
    head = request_bytes(
        "POST", "/upload", host, [("Expect", "100-continue"), ("Content-Length", "10")]
    )
    async with upstream.refusing(), RawClient(proxy.port) as raw:
        await raw.send(head)
        first = await raw.response("POST")
        assert first.status == status
        assert json.loads(first.body)["code"] == status
    assert upstream.requests == 0
    async with RawClient(proxy.port) as raw:
        assert (await raw.request("GET", "/count", host_for(upstream.port))).status == 200


# --- Server-Sent Events ----------------------------------------------------------------


async def test_server_sent_events_reach_the_client_one_by_one(
    proxy: Listening, upstream: Upstream, client: aiohttp.ClientSession
) -> None:
    events = 4
    async with (
        asyncio.timeout(GUARD),
        client.get(
            proxy.url + f"/sse?n={events}&step=1", headers={"Host": host_for(upstream.port)}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        for index in range(events):
            event = await response.content.readuntil(b"\n\n")
            assert event.startswith(f"id: {index}\n".encode())
            # It arrived while the upstream had sent nothing after it: the upstream only
            # sends the next event when told to, just below.
            assert upstream.sse_sent == index + 1
            upstream.sse_step()
        assert await response.read() == b""
