"""A stand-in control plane speaking docs/backend-protocol.md over real HTTP, for tests of
proxy replicas that use the `http` backend.

Each sandbox's ports are one real `upstream.Upstream` server (any port number answers
with its address). Pausing makes that server refuse connections (dropping open ones),
as a frozen sandbox's ports are unreachable; a resume takes `resume_delay` seconds, shows
`resuming` meanwhile, then listens again. Concurrent resumes join the one in flight, as
the embedded platform's do. Nothing here talks to Redis: it plays a platform that does
not announce its changes, so replicas learn of them only from one another.

``failing`` makes every connect answer 503. Counters: ``connects`` (calls of POST
.../connect), ``resumes`` (pauses undone), ``gets`` (lookups per sandbox),
``connect_peers`` (the client address of each connect, to find which process asked),
``touched`` (activity batches).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from upstream import Upstream, start_upstream

from wakeproxy.server import Listening, serving_app


@dataclass
class Sandbox:
    upstream: Upstream
    state: str = "running"
    version: int = 1
    auto_resume: bool = True
    resuming: asyncio.Task[None] | None = field(default=None, repr=False)


class ControlPlane:
    def __init__(self) -> None:
        self.sandboxes: dict[str, Sandbox] = {}
        self.resume_delay = 0.0
        self.failing = False  # connect answers 503, as a control plane that is down
        self.connects = 0
        self.resumes = 0
        self.gets: Counter[str] = Counter()
        self.connect_peers: list[tuple[str, int]] = []
        self.touched: list[dict[str, float]] = []
        self._listening: Listening | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def url(self) -> str:
        assert self._listening is not None
        return self._listening.url

    async def start(self) -> ControlPlane:
        app = web.Application()
        app.router.add_get("/health", _health)
        app.router.add_get("/sandboxes/{id}", self._detail)
        app.router.add_post("/sandboxes/{id}/connect", self._connect)
        app.router.add_get("/sandboxes/{id}/ports/{port}", self._port)
        app.router.add_post("/wakeproxy/activity", self._activity)
        self._listening = await self._stack.enter_async_context(serving_app(app, "127.0.0.1:0"))
        return self

    async def close(self) -> None:
        for sandbox in self.sandboxes.values():
            if sandbox.resuming is not None:
                sandbox.resuming.cancel()
            await sandbox.upstream.close()
        await self._stack.aclose()

    async def add(
        self, sandbox_id: str, *, state: str = "running", auto_resume: bool = True
    ) -> Sandbox:
        upstream = await start_upstream()
        sandbox = self.sandboxes[sandbox_id] = Sandbox(upstream, auto_resume=auto_resume)
        if state == "paused":
            await self.pause(sandbox_id)
        return sandbox

    async def pause(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes[sandbox_id]
        await sandbox.upstream.refuse_connections()
        sandbox.state, sandbox.version = "paused", sandbox.version + 1

    # -- the protocol -------------------------------------------------------------------------

    async def _detail(self, request: web.Request) -> web.Response:
        sandbox_id = request.match_info["id"]
        self.gets[sandbox_id] += 1
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return _error(404, f"The sandbox was not found: {sandbox_id}")
        return web.json_response(_detail(sandbox_id, sandbox))

    async def _connect(self, request: web.Request) -> web.Response:
        self.connects += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.connect_peers.append((peer[0], peer[1]))
        sandbox_id = request.match_info["id"]
        sandbox = self.sandboxes.get(sandbox_id)
        if self.failing:
            return _error(503, "the control plane is down")
        if sandbox is None:
            return _error(404, f"The sandbox was not found: {sandbox_id}")
        body = await request.json()
        if sandbox.state == "running":
            return web.json_response({"sandboxID": sandbox_id}, status=200)
        if body.get("autoResume") and not sandbox.auto_resume:
            return _error(409, f"Sandbox {sandbox_id} is paused and auto-resume is off")
        if sandbox.resuming is None:
            sandbox.state, sandbox.version = "resuming", sandbox.version + 1
            sandbox.resuming = asyncio.create_task(self._resume(sandbox))
        await asyncio.shield(sandbox.resuming)
        return web.json_response({"sandboxID": sandbox_id}, status=201)

    async def _resume(self, sandbox: Sandbox) -> None:
        await asyncio.sleep(self.resume_delay)
        await sandbox.upstream.accept_connections()
        sandbox.state, sandbox.version = "running", sandbox.version + 1
        sandbox.resuming = None
        self.resumes += 1

    async def _port(self, request: web.Request) -> web.Response:
        sandbox = self.sandboxes.get(request.match_info["id"])
        if sandbox is None:
            return _error(404, "The sandbox was not found")
        if sandbox.state != "running":
            return _error(409, "the sandbox is not running")
        return web.json_response({"host": "127.0.0.1", "port": sandbox.upstream.port})

    async def _activity(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.touched.append(dict(body["activity"]))
        return _no_content()


def _detail(sandbox_id: str, sandbox: Sandbox) -> Mapping[str, Any]:
    return {
        "sandboxID": sandbox_id,
        "templateID": "base",
        "state": "running" if sandbox.state in ("running", "resuming") else "paused",
        "endAt": "2030-01-01T00:00:00.000Z",
        "lifecycle": {"onTimeout": "pause", "autoResume": sandbox.auto_resume},
        "network": {"allowPublicTraffic": True},
        "wakeproxy": {"state": sandbox.state, "version": sandbox.version},
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


def _no_content() -> web.Response:
    return web.Response(status=204)


async def _health(request: web.Request) -> web.Response:
    return _no_content()
