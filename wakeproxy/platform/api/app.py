"""The E2B-compatible control-plane API of the embedded platform (an aiohttp app).

    POST   /sandboxes, /v2/sandboxes        create                       201 Sandbox
    GET    /sandboxes                       running sandboxes (v1)       200 [ListedSandbox]
    GET    /v2/sandboxes                    filtered, paged              200 [ListedSandbox]
                                                                          + x-next-token
    GET    /sandboxes/{id}                  one sandbox                  200 SandboxDetail
    DELETE /sandboxes/{id}                  kill                         204
    POST   /sandboxes/{id}/pause            pause                        204, 409 if paused
    POST   /sandboxes/{id}/resume           resume (deprecated)          201, 409 if running
    POST   /sandboxes/{id}/connect,         resume if paused; the        200 was running,
           /v2/sandboxes/{id}/connect       timeout only extends         201 resumed
    POST   /sandboxes/{id}/timeout          end `timeout` s from now     204
    POST   /sandboxes/{id}/refreshes        extend by `duration` s       204
    GET    /sandboxes/{id}/metrics          no metrics are kept          200 []
    GET    /health                          no API key needed            204

For proxies in other processes (`wakeproxy.platform.api.extension`, docs/backend-protocol.md):
`GET /sandboxes/{id}` adds a "wakeproxy" object, `connect` with {"autoResume": true}
resumes as traffic would, `GET /sandboxes/{id}/ports/{port}` says where a port is
reached, `POST /wakeproxy/activity` takes activity and `GET /wakeproxy/events` streams
every state change.

An unknown or killed sandbox is 404 everywhere. Errors are `{"code", "message"}` (the
SDKs' generated clients fail to parse an error body without both): 400 malformed,
401 API key, 404, 409 wrong state, 429 sandbox limit, 503 runtime failure, 507 the data
dir is full (what E2B answers for a full disk; nothing was changed), 500 else.
The API key travels in `X-API-KEY`; without a configured key every key is accepted.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from wakeproxy.backends.base import SandboxState
from wakeproxy.errors import (
    Conflict,
    LimitExceeded,
    NotAllowed,
    NotFound,
    Unavailable,
    WakeproxyError,
)
from wakeproxy.platform.api import listing
from wakeproxy.platform.api.extension import add_extension_routes, extension_json, wants_auto_resume
from wakeproxy.platform.api.wire import (
    ApiSettings,
    BadRequest,
    detail_json,
    error_json,
    listed_json,
    parse_create,
    parse_timeout,
    sandbox_json,
)
from wakeproxy.platform.contracts import SandboxUnsupported
from wakeproxy.platform.control.lifecycle import (
    DEFAULT_TIMEOUT,
    IllegalTransition,
    InvalidLifecycle,
)
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.control.records import NoSpace

log = logging.getLogger(__name__)

__all__ = ["ApiSettings", "build_api"]

V1_CREATE_TIMEOUT = 15.0  # the v1 `NewSandbox` default
LEGACY_RESUME_TIMEOUT = 15.0  # the `ResumedSandbox` default

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BadRequest, 400),
    (SandboxUnsupported, 400),
    (InvalidLifecycle, 400),
    (NotFound, 404),
    (IllegalTransition, 409),
    (NotAllowed, 409),
    (Conflict, 409),
    (LimitExceeded, 429),
    (NoSpace, 507),
    (Unavailable, 503),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_api(
    manager: SandboxManager, settings: ApiSettings, *, broker: str | None = None
) -> web.Application:
    """The API app; the caller owns `manager` (starts and closes it). With `broker` (the
    path of the platform's socket broker) proxies in other processes reach sandboxes
    with their own network namespace."""
    api = _Api(manager, settings)
    app = web.Application(middlewares=[_errors, _api_key(settings.api_key)])
    add = app.router.add_route
    add("GET", "/health", api.health)
    add("POST", "/sandboxes", api.create_v1)
    add("POST", "/v2/sandboxes", api.create_v2)
    add("GET", "/sandboxes", api.list_v1)
    add("GET", "/v2/sandboxes", api.list_v2)
    add("GET", "/sandboxes/{id}", api.detail)
    add("DELETE", "/sandboxes/{id}", api.kill)
    add("POST", "/sandboxes/{id}/pause", api.pause)
    add("POST", "/sandboxes/{id}/resume", api.resume)
    add("POST", "/sandboxes/{id}/connect", api.connect_v1)
    add("POST", "/v2/sandboxes/{id}/connect", api.connect_v2)
    add("POST", "/sandboxes/{id}/timeout", api.timeout)
    add("POST", "/sandboxes/{id}/refreshes", api.refresh)
    add("GET", "/sandboxes/{id}/metrics", api.metrics)
    add_extension_routes(app, manager, broker)
    return app


class _Api:
    def __init__(self, manager: SandboxManager, settings: ApiSettings) -> None:
        self._manager = manager
        self._settings = settings

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def create_v1(self, request: web.Request) -> web.Response:
        return await self._create(request, V1_CREATE_TIMEOUT)

    async def create_v2(self, request: web.Request) -> web.Response:
        return await self._create(request, DEFAULT_TIMEOUT)

    async def _create(self, request: web.Request, default_timeout: float) -> web.Response:
        asked = parse_create(await _body(request), self._settings, default_timeout)
        record = await self._manager.create(asked)
        return web.json_response(sandbox_json(record, self._settings), status=201)

    async def list_v1(self, request: web.Request) -> web.Response:
        query = listing.ListQuery(
            states=frozenset({"running"}),
            metadata=listing.parse_metadata(request.query.get("metadata")),
        )
        chosen = listing.select(self._manager.records(), query)
        return web.json_response([listed_json(r, self._settings) for r in chosen])

    async def list_v2(self, request: web.Request) -> web.Response:
        query = listing.parse_query(request.query)
        chosen = listing.select(self._manager.records(), query)
        served, token = listing.page(chosen, query.limit)
        headers = {"x-next-token": token} if token else None
        body = [listed_json(r, self._settings) for r in served]
        return web.json_response(body, headers=headers)

    async def detail(self, request: web.Request) -> web.Response:
        sandbox_id = request.match_info["id"]
        record = self._manager.get(sandbox_id)
        if record is None:
            raise NotFound(f"The sandbox was not found: {sandbox_id}")
        body = detail_json(record, self._settings)
        body["wakeproxy"] = extension_json(record)
        return web.json_response(body)

    async def kill(self, request: web.Request) -> web.Response:
        await self._manager.kill(request.match_info["id"])
        return web.Response(status=204)

    async def pause(self, request: web.Request) -> web.Response:
        await self._manager.pause(request.match_info["id"])
        return web.Response(status=204)

    async def resume(self, request: web.Request) -> web.Response:
        sandbox_id = request.match_info["id"]
        seconds = self._seconds(await _body(request), "timeout", LEGACY_RESUME_TIMEOUT)
        found = self._manager.get(sandbox_id)
        if found is not None and found.state is SandboxState.RUNNING:
            raise IllegalTransition(found.state, "resume")
        record, _ = await self._manager.resume(sandbox_id, seconds=seconds)
        return web.json_response(sandbox_json(record, self._settings), status=201)

    async def connect_v1(self, request: web.Request) -> web.Response:
        return await self._connect(request, None)

    async def connect_v2(self, request: web.Request) -> web.Response:
        return await self._connect(request, DEFAULT_TIMEOUT)

    async def _connect(self, request: web.Request, default: float | None) -> web.Response:
        sandbox_id = request.match_info["id"]
        asked = await _body(request)
        if wants_auto_resume(asked):  # a proxy's wake: refused when auto-resume is off
            record, resumed = await self._manager.resume(sandbox_id, auto=True)
        else:
            seconds = self._seconds(asked, "timeout", default)
            record, resumed = await self._manager.resume(sandbox_id, seconds=seconds)
        body = sandbox_json(record, self._settings)
        return web.json_response(body, status=201 if resumed else 200)

    async def timeout(self, request: web.Request) -> web.Response:
        seconds = self._seconds(await _body(request), "timeout", None)
        self._manager.set_timeout(request.match_info["id"], seconds)
        return web.Response(status=204)

    async def refresh(self, request: web.Request) -> web.Response:
        seconds = self._seconds(await _body(request), "duration", 0.0)
        self._manager.extend(request.match_info["id"], seconds)
        return web.Response(status=204)

    async def metrics(self, request: web.Request) -> web.Response:
        sandbox_id = request.match_info["id"]
        if self._manager.get(sandbox_id) is None:
            raise NotFound(f"The sandbox was not found: {sandbox_id}")
        return web.json_response([])

    def _seconds(self, body: Any, name: str, default: float | None) -> float:
        return parse_timeout(body, name, default, self._settings.max_timeout)


async def _body(request: web.Request) -> Any:
    """The JSON body, or None when there is none."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None


def _status(exc: Exception) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = error_json(exc.status, exc.reason)
        return web.json_response(body, status=exc.status, headers=_allow(exc))
    except WakeproxyError as exc:
        status = _status(exc)
        if status == 500:
            log.exception("API request %s %s failed", request.method, request.path)
        return web.json_response(error_json(status, str(exc)), status=status)
    except Exception:
        log.exception("API request %s %s failed", request.method, request.path)
        return web.json_response(error_json(500, "internal error"), status=500)


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def _api_key(expected: str | None) -> Middleware:
    wanted = None if expected is None else expected.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if wanted is not None and request.path != "/health":
            given = request.headers.get("X-API-KEY", "").encode()
            if not hmac.compare_digest(given, wanted):
                raise web.HTTPUnauthorized(reason="Invalid API key")
        return await handler(request)

    return check
