"""Mutated requests never make the upstream see a request the proxy did not send.

Hypothesis builds a few well-formed requests (bodiless, Content-Length and chunked ones,
some pipelined), mutates their bytes (line ends, framing headers, a whole smuggled request
inserted where a body or a header could swallow it), and writes them to the proxy. The
upstream parses what reaches it with h11, a second strict parser written independently of
llhttp, and checks two things of every connection:

- it always parses: whatever the proxy forwards is well-formed HTTP/1.1;
- every request in it carries the proxy's X-Forwarded-For, which only a head the proxy
  itself wrote has (the client bytes never contain one): a request hidden in a body or a
  header that reached the upstream as a request of its own would lack it.

The client half-closes after its bytes; the proxy then abandons what it was doing, so what
the upstream sees may be cut short. That only makes an observation smaller: the two
properties are about what the upstream does see, and a cut message (EOF inside it) is not
counted as a parse failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawhttp import GUARD, raw_upstream
from support import host_for

from wakeproxy.server import Listening

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"5",
    b"\x00",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 40\r\n",
    b"Connection: close\r\n",
    b"0\r\n\r\n",
    b" HTTP/1.1\r\n",
    SMUGGLED,
]


@dataclass
class Seen:
    requests: list[h11.Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def parse_and_answer(
    seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one proxy connection with h11, recording each request and any parse error."""
    conn = h11.Connection(h11.SERVER)
    ended = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as error:
            if not ended:  # an end inside a message is the proxy giving up, not bad HTTP
                seen.errors.append(str(error))
            return
        if event is h11.NEED_DATA:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                data = b""
            ended = not data
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            seen.requests.append(event)
        elif isinstance(event, h11.EndOfMessage):
            answer = h11.Response(status_code=200, headers=[("Content-Length", "2")])
            writer.write(conn.send(answer) + conn.send(h11.Data(data=b"ok")))
            writer.write(conn.send(h11.EndOfMessage()))
            try:
                await writer.drain()
            except ConnectionError:
                return  # the proxy gave up on this connection
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Seen, int]]:
    seen = Seen()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await parse_and_answer(seen, reader, writer)

    async with raw_upstream(serve) as port:
        yield seen, port


def base_request(kind: int, host: str) -> bytes:
    head = f"{'GET /a' if kind == 0 else 'POST /b'} HTTP/1.1\r\nHost: {host}\r\n"
    if kind == 0:
        return (head + "\r\n").encode()
    if kind == 1:
        return (head + "Content-Length: 5\r\n\r\nhello").encode()
    return (head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").encode()


mutation = st.tuples(
    st.floats(min_value=0, max_value=1),
    st.sampled_from(["insert", "replace", "delete"]),
    st.sampled_from(TOKENS),
)


def mutate(data: bytes, mutations: list[tuple[float, str, bytes]]) -> bytes:
    for where, how, token in mutations:
        at = int(where * len(data))
        if how == "insert":
            data = data[:at] + token + data[at:]
        elif how == "replace":
            data = data[:at] + token + data[at + len(token) :]
        else:
            data = data[:at] + data[at + len(token) :]
    return data


async def send_and_half_close(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(GUARD):
                while await reader.read(65536):
                    pass
    finally:
        writer.transport.abort()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kinds=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=3),
    mutations=st.lists(mutation, min_size=1, max_size=4),
)
async def test_mutated_requests_never_reach_the_upstream_as_requests_the_proxy_did_not_make(
    proxy: Listening,
    scripted: tuple[Seen, int],
    kinds: list[int],
    mutations: list[tuple[float, str, bytes]],
) -> None:
    seen, port = scripted
    host = host_for(port)
    data = mutate(b"".join(base_request(kind, host) for kind in kinds), mutations)
    before = len(seen.requests)
    await send_and_half_close(proxy.port, data)
    await asyncio.sleep(0.01)  # pacing only: lets the last forwarded bytes be parsed
    assert seen.errors == [], f"the upstream could not parse what the proxy sent: {seen.errors}"
    for request in seen.requests[before:]:
        names = {name.lower() for name, _ in request.headers}
        assert b"x-forwarded-for" in names, f"a request the proxy did not write: {request}"
        assert request.target != b"/smuggled"
