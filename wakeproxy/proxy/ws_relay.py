"""The WebSocket relay: one upgrade in, one upgrade out, frames pumped both ways.

The upstream handshake happens first, so a sandbox that refuses the upgrade gets its
answer relayed as a plain HTTP error and the client is never upgraded to a dead end.
Both sides run with automatic ping and close handling off: pings, pongs and close
codes are the endpoints' business and pass through unchanged. Back-pressure comes from
awaiting each send before reading the next frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableSet
from functools import partial
from typing import Literal, Protocol

import aiohttp
from aiohttp import WSMsgType, web

from wakeproxy.backends.base import Upstream
from wakeproxy.errors import ProxyError
from wakeproxy.proxy.connector import registrar
from wakeproxy.proxy.headers import ForwardedRules, websocket_protocols
from wakeproxy.proxy.http_relay import UpstreamRecorder, port_not_open, upstream_url
from wakeproxy.routing import Target

# decode_text=False: text frames stay bytes, relayed without a decode/encode round trip.
InnerWebSocket = aiohttp.ClientWebSocketResponse[Literal[False]]
AnyWebSocket = web.WebSocketResponse | InnerWebSocket
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
_GONE = (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
# The sandbox went away (killed, or could not be woken) while the session was open.
_SANDBOX_GONE = 1011
Gate = Callable[[Target], Awaitable[None]]
# Codes that may not appear in a close frame on the wire (RFC 6455, 7.4.1).
_NOT_SENDABLE = {1005, 1006, 1015}


class SessionRecorder(UpstreamRecorder, Protocol):
    """What the WebSocket relay reports; `wakeproxy.metrics.Metrics` implements it."""

    def websocket_opened(self) -> None: ...

    def websocket_closed(self) -> None: ...


class UpgradeRefused(ProxyError):
    """The upstream answered the upgrade with a plain HTTP status."""


def is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


class WebSocketRelay:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        rules: ForwardedRules,
        open_relays: MutableSet[asyncio.Task[object]],
        max_message: int,
        recorder: SessionRecorder,
    ) -> None:
        self._session = session
        self._register = registrar(session)
        self._rules = rules
        self._open = open_relays
        self._max_message = max_message
        self._recorder = recorder

    async def forward(
        self,
        request: web.BaseRequest,
        upstream: Upstream,
        target: Target,
        gate: Gate,
        extra_headers: Iterable[tuple[str, str]] | None = None,
    ) -> web.WebSocketResponse:
        """Relay one session; `gate(target)` runs before each client message goes upstream
        (it wakes a sandbox that was paused while the session stayed open). The upgrade
        response carries `extra_headers`."""
        if upstream.opener is not None:
            self._register(upstream)
        inner = await self._connect(request, upstream, target.sandbox_id, target.port)
        outer = web.WebSocketResponse(
            protocols=(inner.protocol,) if inner.protocol else (),
            autoping=False,
            autoclose=False,
            compress=False,
            max_msg_size=self._max_message,
            decode_text=False,
        )
        if extra_headers is not None:
            outer.headers.extend(extra_headers)
        try:
            await outer.prepare(request)
        except BaseException:
            await inner.close()
            raise
        # Kept so shutdown can end every session with 1001 "going away".
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        self._recorder.websocket_opened()
        try:
            await _relay(outer, inner, request, partial(gate, target))
        finally:
            self._open.discard(task)
            self._recorder.websocket_closed()
        return outer

    async def _connect(
        self, request: web.BaseRequest, upstream: Upstream, sandbox_id: str, port: int
    ) -> InnerWebSocket:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        headers = self._rules.upstream_request_headers(
            raw, request.remote, request.scheme, request.host, websocket=True
        )
        url = upstream_url(upstream, request.raw_path)
        try:
            return await self._session.ws_connect(
                url,
                headers=headers,
                protocols=websocket_protocols(request.headers.items()),
                autoping=False,
                autoclose=False,
                compress=0,
                max_msg_size=self._max_message,
                decode_text=False,
            )
        except aiohttp.WSServerHandshakeError as exc:
            self._recorder.upstream_error("upgrade_refused")
            error = UpgradeRefused(
                f"Port {port} of sandbox {sandbox_id} refused the WebSocket upgrade "
                f"with status {exc.status}",
                sandbox_id=sandbox_id,
            )
            error.status = exc.status if exc.status >= 400 else 502
            raise error from exc
        except aiohttp.ClientConnectorError as exc:
            self._recorder.upstream_error("refused")
            raise port_not_open(sandbox_id, port) from exc


async def _relay(
    outer: web.WebSocketResponse,
    inner: InnerWebSocket,
    request: web.BaseRequest,
    gate: Callable[[], Awaitable[None]],
) -> None:
    """Pump until one side ends, then end the other the same way."""
    to_inner = asyncio.create_task(_pump(outer, inner, gate))
    to_outer = asyncio.create_task(_pump(inner, outer, None))
    try:
        done, _ = await asyncio.wait((to_inner, to_outer), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # Server shutting down, or the client connection is gone: both sides are told
        # the proxy is going away (the second close fails harmlessly on a dead socket).
        await _finish(to_inner, to_outer)
        await _close(inner, 1001)
        await _close(outer, 1001)
        raise
    first = to_inner if to_inner in done else to_outer
    ended_by, other_side = (outer, inner) if first is to_inner else (inner, outer)
    code = first.result()
    await _finish(to_inner, to_outer)
    if code is None:
        _abort(other_side, request)
    else:
        await _close(other_side, code)
        await _close(ended_by, code)


async def _pump(
    source: AnyWebSocket, sink: AnyWebSocket, gate: Callable[[], Awaitable[None]] | None
) -> int | None:
    """Copy frames; return the close code the source sent, or None if it dropped."""
    while True:
        message = await source.receive()
        kind = message.type
        if gate is not None and kind in _DATA:
            try:
                await gate()
            except ProxyError:
                return _SANDBOX_GONE
        try:
            if kind in _DATA:
                await sink.send_frame(message.data, kind)
            elif kind is WSMsgType.PING:
                await sink.ping(message.data)
            elif kind is WSMsgType.PONG:
                await sink.pong(message.data)
            elif kind is WSMsgType.CLOSE:
                return int(message.data)
            elif kind in _GONE:
                return None
        except ConnectionError:
            return None


async def _finish(*tasks: asyncio.Task[int | None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close(ws: AnyWebSocket, code: int) -> None:
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=1000 if code in _NOT_SENDABLE else code)


def _abort(ws: AnyWebSocket, request: web.BaseRequest) -> None:
    # A side that dropped without a close frame is mirrored by dropping the other:
    # a made-up close code would tell that peer a lie about how the session ended.
    if isinstance(ws, web.WebSocketResponse):
        if request.transport is not None:
            request.transport.abort()
    else:
        ws._response.close()
