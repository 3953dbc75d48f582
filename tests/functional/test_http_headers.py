"""Which headers, paths and bytes cross the proxy: hop-by-hop headers stay behind,
X-Forwarded-* is set (and believed only from a trusted proxy), and nothing the client
sent is changed, dropped or joined by something the client library would invent.

Requests are written by hand (`rawhttp`), so every header the upstream sees beyond the
client's own was added by the proxy. Responses the real upstream cannot make (hop-by-hop
response headers, a compressed body) come from a scripted upstream.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from rawhttp import GUARD, RawClient, raw_upstream, read_head
from support import StartProxy, host_for
from upstream import SeenRequest, Upstream

from wakeproxy.server import Listening

_SPOOFED = [
    ("X-Forwarded-For", "198.51.100.7, 203.0.113.9"),
    ("X-Forwarded-For", "192.0.2.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "app.example.com"),
    ("Forwarded", "for=198.51.100.7;proto=https"),
    ("X-Real-IP", "198.51.100.7"),
]


def values(seen: SeenRequest, name: str) -> list[str]:
    return [value for key, value in seen.headers if key.lower() == name.lower()]


def names(seen: SeenRequest) -> set[str]:
    return {key.lower() for key, _ in seen.headers}


def replying(response: bytes, heads: list[bytes]) -> Callable[..., Awaitable[None]]:
    """An upstream script: answer every request on a connection with `response`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append(await read_head(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(response)
            await writer.drain()

    return serve


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A scripted upstream answering with the test's ``response`` parameter: (port, heads)."""
    heads: list[bytes] = []
    async with raw_upstream(replying(request.param, heads)) as port:
        yield port, heads


# --- hop-by-hop ------------------------------------------------------------------------


async def test_hop_by_hop_request_headers_are_not_forwarded(
    proxy: Listening, upstream: Upstream
) -> None:
    sent = [
        ("Connection", "keep-alive, X-Hop-One"),
        ("Connection", "x-hop-two"),
        ("X-Hop-One", "dropped"),
        ("X-Hop-Two", "dropped"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Anything", "dropped"),
        ("X-End-To-End", "kept"),
    ]
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/headers", host_for(upstream.port), sent)
    assert response.status == 200
    seen = upstream.seen[-1]
    hop_by_hop = {
        "x-hop-one",
        "x-hop-two",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "proxy-anything",
    }
    assert not names(seen) & hop_by_hop
    assert all("hop" not in value.lower() for value in values(seen, "Connection"))
    assert values(seen, "X-End-To-End") == ["kept"]


_HOP_BY_HOP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Connection: keep-alive, X-Hop\r\n"
    b"X-Hop: dropped\r\n"
    b"Keep-Alive: timeout=30\r\n"
    b"Trailer: X-Checksum\r\n"
    b"Upgrade: h2c\r\n"
    b"Proxy-Authenticate: Basic realm=upstream\r\n"
    b"Proxy-Anything: dropped\r\n"
    b"Set-Cookie: first=1; Path=/\r\n"
    b"X-End-To-End: kept\r\n"
    b"Set-Cookie: second=2; Path=/; HttpOnly\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n"
)


@pytest.mark.parametrize("scripted", [_HOP_BY_HOP_RESPONSE], indirect=True, ids=["hop-by-hop"])
async def test_hop_by_hop_response_headers_are_not_forwarded_and_cookies_are(
    proxy: Listening, scripted: tuple[int, list[bytes]]
) -> None:
    port, _ = scripted
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/", host_for(port))
        again = await raw.request("GET", "/", host_for(port))
    assert response.status == again.status == 200
    assert response.body == b"hello"
    assert not response.names() & {
        "x-hop",
        "keep-alive",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-anything",
        "x-checksum",
    }
    assert all("hop" not in value.lower() for value in response.get_all("Connection"))
    # The proxy frames the body itself: one chunked coding, not the upstream's plus its own.
    assert response.get_all("Transfer-Encoding") == ["chunked"]
    assert response.get_all("Set-Cookie") == ["first=1; Path=/", "second=2; Path=/; HttpOnly"]
    assert response.get("X-End-To-End") == "kept"


@pytest.mark.parametrize("scripted", [_HOP_BY_HOP_RESPONSE], indirect=True, ids=["hop-by-hop"])
async def test_http_1_0_client_gets_the_body_without_the_upstreams_chunked_coding(
    proxy: Listening, scripted: tuple[int, list[bytes]]
) -> None:
    port, _ = scripted
    async with RawClient(proxy.port) as raw:
        await raw.send(f"GET / HTTP/1.0\r\nHost: {host_for(port)}\r\n\r\n".encode())
        async with asyncio.timeout(GUARD):
            answer = await raw.reader.read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"hello"


# --- X-Forwarded-* and Host ------------------------------------------------------------


async def test_forwarding_headers_are_set_and_a_clients_own_claims_ignored(
    proxy: Listening, upstream: Upstream
) -> None:
    host = f"{host_for(upstream.port)}:{proxy.port}"
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/headers", host, _SPOOFED)
    assert response.status == 200
    seen = upstream.seen[-1]
    assert seen.host == host
    assert values(seen, "Host") == [host]
    assert values(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(seen, "X-Forwarded-Proto") == ["http"]
    assert values(seen, "X-Forwarded-Host") == [host]
    assert not names(seen) & {"forwarded", "x-real-ip"}


async def test_a_trusted_proxys_forwarding_headers_are_kept_and_extended(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with (
        start_proxy(trusted_proxies=("127.0.0.1/32",)) as proxy,
        RawClient(proxy.port) as raw,
    ):
        response = await raw.request("GET", "/headers", host, _SPOOFED)
    assert response.status == 200
    seen = upstream.seen[-1]
    assert seen.host == host
    assert values(seen, "X-Forwarded-For") == ["198.51.100.7, 203.0.113.9, 192.0.2.1, 127.0.0.1"]
    assert values(seen, "X-Forwarded-Proto") == ["https"]
    assert values(seen, "X-Forwarded-Host") == ["app.example.com"]
    assert values(seen, "Forwarded") == ["for=198.51.100.7;proto=https"]
    assert values(seen, "X-Real-IP") == ["198.51.100.7"]


# --- nothing invented, nothing lost ----------------------------------------------------


async def test_a_bare_request_gets_only_the_forwarding_headers_added(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/headers", host)
    assert response.status == 200
    assert [name for name, _ in upstream.seen[-1].headers] == [
        "Host",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-Id",
    ]
    assert json.loads(response.body)["method"] == "GET"


async def test_client_headers_arrive_in_order_as_spelled_and_none_is_added_to_a_body(
    proxy: Listening, upstream: Upstream
) -> None:
    sent = [
        ("x-lower-case", "a"),
        ("X-Repeated", "1"),
        ("X-Repeated", "2"),
        ("Cookie", "a=1; b=2"),
        ("Authorization", "Bearer secret"),
        ("Accept", "application/x-custom"),
        ("User-Agent", "custom-agent/1.0"),
    ]
    async with RawClient(proxy.port) as raw:
        response = await raw.request(
            "POST", "/headers", host_for(upstream.port), sent, body=b"data"
        )
    assert response.status == 200
    added_by_proxy = {
        "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"
    }  # fmt: skip
    forwarded = [
        pair for pair in upstream.seen[-1].headers if pair[0].lower() not in added_by_proxy
    ]
    # No Content-Type or Accept-Encoding appears, and the repeats stay separate.
    assert forwarded == [*sent, ("Content-Length", "4")]


@pytest.mark.parametrize(
    "target",
    [
        "/headers?a=1&a=2",
        "/headers?",
        "//double//slashes",
        "/a/../headers/./x",
        "/%7Euser/%2F%2f%20%25?q=%zz&x=a+b&&flag",
        "/%E2%82%AC;param=1?next=/y?z=%26",
    ],
)
async def test_the_raw_path_and_query_reach_the_upstream_byte_for_byte(
    proxy: Listening, upstream: Upstream, target: str
) -> None:
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", target, host_for(upstream.port))
    assert response.status in (200, 404)  # the upstream's answer; its router is not the point
    assert [seen.path for seen in upstream.seen] == [target]


async def test_an_absolute_form_target_reaches_the_upstream_in_origin_form(
    proxy: Listening, upstream: Upstream
) -> None:
    host = host_for(upstream.port)
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", f"http://{host}//headers/%2F?x=%20&x", host)
    assert response.status == 404
    assert [seen.path for seen in upstream.seen] == ["//headers/%2F?x=%20&x"]
    assert upstream.seen[0].host == host


_GZIPPED = gzip.compress(b"compress me " * 500, mtime=0)
_COMPRESSED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Encoding: gzip\r\n"
    b"Vary: Accept-Encoding\r\n" + f"Content-Length: {len(_GZIPPED)}\r\n\r\n".encode() + _GZIPPED
)


@pytest.mark.parametrize("scripted", [_COMPRESSED_RESPONSE], indirect=True, ids=["gzip"])
async def test_a_compressed_response_passes_through_still_compressed(
    proxy: Listening, scripted: tuple[int, list[bytes]]
) -> None:
    port, heads = scripted
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/", host_for(port), [("Accept-Encoding", "gzip")])
    assert response.status == 200
    assert response.get("Content-Encoding") == "gzip"
    assert response.get("Content-Length") == str(len(_GZIPPED))
    assert response.body == _GZIPPED
    assert b"\r\nAccept-Encoding: gzip\r\n" in heads[0]
