"""A paused sandbox behind a real proxy, for the end-to-end tests of waking.

`wake_scene()` wires a `fakes.FakeBackend` — a stand-in for a real sandbox platform —
to a real proxy (`running_proxy`, real sockets) and a real upstream server, and plays
the platform's part at the upstream: while the sandbox is not running the upstream's
port refuses connections, and a successful resume makes it listen again before the
backend reports the sandbox running (as a thawed process's port comes back). The
backend's resume waits for `Scene.gate`, so a test decides when the wake finishes.

`until()` polls a condition the test can see (a counter, a phase); its bound only turns
a hang into a failure with a message, so it is no timing assertion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from fakes import FakeBackend
from multidict import CIMultiDictProxy
from rawhttp import GUARD
from support import StartProxy, host_for
from upstream import Upstream

from wakeproxy.backends.base import SandboxState
from wakeproxy.server import Listening
from wakeproxy.wake import WakeCoordinator, WakeSettings

SANDBOX = "sleepy"

BROWSER: Mapping[str, str] = {
    "Sec-Fetch-Mode": "navigate",
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
}


async def until(predicate: Callable[[], object], what: str, timeout: float = GUARD) -> None:  # noqa: ASYNC109
    """Return once `predicate()` is true (checked every couple of milliseconds)."""
    try:
        async with asyncio.timeout(timeout):
            # Polled: what tests wait for (counters inside the proxy) has no event to await.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"still waiting after {timeout}s for: {what}") from None


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Scene:
    proxy: Listening
    backend: FakeBackend
    upstream: Upstream
    gate: asyncio.Event  # the backend's resume waits for it
    client: aiohttp.ClientSession  # no connection limit: every request may be held at once

    @property
    def coordinator(self) -> WakeCoordinator:
        coordinator = self.proxy.coordinator
        assert coordinator is not None, "the proxy has no wake coordinator"
        return coordinator

    def host(self, sandbox_id: str = SANDBOX, upstream: Upstream | None = None) -> str:
        return host_for((upstream or self.upstream).port, sandbox_id)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def ws_url(self) -> str:
        return f"ws://{self.proxy.host}:{self.proxy.port}/ws"

    @property
    def held(self) -> int:
        return self.coordinator.held_total

    async def send(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        host: str | None = None,
    ) -> Reply:
        """One request through the proxy to `host` (default: the paused sandbox's port)."""
        all_headers = {"Host": host or self.host(), **(headers or {})}
        async with self.client.request(
            method, self.url + path, data=data, headers=all_headers
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def until_held(self, count: int) -> None:
        """Wait until the proxy holds `count` requests and the backend's resume has begun."""
        await until(
            lambda: self.held == count and self.backend.resume_started.is_set(),
            f"{count} held requests and a resume under way",
        )

    def sent(self, method: str, path: str, **options: Any) -> asyncio.Task[Reply]:
        """`send` as a task, for requests that are to be held."""
        return asyncio.get_running_loop().create_task(self.send(method, path, **options))


@asynccontextmanager
async def wake_scene(
    start_proxy: StartProxy,
    upstream: Upstream,
    *,
    state: SandboxState = SandboxState.PAUSED,
    auto_resume: bool = True,
    settings: WakeSettings | None = None,
    **proxy_fields: object,
) -> AsyncIterator[Scene]:
    """The sandbox `SANDBOX` in `state`, its port served by `upstream`, behind a proxy."""
    backend = FakeBackend()
    backend.add(SANDBOX, state, auto_resume=auto_resume)
    gate = asyncio.Event()
    backend.resume_gate = gate

    listening = asyncio.Lock()  # sandboxes sharing the upstream may resume together

    async def port_comes_back(sandbox_id: str) -> None:
        async with listening:
            # Shielded: a proxy shutting down cancels the resume, and a listener cut off
            # halfway through its start would leak its socket.
            await asyncio.shield(upstream.accept_connections())

    backend.on_resume = port_comes_back
    if state is not SandboxState.RUNNING:
        await upstream.refuse_connections()
    async with (
        start_proxy(backend=backend, wake=settings, **proxy_fields) as proxy,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client,
    ):
        try:
            yield Scene(proxy, backend, upstream, gate, client)
        finally:
            gate.set()  # a resume still waiting must not hold up the proxy's shutdown


def assert_retry_later(reply: Reply, reason: str) -> dict[str, Any]:
    """A 503 that tells the client when to come back; returns the JSON document."""
    assert reply.status == 503, reply.body
    assert int(reply.headers["Retry-After"]) >= 1
    document: dict[str, Any] = reply.json()
    assert document["code"] == 503
    assert document["reason"] == reason, document
    return document
