"""The E2B-compatible control-plane API, driven by the real `e2b` Python SDK.

The API runs as a real aiohttp server on port 0 over a `SandboxManager` whose runtime is
the `FakeRuntime` stand-in, so no process is started. The SDK calls used here —
`AsyncSandbox.create` (without MCP), `get_info`, `list`, `pause`, `connect`,
`set_timeout`, `get_metrics` and `kill` — talk to the API only: the SDK's sandbox URL
points at a port where nothing listens, so any call that tried to reach the in-sandbox
agent would fail these tests. Status codes the SDK hides (201 against 200, 409, 401)
and the request bodies it sends are checked with plain HTTP next to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from e2b import (
    AsyncSandbox,
    AuthenticationException,
    InvalidArgumentException,
    SandboxQuery,
    SandboxState,
)
from e2b.exceptions import NotFoundException
from fakes import FakeClock
from fakes_runtime import FakeRuntime, StateLog
from support import free_port

from wakeproxy.backends.base import SandboxState as S
from wakeproxy.platform.agent import ENVD_VERSION
from wakeproxy.platform.api.app import build_api
from wakeproxy.platform.api.wire import ACTIVITY_EXTENDS_KEY, NETWORK_KEY, ApiSettings
from wakeproxy.platform.control.backend import LocalBackend
from wakeproxy.platform.control.manager import SandboxManager

API_KEY = "e2b_0123456789abcdef"
DOMAIN = "localhost:8080"
T0 = 1_700_000_000.0
_E2B_ENV = ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_DEBUG")


@dataclass
class Api:
    url: str
    manager: SandboxManager
    runtime: FakeRuntime
    clock: FakeClock
    log: StateLog
    bodies: list[tuple[str, str, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    nowhere: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")

    def opts(self, **more: Any) -> dict[str, Any]:
        """Connection options for the SDK: this API, and a sandbox URL that answers nothing."""
        return {
            "api_key": API_KEY,
            "api_url": self.url,
            "sandbox_url": self.nowhere,
            "request_timeout": 10,
            **more,
        }

    async def arrival(self, method: str, path: str) -> None:
        """Until the API has received a `method path` request."""
        async with asyncio.timeout(5):
            while (method, path) not in [(m, p) for m, p, _ in self.bodies]:
                self.arrived.clear()
                await self.arrived.wait()

    def sent(self, method: str, path: str) -> Any:
        """The JSON body of the last `method path` request the API received."""
        raw = [body for m, p, body in self.bodies if (m, p) == (method, path)][-1]
        return json.loads(raw) if raw else None

    async def http(
        self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = {} if key is None else {"X-API-KEY": key}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, **kwargs) as response,
        ):
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body, response.headers


@asynccontextmanager
async def serving(
    data_dir: Path, runtime: FakeRuntime, clock: FakeClock, settings: ApiSettings | None = None
) -> AsyncIterator[Api]:
    log = StateLog()
    manager = SandboxManager(runtime, data_dir, clock=clock)
    manager.subscribe(log)
    await manager.start()
    app = build_api(manager, settings or ApiSettings(domain=DOMAIN, api_key=API_KEY))
    bodies: list[tuple[str, str, bytes]] = []
    arrived = asyncio.Event()

    @web.middleware
    async def record(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
        bodies.append((request.method, request.path, await request.read()))
        arrived.set()
        return await handler(request)

    app.middlewares.insert(0, record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Api(f"http://127.0.0.1:{port}", manager, runtime, clock, log, bodies, arrived)
    finally:
        await runner.cleanup()
        await manager.close(kill_all=False)


@pytest.fixture(autouse=True)
def _no_e2b_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _E2B_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path, FakeRuntime(), FakeClock(T0)) as running:
        yield running


# -- create and read back ----------------------------------------------------------------------


async def test_create_sends_the_lifecycle_as_flat_fields_and_get_info_reads_it_back(
    api: Api,
) -> None:
    sbx = await AsyncSandbox.create(
        timeout=120,
        metadata={"user": "u1"},
        envs={"GREETING": "hi"},
        lifecycle={"on_timeout": "pause", "auto_resume": True},
        **api.opts(),
    )
    body = api.sent("POST", "/v2/sandboxes")
    assert (body["templateID"], body["timeout"]) == ("base", 120)
    assert (body["autoPause"], body["autoResume"]) == (True, {"enabled": True})
    assert "lifecycle" not in body

    info = await sbx.get_info()
    assert info.state == SandboxState.RUNNING
    assert info.lifecycle == {"on_timeout": "pause", "auto_resume": True}
    assert info.metadata == {"user": "u1"}
    assert info.end_at - info.started_at == timedelta(seconds=120)
    assert info.started_at.timestamp() == T0
    assert (info.template_id, info.envd_version) == ("base", ENVD_VERSION)
    assert (info.sandbox_domain, sbx.sandbox_domain) == (DOMAIN, DOMAIN)
    assert info.cpu_count >= 1
    assert info.memory_mb >= 128
    assert sbx.get_host(3000) == f"3000-{sbx.sandbox_id}.{DOMAIN}"

    spec = api.runtime.specs[sbx.sandbox_id]
    assert dict(spec.envs) == {"GREETING": "hi"}
    assert spec.agent_token is not None
    assert spec.agent_token == sbx._envd_access_token


async def test_create_without_lifecycle_kills_after_the_default_timeout(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    body = api.sent("POST", "/v2/sandboxes")
    assert "autoPause" not in body
    assert "timeout" not in body
    info = await sbx.get_info()
    assert info.lifecycle == {"on_timeout": "kill", "auto_resume": False}
    assert info.end_at - info.started_at == timedelta(seconds=300)


async def test_auto_resume_with_kill_is_a_400(api: Api) -> None:
    with pytest.raises(InvalidArgumentException):  # the SDK checks it first ...
        await AsyncSandbox.create(
            lifecycle={"on_timeout": "kill", "auto_resume": True}, **api.opts()
        )
    body = {"templateID": "base", "autoPause": False, "autoResume": {"enabled": True}}
    status, error, _ = await api.http("POST", "/v2/sandboxes", json=body)  # ... and so do we
    assert status == 400
    assert error["code"] == 400
    assert "autoResume" in error["message"]
    assert api.runtime.count("start") == 0


async def test_the_older_auto_resume_policy_shape_is_understood(api: Api) -> None:
    body = {"templateID": "base", "autoPause": True, "autoResume": {"policy": "any"}}
    status, created, _ = await api.http("POST", "/v2/sandboxes", json=body)
    assert status == 201
    info = await AsyncSandbox.get_info(created["sandboxID"], **api.opts())
    assert info.lifecycle == {"on_timeout": "pause", "auto_resume": True}


async def test_private_traffic_gets_a_token_and_insecure_skips_the_agent_token(api: Api) -> None:
    sbx = await AsyncSandbox.create(network={"allow_public_traffic": False}, **api.opts())
    assert sbx.traffic_access_token
    assert api.runtime.specs[sbx.sandbox_id].agent_token is not None
    info = await sbx.get_info()
    assert info.network is not None
    assert info.network["allow_public_traffic"] is False
    status, created, _ = await api.http(
        "POST", "/sandboxes", json={"templateID": "base", "secure": False}
    )
    assert status == 201
    assert "envdAccessToken" not in created
    assert created["trafficAccessToken"] is None
    assert api.runtime.specs[created["sandboxID"]].agent_token is None


async def test_a_sandbox_without_its_own_network_says_so_in_metadata(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeRuntime(isolated=False), FakeClock(T0)) as api:
        sbx = await AsyncSandbox.create(metadata={"k": "v"}, **api.opts())
        info = await sbx.get_info()
        assert info.metadata == {"k": "v", NETWORK_KEY: "shared-host"}


async def test_activity_extends_the_timeout_per_sandbox_or_by_default(tmp_path: Path) -> None:
    def extends(api: Api, sandbox_id: str) -> bool:
        record = api.manager.get(sandbox_id)
        assert record is not None
        return record.life.policy.activity_extends

    opt_in = {ACTIVITY_EXTENDS_KEY: "true"}
    async with serving(tmp_path / "off", FakeRuntime(), FakeClock(T0)) as api:
        assert not extends(api, (await AsyncSandbox.create(**api.opts())).sandbox_id)
        chosen = await AsyncSandbox.create(metadata=opt_in, **api.opts())
        assert extends(api, chosen.sandbox_id)
    settings = ApiSettings(domain=DOMAIN, api_key=API_KEY, activity_extends_timeout=True)
    async with serving(tmp_path / "on", FakeRuntime(), FakeClock(T0), settings) as api:
        assert extends(api, (await AsyncSandbox.create(**api.opts())).sandbox_id)
        body = {"templateID": "base", "activityExtendsTimeout": False}
        status, created, _ = await api.http("POST", "/v2/sandboxes", json=body)
        assert status == 201
        assert not extends(api, created["sandboxID"])


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "templateID is required"),
        ({"templateID": "gpu-box"}, "not available"),
        ({"templateID": "base", "timeout": -5}, "timeout"),
        ({"templateID": "base", "timeout": 10**9}, "at most"),
        ({"templateID": "base", "metadata": {"a": 1}}, "metadata"),
        ({"templateID": "base", "mcp": {"x": {}}}, "mcp"),
        ({"templateID": "base", "network": {"allowOut": ["1.1.1.1"]}}, "allowOut"),
    ],
)
async def test_bad_create_requests_are_400_with_code_and_message(
    api: Api, body: dict[str, Any], complaint: str
) -> None:
    status, error, _ = await api.http("POST", "/v2/sandboxes", json=body)
    assert status == 400
    assert error["code"] == 400
    assert complaint in error["message"]


async def test_malformed_json_and_unknown_routes_answer_json_errors(api: Api) -> None:
    status, error, _ = await api.http("POST", "/v2/sandboxes", data=b"{nope")
    assert (status, error["code"]) == (400, 400)
    status, error, _ = await api.http("GET", "/v3/whatever")
    assert (status, error["code"]) == (404, 404)
    assert error["message"]


# -- pause, connect, timeouts ------------------------------------------------------------------


async def test_pause_then_connect_resumes(api: Api) -> None:
    sbx = await AsyncSandbox.create(lifecycle={"on_timeout": "pause"}, **api.opts())
    assert await sbx.pause() is True
    assert await sbx.pause() is False  # 409: already paused
    assert (await sbx.get_info()).state == SandboxState.PAUSED
    assert sbx.sandbox_id in api.runtime.frozen

    api.clock.advance(100)
    again = await AsyncSandbox.connect(sbx.sandbox_id, timeout=60, **api.opts())
    assert again.sandbox_id == sbx.sandbox_id
    info = await again.get_info()
    assert info.state == SandboxState.RUNNING
    assert info.end_at.timestamp() == T0 + 160
    assert api.sent("POST", f"/v2/sandboxes/{sbx.sandbox_id}/connect") == {"timeout": 60}
    assert api.runtime.frozen == set()


async def test_connect_answers_200_when_running_and_201_when_it_resumed(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    path = f"/v2/sandboxes/{sbx.sandbox_id}/connect"
    status, running, _ = await api.http("POST", path, json={"timeout": 60})
    assert status == 200
    assert {"sandboxID", "templateID", "clientID", "envdVersion", "envdAccessToken"} <= set(running)
    assert running["domain"] == DOMAIN
    await sbx.pause()
    status, resumed, _ = await api.http("POST", path, json={})
    assert status == 201
    assert resumed["sandboxID"] == sbx.sandbox_id
    assert api.runtime.count("thaw") == 1
    status, _, _ = await api.http("POST", f"/sandboxes/{sbx.sandbox_id}/connect", json={})
    assert status == 400  # the v1 body requires a timeout
    status, _, _ = await api.http(
        "POST", f"/sandboxes/{sbx.sandbox_id}/connect", json={"timeout": 5}
    )
    assert status == 200


async def test_connect_only_extends_while_set_timeout_also_shortens(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    await sbx.set_timeout(600)
    assert (await sbx.get_info()).end_at.timestamp() == T0 + 600
    await AsyncSandbox.connect(sbx.sandbox_id, timeout=60, **api.opts())
    assert (await sbx.get_info()).end_at.timestamp() == T0 + 600
    await sbx.set_timeout(30)
    assert (await sbx.get_info()).end_at.timestamp() == T0 + 30


async def test_the_deprecated_resume_endpoint(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    path = f"/sandboxes/{sbx.sandbox_id}/resume"
    status, error, _ = await api.http("POST", path, json={})
    assert (status, error["code"]) == (409, 409)
    await sbx.pause()
    status, resumed, _ = await api.http("POST", path, json={"timeout": 20})
    assert (status, resumed["sandboxID"]) == (201, sbx.sandbox_id)
    assert (await sbx.get_info()).end_at.timestamp() == T0 + 20
    status, _, _ = await api.http("POST", "/sandboxes/nosuchsandbox/resume", json={})
    assert status == 404


async def test_refresh_extends_and_metrics_are_empty(api: Api) -> None:
    sbx = await AsyncSandbox.create(timeout=10, **api.opts())
    status, _, _ = await api.http(
        "POST", f"/sandboxes/{sbx.sandbox_id}/refreshes", json={"duration": 90}
    )
    assert status == 204
    assert (await sbx.get_info()).end_at.timestamp() == T0 + 90
    assert await sbx.get_metrics() == []


async def test_a_timeout_pauses_and_traffic_resumes_it_again_and_again(api: Api) -> None:
    sbx = await AsyncSandbox.create(
        timeout=60, lifecycle={"on_timeout": "pause", "auto_resume": True}, **api.opts()
    )
    backend = LocalBackend(api.manager)
    for cycle in (1, 2):
        api.clock.advance(60)
        api.manager.reschedule()
        await api.log.wait_for(sbx.sandbox_id, S.PAUSED, count=cycle)
        assert (await sbx.get_info()).state == SandboxState.PAUSED
        api.clock.advance(30)
        await backend.resume(sbx.sandbox_id)  # what a request through the proxy does
        info = await sbx.get_info()
        assert info.state == SandboxState.RUNNING
        assert info.end_at.timestamp() == api.clock.now + 60


async def test_a_kill_timeout_ends_the_sandbox(api: Api) -> None:
    sbx = await AsyncSandbox.create(timeout=5, **api.opts())
    api.clock.advance(5)
    api.manager.reschedule()
    await api.log.wait_for(sbx.sandbox_id, S.KILLED)
    with pytest.raises(NotFoundException):
        await sbx.get_info()


# -- list --------------------------------------------------------------------------------------


async def test_list_filters_by_state_and_metadata_and_pages_with_x_next_token(api: Api) -> None:
    ids = []
    for n in range(5):
        api.clock.advance(1)
        metadata = {"team": "a b&c=d"} if n % 2 == 0 else {"team": "other"}
        ids.append((await AsyncSandbox.create(metadata=metadata, **api.opts())).sandbox_id)
    await AsyncSandbox.pause(ids[1], **api.opts())

    paginator = AsyncSandbox.list(limit=2, **api.opts())
    pages = []
    while paginator.has_next:
        pages.append([s.sandbox_id for s in await paginator.next_items()])
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [sid for page in pages for sid in page] == ids[::-1]  # newest first

    paused = AsyncSandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]), **api.opts())
    assert [s.sandbox_id for s in await paused.next_items()] == [ids[1]]
    team = AsyncSandbox.list(query=SandboxQuery(metadata={"team": "a b&c=d"}), **api.opts())
    assert sorted(s.sandbox_id for s in await team.next_items()) == sorted(ids[0::2])

    status, body, headers = await api.http("GET", "/v2/sandboxes?limit=4&order=asc")
    assert status == 200
    assert [s["sandboxID"] for s in body] == ids[:4]
    assert "x-next-token" in headers
    status, body, headers = await api.http("GET", "/v2/sandboxes?state=paused&state=running")
    assert (status, len(body), "x-next-token" in headers) == (200, 5, False)
    status, _, _ = await api.http("GET", "/v2/sandboxes?state=sleeping")
    assert status == 400


async def test_the_v1_list_shows_running_sandboxes_only(api: Api) -> None:
    running = await AsyncSandbox.create(**api.opts())
    paused = await AsyncSandbox.create(**api.opts())
    await paused.pause()
    status, body, _ = await api.http("GET", "/sandboxes")
    assert status == 200
    assert [s["sandboxID"] for s in body] == [running.sandbox_id]
    assert {
        "templateID",
        "clientID",
        "startedAt",
        "endAt",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
    } <= set(body[0])


# -- kill and not-found ------------------------------------------------------------------------


async def test_kill_is_final(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    assert await sbx.kill() is True
    assert api.runtime.count("kill", sbx.sandbox_id) == 1
    assert await sbx.kill() is False  # 404
    with pytest.raises(NotFoundException):
        await sbx.get_info()
    with pytest.raises(NotFoundException):
        await AsyncSandbox.connect(sbx.sandbox_id, **api.opts())
    with pytest.raises(NotFoundException):
        await sbx.pause()
    with pytest.raises(NotFoundException):
        await sbx.set_timeout(60)
    with pytest.raises(NotFoundException):
        await sbx.get_metrics()
    status, error, _ = await api.http("DELETE", f"/sandboxes/{sbx.sandbox_id}")
    assert (status, error["code"]) == (404, 404)


async def test_set_timeout_on_a_paused_sandbox_is_a_conflict(api: Api) -> None:
    sbx = await AsyncSandbox.create(lifecycle={"on_timeout": "pause"}, **api.opts())
    await sbx.pause()
    status, error, _ = await api.http(
        "POST", f"/sandboxes/{sbx.sandbox_id}/timeout", json={"timeout": 9}
    )
    assert (status, error["code"]) == (409, 409)
    assert "paused" in error["message"]


# -- API key -----------------------------------------------------------------------------------


async def test_a_wrong_or_missing_api_key_is_401(api: Api) -> None:
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create(**api.opts(api_key="e2b_wrong"))
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.list(**api.opts(api_key="e2b_wrong")).next_items()
    status, error, _ = await api.http("GET", "/v2/sandboxes", key=None)
    assert (status, error["code"]) == (401, 401)
    status, _, _ = await api.http("GET", "/health", key=None)
    assert status == 204
    assert api.runtime.count("start") == 0


async def test_without_a_configured_key_any_key_is_accepted(tmp_path: Path) -> None:
    settings = ApiSettings(domain=DOMAIN, api_key=None)
    async with serving(tmp_path, FakeRuntime(), FakeClock(T0), settings) as api:
        sbx = await AsyncSandbox.create(**api.opts(api_key="anything"))
        assert (await sbx.get_info()).state == SandboxState.RUNNING


# -- restart -----------------------------------------------------------------------------------


async def test_records_survive_a_restart_of_the_platform(tmp_path: Path) -> None:
    runtime, clock = FakeRuntime(), FakeClock(T0)
    async with serving(tmp_path, runtime, clock) as first:
        kept = await AsyncSandbox.create(
            timeout=60, lifecycle={"on_timeout": "pause"}, **first.opts()
        )
        lost = await AsyncSandbox.create(**first.opts())
    runtime.survivors = {kept.sandbox_id}
    runtime.forget()
    async with serving(tmp_path, runtime, clock) as second:
        info = await AsyncSandbox.get_info(kept.sandbox_id, **second.opts())
        assert (info.state, info.end_at.timestamp()) == (SandboxState.RUNNING, T0 + 60)
        with pytest.raises(NotFoundException):
            await AsyncSandbox.get_info(lost.sandbox_id, **second.opts())
        listed = await AsyncSandbox.list(**second.opts()).next_items()
        assert [s.sandbox_id for s in listed] == [kept.sandbox_id]
        clock.advance(60)
        second.manager.reschedule()
        await second.log.wait_for(kept.sandbox_id, S.PAUSED)
        await second.manager.close(kill_all=True)
    assert runtime.alive == {}


async def test_a_connect_during_a_pause_waits_for_it_then_resumes(api: Api) -> None:
    sbx = await AsyncSandbox.create(**api.opts())
    gate = api.runtime.gates["freeze"] = asyncio.Event()
    pausing = asyncio.create_task(sbx.pause())
    await api.runtime.entered["freeze"].wait()
    resuming = asyncio.create_task(AsyncSandbox.connect(sbx.sandbox_id, timeout=30, **api.opts()))
    await api.arrival("POST", f"/v2/sandboxes/{sbx.sandbox_id}/connect")
    await asyncio.sleep(0)
    assert not resuming.done()
    assert api.runtime.count("thaw") == 0
    gate.set()
    assert await pausing is True
    await resuming
    assert [op for op, _ in api.runtime.calls if op in ("freeze", "thaw")] == ["freeze", "thaw"]
    assert (await sbx.get_info()).state == SandboxState.RUNNING
