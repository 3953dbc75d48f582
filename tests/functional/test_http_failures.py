"""When forwarding fails: the client gets the right status (or, once the response has
started, a visibly cut one), the upstream's work is cancelled when nobody waits for it
any more, and the same proxy forwards the next request as if nothing happened.

Nothing here waits for time to pass: the upstream's own records (`Upstream.wait_until`)
and scripted upstreams say when something has happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
from rawhttp import GUARD, Handler, RawClient, raw_upstream, read_head, request_bytes
from support import StartProxy, host_for
from upstream import Upstream, pattern

from wakeproxy.server import Listening

_BROWSER = {
    "Sec-Fetch-Mode": "navigate",
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
}


async def assert_still_forwards(proxy: Listening, upstream: Upstream) -> None:
    """A normal request through the same proxy succeeds."""
    before = upstream.count
    async with (
        aiohttp.ClientSession() as client,
        client.get(proxy.url + "/count", headers={"Host": host_for(upstream.port)}) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"count": before + 1}


async def get_json(
    proxy: Listening, host: str, path: str = "/count"
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(proxy.url + path, headers={"Host": host}) as response,
    ):
        assert response.content_type == "application/json"
        document = await response.json()
        assert isinstance(document, dict)
        return response.status, document


# --- the upstream cannot be reached, or answers too late -------------------------------


@pytest.mark.parametrize("pooled", [False, True], ids=["cold", "after-pooled-connection"])
async def test_refused_connection_is_502_port_not_open(
    proxy: Listening, upstream: Upstream, pooled: bool
) -> None:
    if pooled:
        await assert_still_forwards(proxy, upstream)
    async with upstream.refusing():
        status, document = await get_json(proxy, host_for(upstream.port, "abc"))
        assert status == 502
        assert document["code"] == 502
        assert "port is not open" in str(document["message"])
        assert document["sandboxId"] == "abc"
    await assert_still_forwards(proxy, upstream)


async def test_upstream_slower_than_the_response_timeout_is_504_and_cancelled(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with start_proxy(response_timeout=0.5) as proxy:
        status, document = await get_json(proxy, host_for(upstream.port), "/slow?delay=600")
        assert status == 504
        assert document["code"] == 504
        assert isinstance(document["message"], str)
        assert document["message"]
        # The proxy gave up on the upstream request, not just on the client's.
        await upstream.wait_until(lambda: upstream.cancelled == 1, timeout=GUARD)
        assert upstream.slow_completed == 0
        await assert_still_forwards(proxy, upstream)


async def _close_without_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_head(reader)


async def _answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


async def _answer_an_endless_head(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Headers without end, until the proxy hangs up: a proxy that waited for the end of
    the head would never answer."""
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    index = 0
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"X-Padding-%d: %s\r\n" % (index, b"p" * 80))
            await writer.drain()
            index += 1


@pytest.mark.parametrize(
    "script",
    [_close_without_answering, _answer_garbage, _answer_an_endless_head],
    ids=["closed", "garbage", "endless-head"],
)
async def test_upstream_that_does_not_answer_with_http_is_502(
    proxy: Listening, upstream: Upstream, script: Handler
) -> None:
    async with raw_upstream(script) as port:
        status, document = await get_json(proxy, host_for(port))
    assert status == 502
    assert document["code"] == 502
    await assert_still_forwards(proxy, upstream)


# --- the upstream fails after the response started -------------------------------------


async def test_upstream_dropping_a_content_length_body_cuts_the_client_off(
    proxy: Listening, upstream: Upstream
) -> None:
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/abort?after=1000", host_for(upstream.port))
        assert response.status == 200
        assert response.get("Content-Length") == str(1000 + 1024 * 1024)
        assert not response.complete
        assert response.body == pattern(len(response.body))
        assert await raw.closed_by_peer()
    await assert_still_forwards(proxy, upstream)


