"""Metrics, the wait header, the access log and the admin listener, against real sockets.

Wakes run through `wakescene` (a `FakeBackend` whose resume waits for the test, a real
upstream whose port comes back on resume); plain traffic through the static backend.
Metrics are read back from the exposition with prometheus-client's parser, as a scrape
would see them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from proxy_process import ProxyProcess
from support import StartProxy, free_port, host_for
from upstream import Upstream
from wakescene import SANDBOX, until, wake_scene

from wakeproxy.accesslog import ACCESS_LOGGER
from wakeproxy.admin import running_admin
from wakeproxy.backends.base import SandboxState
from wakeproxy.errors import Unavailable
from wakeproxy.metrics import Metrics
from wakeproxy.proxy.headers import WAIT_HEADER
from wakeproxy.readiness import Readiness
from wakeproxy.server import Listening
from wakeproxy.wake import NoWakeRule, WakeSettings


def sample(metrics: Metrics | None, name: str, **labels: str) -> float:
    """One sample of the exposition (0 when the series does not exist)."""
    assert metrics is not None
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


class AccessLines:
    """The access-log lines the proxy in this process wrote to stderr so far."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.lines: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        for line in self._capsys.readouterr().err.splitlines():
            if f'"logger": "{ACCESS_LOGGER}"' in line:
                self.lines.append(json.loads(line))
        return self.lines


async def test_held_responses_say_how_long_they_waited_and_the_log_who_woke_the_sandbox(
    start_proxy: StartProxy, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    access = AccessLines(capsys)
    async with wake_scene(start_proxy, upstream) as scene:
        held = [scene.sent("GET", "/count?n=0")]
        await until(scene.backend.resume_started.is_set, "the wake to start")
        held += [scene.sent("GET", f"/count?n={n}") for n in (1, 2)]  # these join it
        await scene.until_held(3)
        await asyncio.sleep(0.05)  # so that the wait is visibly more than nothing
        scene.gate.set()
        replies = await asyncio.gather(*held)
        after = await scene.send("GET", "/count")
        await until(lambda: len(access.read()) == 4, "four access-log lines")
        metrics = scene.proxy.metrics
    for reply in replies:
        assert reply.status == 200
        assert float(reply.headers[WAIT_HEADER]) >= 0.05
        assert reply.headers["Server-Timing"].startswith("wake;dur=")
    assert WAIT_HEADER not in after.headers
    held_lines = [line for line in access.lines if "held" in line]
    assert len(held_lines) == 3
    assert sorted(line["wake_trigger"] for line in held_lines) == [False, False, True]
    assert all(line["held"] >= 0.05 for line in held_lines)
    for line in access.lines:
        assert (line["sandbox"], line["port"]) == (SANDBOX, upstream.port)
        assert (line["method"], line["path"], line["status"]) == ("GET", "/count", 200)
        assert line["bytes"] > 0
    assert sample(metrics, "wakeproxy_wakes_total", result="ok") == 1
    assert sample(metrics, "wakeproxy_wake_duration_seconds_count") == 1
    assert sample(metrics, "wakeproxy_wake_phase_seconds_count", phase="ready") == 1
    assert sample(metrics, "wakeproxy_wake_joins_total") == 2
    assert sample(metrics, "wakeproxy_hold_duration_seconds_count") == 3
    assert sample(metrics, "wakeproxy_held_requests") == 0
    assert sample(metrics, "wakeproxy_requests_total", kind="http", code="200") == 4


async def test_a_request_held_until_its_deadline_says_how_long_it_waited(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(hold_timeout=0.2)
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        reply = await scene.send("GET", "/count")  # the resume never finishes
        metrics = scene.proxy.metrics
    assert reply.status == 503
    assert float(reply.headers[WAIT_HEADER]) >= 0.2
    assert sample(metrics, "wakeproxy_rejected_total", reason="wake_in_progress") == 1
    assert sample(metrics, "wakeproxy_requests_total", kind="http", code="503") == 1


async def test_rejections_and_upstream_errors_are_counted_by_reason(
    proxy: Listening, upstream: Upstream
) -> None:
    closed = free_port()
    async with aiohttp.ClientSession() as client:
        for host, status in [
            (host_for(upstream.port), 200),
            ("nowhere.example", 404),
            (host_for(upstream.port, "Bad_Id"), 400),
            (host_for(closed), 502),
        ]:
            async with client.get(f"{proxy.url}/count", headers={"Host": host}) as response:
                assert response.status == status
    metrics = proxy.metrics
    assert sample(metrics, "wakeproxy_rejected_total", reason="unknown_host") == 1
    assert sample(metrics, "wakeproxy_rejected_total", reason="bad_request") == 1
    # A refused connect is tried once more (the sandbox may have been paused meanwhile);
    # an upstream's failure is never counted as a rejection.
    assert sample(metrics, "wakeproxy_upstream_errors_total", reason="refused") == 2
    assert sample(metrics, "wakeproxy_rejected_total", reason="port_not_open") == 0
    for code in ("200", "404", "400", "502"):
        assert sample(metrics, "wakeproxy_requests_total", kind="http", code=code) == 1
    assert sample(metrics, "wakeproxy_request_duration_seconds_count") == 4


async def test_websocket_sessions_are_counted_while_open_and_when_done(
    proxy: Listening, upstream: Upstream
) -> None:
    metrics = proxy.metrics
    url = f"ws://{proxy.host}:{proxy.port}/ws"
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, headers={"Host": host_for(upstream.port)}) as ws,
    ):
        await ws.send_str("ping")
        assert await ws.receive_str()
        assert sample(metrics, "wakeproxy_websockets_open") == 1
    await until(
        lambda: sample(metrics, "wakeproxy_requests_total", kind="websocket", code="101") == 1,
        "the session to be counted",
    )
    assert sample(metrics, "wakeproxy_websockets_open") == 0
    assert sample(metrics, "wakeproxy_websocket_duration_seconds_count") == 1


