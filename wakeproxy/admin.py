"""The admin listener: liveness, readiness and Prometheus metrics for operators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from wakeproxy.discovery import TargetSource
from wakeproxy.errors import ProxyError
from wakeproxy.server import Listening, serving_app

# The classic text format, which every Prometheus reads; wakeproxy's metric and label
# names need none of the newer format's escaping, so the body is the same either way.
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Returns a mapping of part name → "ok" | "degraded" | "down" | "disabled".
ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]


def build_admin_app(
    readiness: ReadinessCheck,
    registry: CollectorRegistry | None = None,
    targets: TargetSource | None = None,
) -> web.Application:
    """`/healthz`, `/readyz`, `/metrics` when there is a `registry` to expose, and
    `/sd/sandboxes` (Prometheus `http_sd_configs`) when there are `targets` to list."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = await readiness()
        down = any(state == "down" for state in checks.values())
        degraded = any(state == "degraded" for state in checks.values())
        status = "down" if down else "degraded" if degraded else "ok"
        # Degraded still serves traffic, so it stays "ready" for load balancers.
        return web.json_response({"status": status, "checks": checks}, status=503 if down else 200)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if registry is not None:
        exposed = registry

        async def metrics(request: web.Request) -> web.Response:
            response = web.Response(body=generate_latest(exposed))
            response.headers["Content-Type"] = _CONTENT_TYPE
            return response

        app.router.add_get("/metrics", metrics)
    if targets is not None:
        listed = targets

        async def sandboxes(request: web.Request) -> web.Response:
            try:
                groups = await listed()
            except ProxyError as exc:  # Prometheus keeps the targets it had meanwhile
                return web.json_response({"error": exc.message}, status=503)
            return web.json_response(groups)

        app.router.add_get("/sd/sandboxes", sandboxes)
    return app


def running_admin(
    listen: str,
    readiness: ReadinessCheck,
    registry: CollectorRegistry | None = None,
    targets: TargetSource | None = None,
) -> AbstractAsyncContextManager[Listening]:
    return serving_app(build_admin_app(readiness, registry, targets), listen)
