"""HTTP/1.1 on the client's side of the proxy, byte by byte: what request smuggling is
made of is refused (400, connection closed, nothing forwarded), an oversized head is
refused, pipelined requests are answered in order, chunk extensions, HTTP/1.0
keep-alive, ``Connection: close``, a client leaving mid-head, interim 1xx responses and
a HEAD answered with a Content-Length but no body.

These are the wire-level rules whatever serves the client side: requests are written by
hand (`rawhttp`), and upstream behaviour the real upstream cannot show comes from a
scripted one. Reads are bounded by `rawhttp.GUARD` only as a hang guard; where the
proxy must answer without waiting for more bytes, the client does not half-close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import pytest
from rawhttp import GUARD, Handler, RawClient, raw_upstream, read_head, request_bytes
from support import host_for
from upstream import Upstream, pattern

from wakeproxy.server import Listening


async def assert_serves(proxy: Listening, upstream: Upstream) -> None:
    """A new client connection gets /count forwarded: the proxy keeps serving."""
    before = upstream.count
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/count", host_for(upstream.port))
        assert response.status == 200
        assert json.loads(response.body) == {"count": before + 1}


async def assert_refused(
    proxy: Listening, upstream: Upstream, request: bytes, statuses: tuple[int, ...] = (400,)
) -> None:
    """`request` is answered with one of `statuses`, the proxy closes the connection, the
    upstream sees nothing of it, and the next client is served."""
    async with RawClient(proxy.port) as raw:
        with contextlib.suppress(ConnectionError):  # the proxy may stop reading early
            await raw.send(request)
        response = await raw.response()
        assert response.status in statuses
        assert await raw.closed_by_peer(), "the connection stayed open after a refused request"
    assert upstream.requests == 0, f"forwarded: {upstream.seen}"
    await assert_serves(proxy, upstream)
    assert dict(upstream.hits) == {"GET /count": 1}


def answering(reply: Callable[[bytes], bytes], heads: list[bytes]) -> Handler:
    """An upstream script: each request head (recorded in `heads`) gets `reply(head)`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the proxy closed its pooled connection
            heads.append(head)
            writer.write(reply(head))
            await writer.drain()

    return serve


# --- request smuggling -----------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ],
    ids=["content-length-and-chunked", "two-content-lengths"],
)
async def test_conflicting_body_framing_is_refused(
    proxy: Listening, upstream: Upstream, framing: str
) -> None:
    request = f"POST /count HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\n{framing}"
    await assert_refused(proxy, upstream, request.encode())


async def test_bare_lf_line_endings_are_refused_without_waiting_for_more(
    proxy: Listening, upstream: Upstream
) -> None:
    # Complete under bare-LF rules; the client neither sends more nor half-closes.
    request = f"GET /count HTTP/1.1\nHost: {host_for(upstream.port)}\n\n"
    await assert_refused(proxy, upstream, request.encode())


async def test_obs_fold_header_continuation_is_refused(
    proxy: Listening, upstream: Upstream
) -> None:
    request = f"GET /count HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\nX-Folded: a\r\n b\r\n\r\n"
    await assert_refused(proxy, upstream, request.encode())


@pytest.mark.parametrize("coding", ["chunked, identity", "gzip"])
async def test_transfer_encoding_not_ending_in_chunked_is_refused(
    proxy: Listening, upstream: Upstream, coding: str
) -> None:
    request = (
        f"POST /count HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\n"
        f"Transfer-Encoding: {coding}\r\n\r\n0\r\n\r\n"
    )
    await assert_refused(proxy, upstream, request.encode())


@pytest.mark.parametrize("padded", ["Host", "X-Padded"])
async def test_whitespace_between_header_name_and_colon_is_refused(
    proxy: Listening, upstream: Upstream, padded: str
) -> None:
    host = host_for(upstream.port)
    fields = f"Host : {host}\r\n" if padded == "Host" else f"Host: {host}\r\nX-Padded : 1\r\n"
    await assert_refused(proxy, upstream, f"GET /count HTTP/1.1\r\n{fields}\r\n".encode())


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x7f"], ids=["nul", "soh", "del"])
async def test_control_character_in_the_request_target_is_refused(
    proxy: Listening, upstream: Upstream, control: str
) -> None:
    request = f"GET /count{control}x HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\n\r\n"
    await assert_refused(proxy, upstream, request.encode("latin-1"))


