"""The client-facing HTTP handler: route, resolve, relay — or answer with an error."""

from __future__ import annotations

from aiohttp import web

from wakeproxy.errors import ProxyError
from wakeproxy.gateway import Gateway
from wakeproxy.proxy.http_relay import HttpRelay
from wakeproxy.proxy.responses import render_error, wants_html
from wakeproxy.proxy.ws_relay import WebSocketRelay, is_websocket
from wakeproxy.routing import Router


class ProxyFront:
    def __init__(
        self, router: Router, gateway: Gateway, http: HttpRelay, websocket: WebSocketRelay
    ) -> None:
        self._router = router
        self._gateway = gateway
        self._http = http
        self._websocket = websocket

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            target = self._router.route(request.headers.get("Host"), request.headers)
            upstream = await self._gateway.resolve(target, request.headers)
            if is_websocket(request):
                return await self._websocket.forward(
                    request, upstream, target.sandbox_id, target.port
                )
            return await self._http.forward(request, upstream, target.sandbox_id, target.port)
        except ProxyError as error:
            return error_response(error, request)


def error_response(error: ProxyError, request: web.BaseRequest) -> web.Response:
    rendered = render_error(error, html=wants_html(request.headers))
    response = web.Response(status=rendered.status, body=rendered.body)
    response.headers.extend(rendered.headers)
    return response
