"""The admin listener: liveness and readiness for orchestrators (metrics join later)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from wakeproxy.server import Listening, serving_app

# Returns a mapping of check name → "ok" | "degraded" | "down".
ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]


def build_admin_app(readiness: ReadinessCheck) -> web.Application:
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
    return app


def running_admin(listen: str, readiness: ReadinessCheck) -> AbstractAsyncContextManager[Listening]:
    return serving_app(build_admin_app(readiness), listen)