async def test_request_head_over_64_kib_is_refused(proxy: Listening, upstream: Upstream) -> None:
    big = [("X-Big", "a" * (70 * 1024))]
    request = request_bytes("GET", "/count", host_for(upstream.port), big)
    await assert_refused(proxy, upstream, request, statuses=(400, 431))


# --- what RFC 9112 says a server must refuse, as nginx does --------------------------------


def _host_line(upstream: Upstream) -> str:
    return f"Host: {host_for(upstream.port)}\r\n"


@pytest.mark.parametrize(
    ("request_text", "statuses"),
    [
        ("GET /count HTTP/1.1\r\n{host}Host: other.localhost\r\n\r\n", (400,)),
        (
            "POST /count HTTP/1.0\r\n{host}Connection: keep-alive\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /count HTTP/1.1\r\n{host}\r\n",
            (400,),
        ),
        (
            "CONNECT {authority} HTTP/1.1\r\n{host}\r\nGET /count HTTP/1.1\r\n{host}\r\n",
            (405,),
        ),
        ("GET * HTTP/1.1\r\n{host}\r\n", (400,)),
        ("GET /count\r\n{host}\r\n", (400, 505)),
        ("GET /count HTTP/2.0\r\n{host}\r\n", (505,)),
        (
            "POST /count HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            (501,),
        ),
        (
            "POST /count HTTP/1.1\r\n{host}Content-Length: 9223372036854775808\r\n\r\n",
            (400,),
        ),
    ],
    ids=[
        "two-hosts",
        "http10-transfer-encoding",
        "connect",
        "star-not-options",
        "http09-with-headers",
        "http20",
        "gzip-chunked",
        "length-2^63",
    ],
)
async def test_what_rfc_9112_says_to_refuse_is_refused_and_never_forwarded(
    proxy: Listening, upstream: Upstream, request_text: str, statuses: tuple[int, ...]
) -> None:
    text = request_text.format(host=_host_line(upstream), authority=f"127.0.0.1:{upstream.port}")
    await assert_refused(proxy, upstream, text.encode(), statuses)


async def test_options_star_reaches_the_upstream_as_star(proxy: Listening) -> None:
    heads: list[bytes] = []
    reply = b"HTTP/1.1 204 No Content\r\nAllow: GET\r\n\r\n"
    async with raw_upstream(answering(lambda _: reply, heads)) as port:
        async with RawClient(proxy.port) as raw:
            response = await raw.request("OPTIONS", "*", host_for(port))
        assert response.status == 204
    assert heads[0].startswith(b"OPTIONS * HTTP/1.1\r\n")


async def test_a_malformed_chunk_is_answered_400_when_nothing_was_answered(
    proxy: Listening, upstream: Upstream
) -> None:
    head = f"POST /upload HTTP/1.1\r\n{_host_line(upstream)}Transfer-Encoding: chunked\r\n\r\n"
    async with RawClient(proxy.port) as raw:
        await raw.send(head.encode() + b"5\r\nhello\r\nzz\r\n")
        response = await raw.response("POST")
        assert response.status == 400
        assert b"malformed" in response.body
        assert await raw.closed_by_peer()
    await assert_serves(proxy, upstream)


# --- pipelining and bodies -------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    targets = ["/headers?n=1", "/headers?n=22", "/headers?n=333"]
    async with RawClient(proxy.port) as raw:
        await raw.send(b"".join(request_bytes("GET", target, host) for target in targets))
        for target in targets:
            response = await raw.response()
            assert response.status == 200
            assert response.complete
            assert json.loads(response.body)["path"] == target
        fourth = await raw.request("GET", "/count", host)
        assert fourth.status == 200
        assert json.loads(fourth.body) == {"count": 1}