def _chunked_then(ending: str) -> Handler:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n")
        await writer.drain()
        if ending == "reset":
            writer.transport.abort()
        # else: returning closes the connection cleanly, without the last chunk

    return script


@pytest.mark.parametrize("ending", ["close", "reset"])
async def test_upstream_dropping_a_chunked_body_never_ends_it_cleanly(
    proxy: Listening, upstream: Upstream, ending: str
) -> None:
    async with raw_upstream(_chunked_then(ending)) as port, RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/", host_for(port))
        assert response.status == 200
        assert response.chunked
        assert not response.complete, "the proxy sent the last chunk of a cut body"
        assert b"partial".startswith(response.body)
    await assert_still_forwards(proxy, upstream)


# --- the client goes away --------------------------------------------------------------


async def test_client_disconnect_before_the_response_cancels_the_upstream_request(
    proxy: Listening, upstream: Upstream
) -> None:
    async with RawClient(proxy.port) as raw:
        await raw.send(request_bytes("GET", "/slow?delay=600", host_for(upstream.port)))
        await upstream.wait_until(lambda: upstream.slow_started == 1, timeout=GUARD)
    await upstream.wait_until(lambda: upstream.cancelled == 1, timeout=GUARD)
    assert upstream.slow_completed == 0
    await assert_still_forwards(proxy, upstream)


async def test_client_disconnect_during_a_stream_closes_the_upstream_connection(
    proxy: Listening, upstream: Upstream
) -> None:
    upstream_closed = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            assert await reader.read() == b""  # nothing more is sent, until the proxy closes
        upstream_closed.set()

    async with raw_upstream(endless) as port:
        async with RawClient(proxy.port) as raw:
            await raw.send(request_bytes("GET", "/events", host_for(port)))
            async with asyncio.timeout(GUARD):
                await raw.reader.readuntil(b"first\r\n")
        async with asyncio.timeout(GUARD):
            await upstream_closed.wait()
    await assert_still_forwards(proxy, upstream)


# --- requests the proxy answers itself -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("www.example.com", 404),
        ("notaport-sbx1.localhost", 400),
        ("70000-sbx1.localhost", 400),
        ("3000-bad_id.localhost", 400),
    ],
)
async def test_unroutable_hosts_get_json_for_api_clients(
    proxy: Listening, upstream: Upstream, host: str, status: int
) -> None:
    got, document = await get_json(proxy, host)
    assert got == status
    assert document["code"] == status
    assert isinstance(document["message"], str)
    assert document["message"]
    assert upstream.requests == 0
    await assert_still_forwards(proxy, upstream)


@pytest.mark.parametrize("failure", ["unknown-host", "port-not-open"])
async def test_browser_navigation_to_an_error_gets_an_html_page(
    proxy: Listening, upstream: Upstream, failure: str
) -> None:
    host = "www.example.com" if failure == "unknown-host" else host_for(upstream.port)
    async with (
        upstream.refusing(),
        aiohttp.ClientSession() as client,
        client.get(proxy.url + "/", headers={"Host": host, **_BROWSER}) as response,
    ):
        assert response.status == (404 if failure == "unknown-host" else 502)
        assert response.content_type == "text/html"
        page = await response.text()
    assert page.startswith("<!doctype html>")
    assert "<h1>" in page
    if failure == "port-not-open":
        assert "port is not open" in page
    await assert_still_forwards(proxy, upstream)


async def test_malformed_request_is_400_and_the_proxy_keeps_serving(
    proxy: Listening, upstream: Upstream
) -> None:
    async with RawClient(proxy.port) as raw:
        await raw.send(b"THIS IS NOT HTTP\r\n\r\n")
        response = await raw.response()
    assert response.status == 400
    async with RawClient(proxy.port) as raw:
        response = await raw.request("GET", "/count", host_for(upstream.port))
        assert response.status == 200
        assert json.loads(response.body) == {"count": 1}
