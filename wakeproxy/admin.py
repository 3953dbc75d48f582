"""The admin listener: liveness and readiness for orchestrators (metrics join later)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from wakeproxy.server import Listening, split_listen

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


@asynccontextmanager
async def running_admin(listen: str, readiness: ReadinessCheck) -> AsyncIterator[Listening]:
    runner = web.AppRunner(build_admin_app(readiness), access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    assert hasattr(server, "sockets")
    bound = server.sockets[0].getsockname()
    try:
        yield Listening(host=bound[0], port=bound[1])
    finally:
        await runner.cleanup()
