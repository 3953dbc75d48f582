"""The client-facing HTTP handler: route, resolve (waking if need be), relay.

Every request ends in exactly one of: a relayed upstream response, a proxy-made error
(JSON for API clients, a page for browsers) or, for a browser navigation whose sandbox
is still waking, the waiting page. However it ends (a client that leaves counts as
499, as in nginx), it is counted once (`RequestRecorder`) and written to the access log.
A response to a request that was held for a wake says how long (`wait_headers`).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol

from aiohttp import web

from wakeproxy.accesslog import AccessLog
from wakeproxy.errors import ProxyError
from wakeproxy.gateway import Gateway
from wakeproxy.proxy.headers import wait_headers
from wakeproxy.proxy.http_relay import HttpRelay, RelayedResponse, UpstreamRefused
from wakeproxy.proxy.pages import WAIT_PATH, waiting_page
from wakeproxy.proxy.responses import render_error, wants_html
from wakeproxy.proxy.ws_relay import WebSocketRelay, is_websocket
from wakeproxy.routing import Router, Target
from wakeproxy.wake import Acquired, StillWaking

CLIENT_GONE = 499
"""The status recorded for a request whose client left before it was answered."""


class RequestRecorder(Protocol):
    """What the front reports about every request; `wakeproxy.metrics.Metrics` implements it."""

    def request_finished(self, kind: str, code: int, seconds: float) -> None:
        """`kind`: "http" or "websocket"; `code`: the status answered (499: client left)."""

    def rejected(self, reason: str) -> None:
        """The proxy answered a request itself (the error's `reason`) instead of forwarding it."""


class _Exchange:
    """What one request came to, for its metrics and its access-log line."""

    __slots__ = ("forwarding", "held_for", "target", "triggered", "websocket")

    def __init__(self, websocket: bool) -> None:
        self.websocket = websocket
        self.target: Target | None = None
        self.held_for = 0.0
        self.triggered = False
        self.forwarding = False  # errors from here on are the upstream's, not rejections


class ProxyFront:
    def __init__(
        self,
        router: Router,
        gateway: Gateway,
        http: HttpRelay,
        websocket: WebSocketRelay,
        recorder: RequestRecorder,
        access: AccessLog | None = None,
    ) -> None:
        self._router = router
        self._gateway = gateway
        self._http = http
        self._websocket = websocket
        self._recorder = recorder
        self._access = access

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = _Exchange(is_websocket(request))
        try:
            response = await self._answer(request, exchange)
        except asyncio.CancelledError:
            self._finished(request, exchange, None, CLIENT_GONE, started)
            raise
        except Exception:
            self._finished(request, exchange, None, 500, started)
            raise
        self._finished(request, exchange, response, response.status, started)
        return response

    def _finished(
        self,
        request: web.BaseRequest,
        exchange: _Exchange,
        response: web.StreamResponse | None,
        status: int,
        started: float,
    ) -> None:
        seconds = time.perf_counter() - started
        websocket = exchange.websocket
        self._recorder.request_finished("websocket" if websocket else "http", status, seconds)
        if self._access is not None:
            target = exchange.target
            self._access.record(
                request.method,
                request.path,
                status,
                _body_bytes(response),
                seconds,
                None if target is None else target.sandbox_id,
                None if target is None else target.port,
                exchange.held_for,
                exchange.triggered,
                websocket,
            )

    async def _answer(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        navigation = False
        try:
            target = self._router.route(request.headers.get("Host"), request.headers)
            exchange.target = target
            if request.path == WAIT_PATH:
                return await self._wait(target)
            navigation = wants_html(request.headers)
            acquired = await self._resolve(request, target, navigation)
            try:
                return await self._forward(request, target, acquired, exchange)
            except UpstreamRefused:
                # Nothing was sent, so asking again is safe even for a POST: the sandbox
                # may have been paused under us, and the wake path brings it back.
                self._gateway.coordinator.invalidate(target.sandbox_id)
                exchange.forwarding = False
                acquired = await self._resolve(request, target, navigation)
                return await self._forward(request, target, acquired, exchange)
        except StillWaking as waking:
            self._rejected(waking, exchange)
            return _waiting_response(waking)
        except ProxyError as error:
            self._rejected(error, exchange)
            return error_response(error, request)

    def _rejected(self, error: ProxyError, exchange: _Exchange) -> None:
        exchange.held_for += error.held_for
        if not exchange.forwarding:  # the relays count their own (upstream) errors
            self._recorder.rejected(error.reason)

    async def _resolve(
        self, request: web.BaseRequest, target: Target, navigation: bool
    ) -> Acquired:
        return await self._gateway.resolve(
            target, request.method, request.path, request.headers, navigation=navigation
        )

    async def _forward(
        self, request: web.BaseRequest, target: Target, acquired: Acquired, exchange: _Exchange
    ) -> web.StreamResponse:
        exchange.forwarding = True
        extra = None
        if acquired.held_for:
            exchange.held_for += acquired.held_for
            exchange.triggered = exchange.triggered or acquired.triggered_wake
            extra = wait_headers(exchange.held_for)
        if exchange.websocket:
            return await self._websocket.forward(
                request, acquired.upstream, target, self._gateway.ensure_running, extra
            )
        in_flight = self._gateway.in_flight
        in_flight.begin(target.sandbox_id)
        try:
            return await self._http.forward(request, acquired.upstream, target, extra)
        finally:
            in_flight.end(target.sandbox_id)

    async def _wait(self, target: Target) -> web.Response:
        """The waiting page's long-poll: answers 200 once the sandbox serves the port."""
        await self._gateway.coordinator.acquire(target.sandbox_id, target.port)
        return web.json_response(
            {"ready": True, "sandboxId": target.sandbox_id},
            headers={"Cache-Control": "no-store"},
        )


def _waiting_response(waking: StillWaking) -> web.Response:
    retry = max(1, math.ceil(waking.retry_after or 1))
    response = web.Response(
        status=503,
        body=waiting_page(waking.sandbox_id or "", retry),
        content_type="text/html",
        charset="utf-8",
        headers={"Retry-After": str(retry), "Cache-Control": "no-store"},
    )
    if waking.held_for:
        response.headers.extend(wait_headers(waking.held_for))
    return response


def error_response(error: ProxyError, request: web.BaseRequest) -> web.Response:
    rendered = render_error(error, html=wants_html(request.headers))
    response = web.Response(status=rendered.status, body=rendered.body)
    response.headers.extend(rendered.headers)
    if error.held_for:
        response.headers.extend(wait_headers(error.held_for))
    return response


def _body_bytes(response: web.StreamResponse | None) -> int:
    """Body bytes of the answer (a relayed body as far as it got; 0 for a WebSocket)."""
    if isinstance(response, RelayedResponse):
        return response.body_bytes
    if isinstance(response, web.Response):
        return response.content_length or 0
    return 0