async def test_pipelined_post_body_then_get_are_both_answered_byte_exact(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    # A body that looks like a request: only its Content-Length says where it ends.
    payload = bytes(range(256)) + b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    async with RawClient(proxy.port) as raw:
        await raw.send(
            request_bytes("POST", "/echo", host, body=payload)
            + request_bytes("GET", "/headers?after=post", host)
        )
        posted = await raw.response("POST")
        assert posted.status == 200
        assert posted.get("X-Method") == "POST"
        assert posted.complete
        assert posted.body == payload
        got = await raw.response()
        assert got.status == 200
        assert json.loads(got.body)["path"] == "/headers?after=post"
    assert dict(upstream.hits) == {"POST /echo": 1, "GET /headers": 1}


async def test_chunk_extensions_are_dropped_and_the_body_arrives_intact(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    body = b'3;ext=1\r\nabc\r\n2;a=b\r\nde\r\n4;q="x y"\r\nfghi\r\n0\r\n\r\n'
    async with RawClient(proxy.port) as raw:
        response = await raw.request(
            "POST", "/echo", host, [("Transfer-Encoding", "chunked")], body
        )
        assert response.status == 200
        assert response.complete
        assert response.body == b"abcdefghi"
        after = await raw.request("GET", "/count", host)
        assert after.status == 200
        assert json.loads(after.body) == {"count": 1}


# --- connection management -------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["/download?size=1000", "/download?size=1000&chunked=1"], ids=["length", "chunked"]
)
async def test_http_1_0_keep_alive_gets_a_reusable_or_close_delimited_response(
    proxy: Listening, upstream: Upstream, target: str
) -> None:
    def request(path: str) -> bytes:
        host = host_for(upstream.port)
        return f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode()

    async with RawClient(proxy.port) as raw:
        await raw.send(request(target))
        response = await raw.response()
        assert response.status == 200
        assert not response.chunked, "an HTTP/1.0 client cannot read a chunked body"
        assert response.complete
        assert response.body == pattern(1000)
        tokens = {token.strip().lower() for token in (response.get("Connection") or "").split(",")}
        if "keep-alive" in tokens and response.get("Content-Length") is not None:
            await raw.send(request("/headers?again=1"))
            again = await raw.response()
            assert again.status == 200
            assert not again.chunked
            assert json.loads(again.body)["path"] == "/headers?again=1"
        else:
            assert await raw.closed_by_peer(), "no keep-alive promised, yet not closed"


async def test_connection_close_request_is_answered_then_closed(
    proxy: Listening, upstream: Upstream
) -> None:
    async with RawClient(proxy.port) as raw:
        response = await raw.request(
            "GET", "/count", host_for(upstream.port), [("Connection", "close")]
        )
        assert response.status == 200
        assert json.loads(response.body) == {"count": 1}
        assert await raw.closed_by_peer()


@pytest.mark.parametrize("ending", ["fin", "reset"])
async def test_client_leaving_mid_head_does_not_disturb_the_proxy(
    proxy: Listening, upstream: Upstream, ending: str
) -> None:
    async with RawClient(proxy.port) as raw:
        await raw.send(b"GET /count HTTP/1.1\r\nHost: " + host_for(upstream.port).encode())
        if ending == "fin":
            raw.writer.write_eof()
            async with asyncio.timeout(GUARD):
                try:
                    rest = await raw.reader.read()  # until the proxy closes too
                except ConnectionResetError:
                    rest = b""
            assert rest == b"" or rest.startswith(b"HTTP/1.1 400 "), rest[:200]
        else:
            raw.abort()
    await assert_serves(proxy, upstream)
    assert dict(upstream.hits) == {"GET /count": 1}


# --- responses the real upstream cannot make -------------------------------------------


async def test_early_hints_then_final_response_reach_the_client_intact(
    proxy: Listening,
) -> None:
    heads: list[bytes] = []
    reply = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
    async with raw_upstream(answering(lambda _: reply, heads)) as port:
        async with RawClient(proxy.port) as raw:
            for _ in range(2):  # the second one shows the first left the framing intact
                await raw.send(request_bytes("GET", "/", host_for(port)))
                response = await raw.response()
                while 100 <= response.status < 200:
                    assert response.status == 103
                    assert response.get("Link") == "</a>"
                    response = await raw.response()
                assert response.status == 200
                assert response.complete
                assert response.body == b"hello"
        assert len(heads) == 2


async def test_head_answered_with_content_length_and_no_body_keeps_the_connection_usable(
    proxy: Listening,
) -> None:
    heads: list[bytes] = []

    def reply(head: bytes) -> bytes:
        fields = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        return fields if head.startswith(b"HEAD ") else fields + b"hello"

    async with raw_upstream(answering(reply, heads)) as port:
        async with RawClient(proxy.port) as raw:
            head = await raw.request("HEAD", "/file", host_for(port))
            assert head.status == 200
            assert head.get("Content-Length") == "5"
            # A body byte after the HEAD response would be read as the next status line.
            got = await raw.request("GET", "/file", host_for(port))
            assert got.status == 200
            assert got.complete
            assert got.body == b"hello"
        assert [line.split(b" ", 1)[0] for line in heads] == [b"HEAD", b"GET"]
