"""The plain-HTTP relay: the one seam through which requests reach upstreams.

Nothing outside this module and `ws_relay` touches the upstream client library, so the
relay can move to a lower-level implementation without changing routing, admission
or waking. Bodies stream in both directions with back-pressure: no whole body is
ever buffered, which keeps memory flat for gigabyte uploads and downloads and lets
Server-Sent Events through one event at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from wakeproxy.backends.base import Upstream
from wakeproxy.errors import PortNotOpen, ProxyError, UpstreamTimeout
from wakeproxy.proxy.headers import ForwardedRules, downstream_response_headers

# aiohttp's client would otherwise invent these; a proxy must send only what it got.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
    def __init__(self, session: aiohttp.ClientSession, rules: ForwardedRules) -> None:
        self._session = session
        self._rules = rules

    async def forward(
        self, request: web.BaseRequest, upstream: Upstream, sandbox_id: str, port: int
    ) -> web.StreamResponse:
        """Send `request` to `upstream` and stream the answer back.

        Raises `ProxyError` only before the response has started; after that a
        failure aborts the client connection, so a truncated body is never passed
        off as a whole one.
        """
        headers = self._rules.upstream_request_headers(
            _raw_headers(request), request.remote, request.scheme, request.host
        )
        if request.headers.get("Expect", "").lower() == "100-continue":
            # Only now, with an upstream to send it to, do we invite the body.
            await request.writer.write(_CONTINUE)
        try:
            upstream_response = await self._session.request(
                request.method,
                _url(upstream, request.raw_path),
                headers=headers,
                data=_body(request) if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        except aiohttp.ClientConnectorError as exc:
            raise port_not_open(sandbox_id, port) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Port {port} of sandbox {sandbox_id} did not answer in time",
                sandbox_id=sandbox_id,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProxyError(
                f"Port {port} of sandbox {sandbox_id} closed the connection "
                f"before answering ({type(exc).__name__})",
                sandbox_id=sandbox_id,
            ) from exc
        async with upstream_response:
            return await _stream_back(request, upstream_response)


def _raw_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]


def _url(upstream: Upstream, raw_path: str) -> URL:
    if not raw_path.startswith("/"):
        raw_path = "/" + raw_path
    return URL(f"http://{upstream.host}:{upstream.port}{raw_path}", encoded=True)


async def _body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def _stream_back(
    request: web.BaseRequest, upstream_response: aiohttp.ClientResponse
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream_response.status, reason=upstream_response.reason)
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream_response.raw_headers]
    for name, value in downstream_response_headers(raw):
        response.headers.add(name, value)
    await response.prepare(request)
    try:
        async for chunk in upstream_response.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError):
        # The head is out, so the status can no longer say what went wrong: cut the
        # connection so the client sees a truncated response, not a short "complete" one.
        _abort(request)
        return response
    await response.write_eof()
    return response


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