async def test_the_admin_listener_serves_metrics_and_readiness() -> None:
    metrics = Metrics()
    metrics.request_finished("http", 200, 0.01)
    readiness = Readiness()
    readiness.report("proxy", "down")
    async with (
        running_admin("127.0.0.1:0", readiness, metrics.registry) as admin,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(f"{admin.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert 'wakeproxy_requests_total{code="200",kind="http"} 1.0' in await response.text()
        async with client.get(f"{admin.url}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {
                "status": "down",
                "checks": {"redis": "disabled", "proxy": "down"},
            }
        readiness.report("proxy", "ok")
        readiness.report("redis", "degraded")
        async with client.get(f"{admin.url}/readyz") as response:
            assert response.status == 200  # degraded still serves traffic
            assert (await response.json())["status"] == "degraded"


def _access_lines(process: ProxyProcess) -> list[str]:
    return [line for line in process.log_path.read_text().splitlines() if '"request"' in line]


@pytest.mark.parametrize("access", [True, False])
async def test_serve_writes_one_json_access_line_per_request_unless_turned_off(
    tmp_path: Path, upstream: Upstream, access: bool
) -> None:
    config = tmp_path / "access.toml"
    config.write_text(f"[log]\naccess = {str(access).lower()}\n")
    process = ProxyProcess("--config", str(config), log_dir=tmp_path).start()
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(3):
                headers = {"Host": host_for(upstream.port)}
                async with client.get(f"{process.url}/count?secret=x", headers=headers) as reply:
                    assert reply.status == 200
            async with client.get(f"http://127.0.0.1:{process.admin_port}/readyz") as reply:
                checks = (await reply.json())["checks"]
    finally:
        process.stop()  # writes what is pending
    assert checks == {"redis": "disabled", "proxy": "ok", "backend": "ok"}
    lines = _access_lines(process)
    if not access:
        assert lines == []
        return
    assert len(lines) == 3
    assert '"path": "/count"' in lines[0]  # never the query string
    assert "secret" not in lines[0]
    assert f'"port": {upstream.port}' in lines[0]


# -- failed wakes, reasons and who waited -----------------------------------------------------


async def test_a_failed_wake_is_logged_once_and_its_trigger_is_marked_in_the_access_log(
    start_proxy: StartProxy,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = AccessLines(capsys)
    async with wake_scene(start_proxy, upstream) as scene:
        scene.backend.resume_errors.append(Unavailable("backend.resume timed out after 30s"))
        first = scene.sent("GET", "/count?n=0")
        await scene.until_held(1)
        second = scene.sent("GET", "/count?n=1")
        await scene.until_held(2)
        scene.gate.set()
        replies = await asyncio.gather(first, second)
        await until(lambda: len(access.read()) == 2, "two access-log lines")
        metrics = scene.proxy.metrics
    assert [reply.json()["reason"] for reply in replies] == ["wake_failed", "wake_failed"]
    assert all(WAIT_HEADER in reply.headers for reply in replies)  # they did wait
    failures = [r for r in caplog.records if getattr(r, "event", None) == "wake_failed"]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    [failure] = failures
    assert failure.levelname == "WARNING"
    assert (failure.sandbox, failure.phase, failure.result) == (SANDBOX, "resume", "failed")  # type: ignore[attr-defined]
    assert failure.duration >= 0  # type: ignore[attr-defined]
    assert "backend.resume timed out after 30s" in failure.cause  # type: ignore[attr-defined]
    lines = sorted(access.lines, key=lambda line: not line["wake_trigger"])
    assert [line["wake_trigger"] for line in lines] == [True, False]
    assert {line["reason"] for line in lines} == {"wake_failed"}
    assert sample(metrics, "wakeproxy_wakes_total", result="failed") == 1
    assert sample(metrics, "wakeproxy_rejected_total", reason="wake_failed") == 2


async def test_a_no_wake_rule_says_so_in_the_json_the_metrics_and_the_access_log(
    start_proxy: StartProxy, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    access = AccessLines(capsys)
    settings = WakeSettings(no_wake=(NoWakeRule(user_agent="Prometheus/*"),))
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        reply = await scene.send("GET", "/metrics", headers={"User-Agent": "Prometheus/2.53"})
        await until(lambda: len(access.read()) == 1, "one access-log line")
        metrics = scene.proxy.metrics
    assert (reply.status, reply.json()["reason"]) == (503, "no_wake_rule")
    assert WAIT_HEADER not in reply.headers
    assert "Server-Timing" not in reply.headers
    [line] = access.lines
    assert (line["status"], line["reason"]) == (503, "no_wake_rule")
    assert "held" not in line
    assert sample(metrics, "wakeproxy_rejected_total", reason="no_wake_rule") == 1
    assert sample(metrics, "wakeproxy_rejected_total", reason="hold_queue_full") == 0
    assert scene.backend.total_resumes == 0


async def test_lookups_of_unknown_ids_are_never_held_requests(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(max_held_total=8)
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        scene.backend.get_gate = gate = asyncio.Event()
        unknown = [f"nobody{n}" for n in range(30)]
        requests = [scene.sent("GET", "/", host=scene.host(sid)) for sid in unknown]
        # Every lookup is under way at once, and none of them is a held request.
        await until(lambda: sum(scene.backend.get_calls[s] for s in unknown) == 30, "30 lookups")
        assert scene.held == 0
        gate.set()
        replies = await asyncio.gather(*requests)
        metrics = scene.proxy.metrics
    assert {(reply.status, reply.json()["reason"]) for reply in replies} == {
        (502, "sandbox_not_found")
    }
    assert not any(WAIT_HEADER in reply.headers for reply in replies)
    assert sample(metrics, "wakeproxy_rejected_total", reason="sandbox_not_found") == 30
    assert sample(metrics, "wakeproxy_rejected_total", reason="hold_queue_full") == 0
    assert sample(metrics, "wakeproxy_hold_duration_seconds_count") == 0


async def test_responses_that_did_not_wait_for_a_wake_have_no_wait_headers(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    closed = free_port()
    async with wake_scene(start_proxy, upstream, state=SandboxState.RUNNING) as scene:
        scene.backend.get_gate = gate = asyncio.Event()
        # The first request after a start waits for a lookup of a running sandbox.
        first = scene.sent("GET", "/count")
        await until(lambda: scene.backend.get_calls[SANDBOX] == 1, "the lookup")
        gate.set()
        looked_up = await first
        refused = await scene.send("GET", "/", host=host_for(closed, SANDBOX))
    assert looked_up.status == 200
    assert (refused.status, refused.json()["reason"]) == (502, "port_not_open")
    for reply in (looked_up, refused):
        assert WAIT_HEADER not in reply.headers
        assert "Server-Timing" not in reply.headers


# -- request ids and who asked ----------------------------------------------------------------


def _header(upstream: Upstream, name: str) -> list[str]:
    return [value for key, value in upstream.seen[-1].headers if key.lower() == name.lower()]


async def test_a_request_id_is_made_sent_upstream_and_logged_with_the_client_and_host(
    proxy: Listening, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    access = AccessLines(capsys)
    headers = {
        "Host": host_for(upstream.port),
        "User-Agent": "probe/1.0 (test)",
        "X-Request-Id": "chosen-by-the-client",  # not a trusted proxy: replaced
        "X-Forwarded-For": "198.51.100.7",
    }
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.get(f"{proxy.url}/count", headers=headers) as response:
                assert response.status == 200
                assert "X-Request-Id" not in response.headers  # only on the proxy's answers
        await until(lambda: len(access.read()) == 2, "two access-log lines")
    first, second = access.lines
    assert _header(upstream, "X-Request-Id") == [second["request_id"]]
    assert first["request_id"] != second["request_id"]
    assert "chosen-by-the-client" not in (first["request_id"], second["request_id"])
    assert (second["client"], second["host"]) == ("127.0.0.1", headers["Host"])
    assert second["user_agent"] == "probe/1.0 (test)"


async def test_a_trusted_proxys_request_id_and_client_are_believed(
    start_proxy: StartProxy, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    access = AccessLines(capsys)
    async with (
        start_proxy(trusted_proxies=("127.0.0.1/32",)) as proxy,
        aiohttp.ClientSession() as client,
    ):
        for request_id in ("edge-7f3a:1", 'not "plain" at all'):
            headers = {
                "Host": host_for(upstream.port),
                "X-Request-Id": request_id,
                "X-Forwarded-For": "198.51.100.7, 127.0.0.1",
            }
            async with client.get(f"{proxy.url}/count", headers=headers) as response:
                assert response.status == 200
            sent = _header(upstream, "X-Request-Id")
            assert len(sent) == 1
            assert (sent[0] == request_id) is (request_id == "edge-7f3a:1")
        await until(lambda: len(access.read()) == 2, "two access-log lines")
    kept, replaced = access.lines
    assert kept["request_id"] == "edge-7f3a:1"
    assert replaced["request_id"] == sent[0]  # a malformed id is replaced, not logged
    # Behind a trusted proxy, the client is the address it names.
    assert kept["client"] == replaced["client"] == "198.51.100.7"


async def test_every_answer_the_proxy_makes_names_the_request_id(
    proxy: Listening, upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    access = AccessLines(capsys)
    closed = free_port()
    answers = []
    async with aiohttp.ClientSession() as client:
        for host in ("nowhere.example", host_for(upstream.port, "Bad_Id"), host_for(closed)):
            async with client.get(f"{proxy.url}/", headers={"Host": host}) as response:
                answers.append(
                    (response.status, response.headers["X-Request-Id"], await response.json())
                )
        browser = {"Host": "nowhere.example", "Sec-Fetch-Mode": "navigate"}
        async with client.get(f"{proxy.url}/", headers=browser) as response:
            page_id = response.headers["X-Request-Id"]
            assert f"Request id: {page_id}" in await response.text()
        await until(lambda: len(access.read()) == 4, "four access-log lines")
    assert [status for status, _, _ in answers] == [404, 400, 502]
    for (_, header_id, document), line in zip(answers, access.lines, strict=False):
        assert document["requestId"] == header_id == line["request_id"]
    assert len({header_id for _, header_id, _ in answers} | {page_id}) == 4
