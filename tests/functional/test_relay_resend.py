"""Nothing is sent twice: a request goes out again only when it is idempotent, has no
body, and its kept-alive upstream connection closed before a single byte of an answer
(RFC 9110 §9.2.2, RFC 9112 §9.3.1.1). Anything else that fails before the response head
is a 502, and the upstream saw the request once.

Each scripted upstream answers the first request on a connection, so the proxy keeps that
connection for the next one, and then fails the second request in one way; every request
on a later connection is answered. The heads the upstream read say how often each
request reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from rawhttp import RawClient, raw_upstream, read_head
from support import host_for

from wakeproxy.server import Listening

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Failure = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def close_silently(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


async def answer_garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"SPDY/9 what\r\n\r\n")
    await writer.drain()
    writer.transport.abort()


async def answer_half_a_head(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
    await writer.drain()
    writer.transport.abort()


async def answer_an_endless_header_line(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    with contextlib.suppress(ConnectionError):
        for _ in range(512):
            writer.write(b"e" * 16 * 1024)
            await writer.drain()


class Scripted:
    """An upstream whose first connection fails its second request with `failure`."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self.heads: list[bytes] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first_connection = self.connections == 1
        served = 0
        while True:
            try:
                head = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.heads.append(head)
            served += 1
            if first_connection and served == 2:
                await self.failure(writer)
                return
            writer.write(OK)
            await writer.drain()

    def seen(self, request_line: bytes) -> int:
        return sum(head.startswith(request_line) for head in self.heads)


async def second_request(proxy: Listening, script: Scripted, method: str) -> int:
    """A GET that leaves a pooled connection behind, then `method` over it; its status."""
    async with raw_upstream(script.serve) as port:
        host = host_for(port)
        async with RawClient(proxy.port) as raw:
            first = await raw.request("GET", "/first", host)
            assert first.status == 200
            second = await raw.request(method, "/second", host)
            return second.status


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    "failure",
    [close_silently, answer_garbage, answer_half_a_head],
    ids=["closed", "garbage", "half-a-head"],
)
async def test_a_request_that_is_not_idempotent_is_never_sent_twice(
    proxy: Listening, method: str, failure: Failure
) -> None:
    script = Scripted(failure)
    status = await second_request(proxy, script, method)
    assert status == 502
    assert script.seen(f"{method} /second ".encode()) == 1


@pytest.mark.parametrize(
    "failure",
    [answer_garbage, answer_half_a_head, answer_an_endless_header_line],
    ids=["garbage", "half-a-head", "endless-line"],
)
async def test_an_idempotent_request_that_got_any_answer_is_not_sent_again(
    proxy: Listening, failure: Failure
) -> None:
    script = Scripted(failure)
    status = await second_request(proxy, script, "GET")
    assert status == 502
    assert script.seen(b"GET /second ") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "PUT", "OPTIONS"])
async def test_an_idempotent_request_whose_connection_closed_unanswered_is_sent_once_more(
    proxy: Listening, method: str
) -> None:
    script = Scripted(close_silently)
    status = await second_request(proxy, script, method)
    assert status == 200
    assert script.seen(f"{method} /second ".encode()) == 2
    assert script.connections == 2
