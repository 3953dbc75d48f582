"""The client-facing HTTP handler: route, resolve (waking if need be), relay.

Every request ends in exactly one of: a relayed upstream response, a proxy-made error
(JSON for API clients, a page for browsers) or, for a browser navigation whose sandbox
is still waking, the waiting page.
"""

from __future__ import annotations

import math

from aiohttp import web

from wakeproxy.errors import ProxyError
from wakeproxy.gateway import Gateway
from wakeproxy.proxy.http_relay import HttpRelay, UpstreamRefused
from wakeproxy.proxy.pages import WAIT_PATH, waiting_page
from wakeproxy.proxy.responses import render_error, wants_html
from wakeproxy.proxy.ws_relay import WebSocketRelay, is_websocket
from wakeproxy.routing import Router, Target
from wakeproxy.wake import Acquired, StillWaking


class ProxyFront:
    def __init__(
        self, router: Router, gateway: Gateway, http: HttpRelay, websocket: WebSocketRelay
    ) -> None:
        self._router = router
        self._gateway = gateway
        self._http = http
        self._websocket = websocket

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        navigation = False
        try:
            target = self._router.route(request.headers.get("Host"), request.headers)
            if request.path == WAIT_PATH:
                return await self._wait(target)
            navigation = wants_html(request.headers)
            acquired = await self._resolve(request, target, navigation)
            try:
                return await self._forward(request, target, acquired)
            except UpstreamRefused:
                # Nothing was sent, so asking again is safe even for a POST: the sandbox
                # may have been paused under us, and the wake path brings it back.
                self._gateway.coordinator.invalidate(target.sandbox_id)
                acquired = await self._resolve(request, target, navigation)
                return await self._forward(request, target, acquired)
        except StillWaking as waking:
            return _waiting_response(waking)
        except ProxyError as error:
            return error_response(error, request)

    async def _resolve(
        self, request: web.BaseRequest, target: Target, navigation: bool
    ) -> Acquired:
        return await self._gateway.resolve(
            target, request.method, request.path, request.headers, navigation=navigation
        )

    async def _forward(
        self, request: web.BaseRequest, target: Target, acquired: Acquired
    ) -> web.StreamResponse:
        if is_websocket(request):
            return await self._websocket.forward(
                request, acquired.upstream, target, self._gateway.ensure_running
            )
        return await self._http.forward(request, acquired.upstream, target)

    async def _wait(self, target: Target) -> web.Response:
        """The waiting page's long-poll: answers 200 once the sandbox serves the port."""
        await self._gateway.coordinator.acquire(target.sandbox_id, target.port)
        return web.json_response(
            {"ready": True, "sandboxId": target.sandbox_id},
            headers={"Cache-Control": "no-store"},
        )


def _waiting_response(waking: StillWaking) -> web.Response:
    retry = max(1, math.ceil(waking.retry_after or 1))
    return web.Response(
        status=503,
        body=waiting_page(waking.sandbox_id or "", retry),
        content_type="text/html",
        charset="utf-8",
        headers={"Retry-After": str(retry), "Cache-Control": "no-store"},
    )


def error_response(error: ProxyError, request: web.BaseRequest) -> web.Response:
    rendered = render_error(error, html=wants_html(request.headers))
    response = web.Response(status=rendered.status, body=rendered.body)
    response.headers.extend(rendered.headers)
    return response
