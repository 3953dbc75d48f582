"""The `http` backend against the embedded platform's real control-plane API (over a fake
runtime) and its socket broker, and against control planes that fail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fakes_runtime import FakeRuntime
from support import free_port
from upstream import Upstream

from wakeproxy.admin import build_admin_app
from wakeproxy.backends import http as http_backend
from wakeproxy.backends.base import AGENT_PORT, Lifecycle, SandboxState
from wakeproxy.backends.http import HttpBackend, info_from_detail, upstream_from_json
from wakeproxy.discovery import targets_of
from wakeproxy.errors import Conflict, NotAllowed, NotFound, Unavailable
from wakeproxy.platform.api.app import build_api
from wakeproxy.platform.api.wire import ApiSettings
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.runtime.portbroker import running_broker
from wakeproxy.server import serving_app

S = SandboxState
PORT = 3000


@dataclass
class Plane:
    url: str
    manager: SandboxManager
    runtime: FakeRuntime
    session: aiohttp.ClientSession
    broker: Path

    async def create(self, **fields: Any) -> str:
        body = {"templateID": "base", "autoPause": True, "autoResume": {"enabled": True}}
        async with self.session.post(f"{self.url}/sandboxes", json={**body, **fields}) as reply:
            assert reply.status == 201, await reply.text()
            sandbox_id: str = (await reply.json())["sandboxID"]
        return sandbox_id


async def _plane(tmp_path: Path, runtime: FakeRuntime, api_key: str | None = None) -> Any:
    manager = SandboxManager(runtime, tmp_path)
    await manager.start()
    settings = ApiSettings(api_key=api_key)
    async with (
        running_broker(manager.open_socket, tmp_path) as broker,
        serving_app(build_api(manager, settings, broker=str(broker.path)), "127.0.0.1:0") as api,
        aiohttp.ClientSession(headers={"X-API-KEY": api_key or "k"}) as session,
    ):
        try:
            yield Plane(api.url, manager, runtime, session, broker.path)
        finally:
            await manager.close(kill_all=True)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    async for running in _plane(tmp_path, FakeRuntime()):
        yield running


@pytest.fixture
async def backend(plane: Plane) -> AsyncIterator[HttpBackend]:
    async with HttpBackend(plane.url) as remote:
        yield remote


async def test_a_lookup_reads_state_version_lifecycle_and_token(
    plane: Plane, backend: HttpBackend
) -> None:
    sandbox_id = await plane.create(network={"allowPublicTraffic": False})
    info = await backend.get(sandbox_id)
    assert info is not None
    record = plane.manager.get(sandbox_id)
    assert record is not None
    assert (info.state, info.version) == (S.RUNNING, record.life.version)
    assert info.lifecycle == Lifecycle("pause", True)
    assert info.traffic_token == record.traffic_token is not None
    assert info.end_at == pytest.approx(record.life.end_at, abs=0.001)
    assert info.agent_port == AGENT_PORT
    assert await backend.get("nosuchsandbox") is None


async def test_a_resume_wakes_only_what_allows_auto_resume(
    plane: Plane, backend: HttpBackend
) -> None:
    wakes, stays = await plane.create(), await plane.create(autoResume={"enabled": False})
    for sandbox_id in (wakes, stays):
        await plane.manager.pause(sandbox_id)
    paused = await backend.get(wakes)
    assert paused is not None
    assert paused.state is S.PAUSED
    woken = await backend.resume(wakes)
    assert (woken.state, woken.version) == (S.RUNNING, paused.version + 2)
    with pytest.raises(NotAllowed, match="auto-resume is off"):
        await backend.resume(stays)
    assert (await backend.get(stays)).state is S.PAUSED  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await backend.resume("nosuchsandbox")


async def test_a_port_of_a_sandbox_on_host_networking_is_its_loopback_port(
    tmp_path: Path,
) -> None:
    async for shared in _plane(tmp_path, FakeRuntime(isolated=False)):
        sandbox_id = await shared.create()
        async with HttpBackend(shared.url) as remote:
            info = await remote.get(sandbox_id)
            assert info is not None
            upstream = await remote.upstream(info, PORT)
            assert (upstream.host, upstream.port, upstream.opener) == ("127.0.0.1", PORT, None)
            agent = await remote.upstream(info, AGENT_PORT)
            assert agent.port == shared.manager.get(sandbox_id).runtime.agent_port  # type: ignore[union-attr]


async def test_a_port_in_a_network_namespace_comes_through_the_socket_broker(
    plane: Plane, backend: HttpBackend, upstream: Upstream
) -> None:
    sandbox_id = await plane.create()
    plane.runtime.ports[sandbox_id, PORT] = ("127.0.0.1", upstream.port)
    info = await backend.get(sandbox_id)
    assert info is not None
    reached = await backend.upstream(info, PORT)
    assert reached.opener is not None
    sock = await reached.opener()
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    # Nothing listens on another port: refused, as a connect would be.
    elsewhere = await backend.upstream(info, PORT + 1)
    assert elsewhere.opener is not None
    with pytest.raises(ConnectionRefusedError, match="nothing listens"):
        await elsewhere.opener()


async def test_a_port_of_a_paused_sandbox_has_no_address(
    plane: Plane, backend: HttpBackend
) -> None:
    sandbox_id = await plane.create()
    info = await backend.get(sandbox_id)
    assert info is not None
    await plane.manager.pause(sandbox_id)
    with pytest.raises(Conflict, match="not running"):
        await backend.upstream(info, PORT)


async def test_activity_reaches_the_platform(plane: Plane, backend: HttpBackend) -> None:
    sandbox_id = await plane.create(timeout=60, activityExtendsTimeout=True)
    before = plane.manager.get(sandbox_id).life.end_at  # type: ignore[union-attr]
    later = before - 60 + 600  # active 10 minutes after it started
    await backend.touch({sandbox_id: later, "nosuchsandbox": later})
    assert plane.manager.get(sandbox_id).life.end_at > before  # type: ignore[union-attr]


async def test_a_wrong_api_key_is_not_allowed(tmp_path: Path) -> None:
    async for keyed in _plane(tmp_path, FakeRuntime(), api_key="right"):
        sandbox_id = await keyed.create()
        async with HttpBackend(keyed.url, api_key="wrong") as remote:
            with pytest.raises(NotAllowed, match="Invalid API key"):
                await remote.get(sandbox_id)
        async with HttpBackend(keyed.url, api_key="right") as remote:
            assert await remote.get(sandbox_id) is not None


# -- control planes that fail -------------------------------------------------------------------


async def test_a_control_plane_that_is_down_or_silent_is_unavailable() -> None:
    async with HttpBackend(f"http://127.0.0.1:{free_port()}") as remote:
        with pytest.raises(Unavailable, match="did not answer"):
            await remote.get("sbx")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with HttpBackend(url, request_timeout=0.2) as remote:
            async with asyncio.timeout(5):
                with pytest.raises(Unavailable):
                    await remote.touch({"sbx": 1.0})
    finally:
        silent.close()


async def test_errors_and_malformed_answers_become_backend_errors() -> None:
    answers = {
        "/sandboxes/broken": web.json_response({"state": "sideways"}),
        "/sandboxes/failing": web.json_response({"code": 500, "message": "boom"}, status=500),
        "/sandboxes/junk": web.Response(text="<html>"),
    }

    async def answer(request: web.Request) -> web.Response:
        return answers[request.path]

    app = web.Application()
    app.router.add_get("/sandboxes/{id}", answer)
    async with serving_app(app, "127.0.0.1:0") as server, HttpBackend(server.url) as remote:
        with pytest.raises(Unavailable, match="malformed"):
            await remote.get("broken")
        with pytest.raises(Unavailable, match="boom"):
            await remote.get("failing")
        with pytest.raises(Unavailable, match="malformed"):
            await remote.get("junk")


# -- the wire format ------------------------------------------------------------------------------


def test_a_plain_e2b_detail_is_understood_without_the_extension() -> None:
    detail = {
        "sandboxID": "sbx",
        "state": "paused",
        "endAt": "2030-01-01T00:00:00.000Z",
        "lifecycle": {"onTimeout": "pause", "autoResume": True},
        "network": {"allowPublicTraffic": False},
    }
    info = info_from_detail("sbx", detail)
    assert (info.state, info.version, info.lifecycle) == (S.PAUSED, 0, Lifecycle("pause", True))
    assert info.end_at == 1_893_456_000.0
    # Private, but no token shared: nobody can present the secret it now holds.
    assert info.traffic_token is not None
    assert len(info.traffic_token) > 20


def test_port_addresses() -> None:
    assert upstream_from_json("s", 80, {"host": "10.0.0.5", "port": 8080}).port == 8080
    unix = upstream_from_json("s", 80, {"unixSocket": "/run/s.sock"})
    assert (unix.host, unix.port, unix.opener is not None) == ("s.sandbox.invalid", 80, True)
    with pytest.raises(ValueError, match="expected"):
        upstream_from_json("s", 80, {})


async def test_the_socket_broker_refuses_what_it_cannot_read(plane: Plane) -> None:
    for line in (b"no-port\n", b"sbx 99999\n", b"x" * 300):
        reader, writer = await asyncio.open_unix_connection(str(plane.broker))
        writer.write(line)
        assert (await reader.read()).startswith(b"refused: ")
        writer.close()
        await writer.wait_closed()


async def test_changes_the_platform_makes_are_streamed_to_watchers(
    plane: Plane, backend: HttpBackend
) -> None:
    heard: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    backend.watch(lambda sandbox_id, info: heard.put_nowait((sandbox_id, info)))
    sandbox_id = await plane.create()
    await plane.manager.pause(sandbox_id)
    await plane.manager.kill(sandbox_id)
    states = []
    async with asyncio.timeout(10):
        while True:
            streamed_id, info = await heard.get()
            assert streamed_id == sandbox_id
            states.append(None if info is None else (info.state, info.version))
            if info is None:
                break
    assert states == [(S.RUNNING, 1), (S.PAUSING, 2), (S.PAUSED, 3), None]


async def test_a_control_plane_without_an_event_stream_is_only_asked() -> None:
    app = web.Application()
    async with serving_app(app, "127.0.0.1:0") as server, HttpBackend(server.url) as remote:
        remote.watch(lambda sandbox_id, info: None)
        follower = remote._events
        assert follower is not None
        await asyncio.wait_for(follower, 5)  # it stops following, it does not retry forever


async def test_running_sandboxes_are_listed_page_by_page_for_service_discovery(
    plane: Plane, backend: HttpBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_backend, "_LIST_PAGE", 1)  # every sandbox its own page
    exporter = {"prometheus.io/port": "9100"}
    scraped = await plane.create(metadata=exporter)
    quiet = await plane.create(metadata={"team": "a"})
    paused = await plane.create(metadata=exporter)
    await plane.manager.pause(paused)
    running = await backend.running()
    assert {(d.sandbox_id, d.running) for d in running} == {(scraped, True), (quiet, True)}
    assert {d.sandbox_id: dict(d.metadata) for d in running}[scraped] == exporter
    source = targets_of(backend, "localhost")
    assert source is not None
    async with (
        serving_app(build_admin_app(_ready, targets=source), "127.0.0.1:0") as admin,
        plane.session.get(f"{admin.url}/sd/sandboxes") as reply,
    ):
        assert reply.status == 200
        [group] = await reply.json()
    assert group["targets"] == [f"9100-{scraped}.localhost"]
    assert group["labels"]["sandbox_id"] == scraped


async def test_discovery_behind_a_control_plane_that_is_down_is_503_not_an_empty_list() -> None:
    async with HttpBackend(f"http://127.0.0.1:{free_port()}") as backend:
        source = targets_of(backend, "localhost")
        assert source is not None
        async with (
            serving_app(build_admin_app(_ready, targets=source), "127.0.0.1:0") as admin,
            aiohttp.ClientSession() as client,
            client.get(f"{admin.url}/sd/sandboxes") as reply,
        ):
            assert reply.status == 503  # Prometheus keeps the targets it had
            assert "did not answer" in (await reply.json())["error"]


async def _ready() -> dict[str, str]:
    return {}
