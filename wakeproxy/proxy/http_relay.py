"""The plain-HTTP relay: the one seam through which requests reach upstreams.

Nothing outside this module and `ws_relay` touches the upstream client library, so the
relay can move to a lower-level implementation without changing routing, admission
or waking. Bodies stream in both directions with back-pressure: no whole body is
ever buffered, which keeps memory flat for gigabyte uploads and downloads and lets
Server-Sent Events through one event at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import AsyncIterablePayload
from yarl import URL

from wakeproxy.backends.base import Upstream
from wakeproxy.errors import PortNotOpen, ProxyError, UpstreamTimeout
from wakeproxy.proxy.connector import registrar
from wakeproxy.proxy.headers import ForwardedRules, downstream_response_headers
from wakeproxy.routing import Target

# aiohttp's client would otherwise invent these; a proxy must send only what it got.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class UpstreamRecorder(Protocol):
    """What the relays report; `wakeproxy.metrics.Metrics` implements it."""

    def upstream_error(self, reason: str) -> None:
        """Talking to a sandbox's port failed: "refused", "timeout", "closed" (before the
        response head), "aborted" (after it) or "upgrade_refused" (WebSocket)."""


class RelayedResponse(web.StreamResponse):
    """An upstream's response as relayed; `body_bytes` says how much body got through."""

    body_bytes = 0
    aborted = False  # the upstream failed after the head was sent; the client was cut off
    client_gone = False  # the client left before the whole answer was written


class UpstreamRefused(PortNotOpen):
    """Nothing accepted the connection, so nothing of the request was sent.

    Safe to retry or to send back through the wake path, even for a POST.
    """


def port_not_open(sandbox_id: str, port: int) -> PortNotOpen:
    return UpstreamRefused(
        f"The sandbox is running but port is not open: nothing accepts connections "
        f"on port {port} of sandbox {sandbox_id}",
        sandbox_id=sandbox_id,
    )


class HttpRelay:
    def __init__(
        self, session: aiohttp.ClientSession, rules: ForwardedRules, recorder: UpstreamRecorder
    ) -> None:
        self._session = session
        self._register = registrar(session)
        self._rules = rules
        self._recorder = recorder

    async def forward(
        self,
        request: web.BaseRequest,
        upstream: Upstream,
        target: Target,
        extra_headers: Iterable[tuple[str, str]] | None = None,
    ) -> web.StreamResponse:
        """Send `request` to `upstream` and stream the answer back, with `extra_headers`
        added to the upstream's.

        Raises `ProxyError` only before the response has started; after that a
        failure aborts the client connection, so a truncated body is never passed
        off as a whole one.
        """
        sandbox_id, port = target.sandbox_id, target.port
        if upstream.opener is not None:
            self._register(upstream)
        headers = self._rules.upstream_request_headers(
            _raw_headers(request), request.remote, request.scheme, request.host
        )
        try:
            upstream_response = await self._session.request(
                request.method,
                upstream_url(upstream, request.raw_path),
                headers=headers,
                data=_ClientBody(request) if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        except aiohttp.ClientConnectorError as exc:
            self._recorder.upstream_error("refused")
            raise port_not_open(sandbox_id, port) from exc
        except TimeoutError as exc:
            self._recorder.upstream_error("timeout")
            raise UpstreamTimeout(
                f"Port {port} of sandbox {sandbox_id} did not answer in time",
                sandbox_id=sandbox_id,
            ) from exc
        except aiohttp.ClientError as exc:
            self._recorder.upstream_error("closed")
            raise ProxyError(
                f"Port {port} of sandbox {sandbox_id} closed the connection "
                f"before answering ({type(exc).__name__})",
                sandbox_id=sandbox_id,
            ) from exc
        async with upstream_response:
            response = await _stream_back(request, upstream_response, extra_headers)
        if response.aborted:
            self._recorder.upstream_error("aborted")
        return response


def _raw_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]


def upstream_url(upstream: Upstream, raw_target: str) -> URL:
    return URL(f"http://{upstream.host}:{upstream.port}{origin_form(raw_target)}", encoded=True)


def origin_form(raw_target: str) -> str:
    """The path and query of a request target, byte for byte, as an upstream gets it.

    Clients may send the absolute form, ``http://host/path?q`` (RFC 9112 §3.2.2 says a
    server must accept it); the upstream always gets the origin form, ``/path?q``.
    """
    if raw_target.startswith("/"):
        return raw_target
    _, separator, rest = raw_target.partition("://")
    if not separator:
        return "/" + raw_target
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path = rest[authority_end:]
    return path if path.startswith("/") else "/" + path


class _ClientBody(AsyncIterablePayload):
    """The client's request body, passed on chunk by chunk as it arrives.

    The upstream client asks for the body only once it holds a connection to the
    upstream, so that is when a client that sent ``Expect: 100-continue`` is invited to
    send it: never before a request is routed and connected (an error answer needs no
    body), and exactly once even when a refused connect is tried again.

    aiohttp's client holds a request head back to send it with the first body bytes.
    When none have arrived yet the head goes out on its own, at once: a client may wait
    for the response before it sends (more of) its body — a bidirectional stream, an
    upload that follows the server's go-ahead — and an upstream answers only a request
    it has seen.
    """

    def __init__(self, request: web.BaseRequest) -> None:
        super().__init__(request.content.iter_any())
        self._request = request
        self._content = request.content

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        request = self._request
        if (
            request.version >= (1, 1)
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            await request.writer.write(_CONTINUE)
        arrived = self._content.read_nowait()
        if arrived:
            await writer.write(arrived)  # goes out together with the head
        else:
            writer.send_headers()
        # No limit: the client's own framing already ends the body where it should.
        await super().write_with_length(writer, None)


async def _stream_back(
    request: web.BaseRequest,
    upstream_response: aiohttp.ClientResponse,
    extra_headers: Iterable[tuple[str, str]] | None,
) -> RelayedResponse:
    response = RelayedResponse(status=upstream_response.status, reason=upstream_response.reason)
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream_response.raw_headers]
    for name, value in downstream_response_headers(raw):
        response.headers.add(name, value)
    if extra_headers is not None:
        response.headers.extend(extra_headers)
    # A StreamResponse sends its head at once, before any body: a client waiting on a
    # stream (SSE, a long poll, an echo of its own upload) sees the status right away.
    try:
        await response.prepare(request)
        async for chunk in upstream_response.content.iter_any():
            await response.write(chunk)
            response.body_bytes += len(chunk)
        await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-answer: nobody is left to tell, and nothing is wrong
        # upstream (closing the upstream response drops that connection from the pool).
        response.client_gone = True
        _abort(request)
    except (aiohttp.ClientError, TimeoutError):
        # The head is out, so the status can no longer say what went wrong: cut the
        # connection so the client sees a truncated response, not a short "complete" one.
        _abort(request)
        response.aborted = True
    return response


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
