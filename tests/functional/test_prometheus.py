"""wakeproxy's metrics as Prometheus itself sees them.

promtool checks the shipped alert rules (and runs their unit tests, `alerts_test.yml`),
the shipped scrape config, and the real `/metrics` output of a proxy in one process and
of `--workers 2`. A real Prometheus (Debian's package: own data directory, a free port on
127.0.0.1, 1 s scrapes, nothing remote) scrapes the admin listener while wakes are driven
through the proxy, and its HTTP query API must then show every wake exactly once.
Without the binaries these tests skip, saying so; scripts/test installs them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_process import PrometheusServer, promtool, tool
from proxy_process import ProxyProcess
from support import StartProxy, host_for
from upstream import Upstream
from wakescene import SANDBOX, Scene, wake_scene

from wakeproxy.admin import running_admin
from wakeproxy.backends.base import SandboxState
from wakeproxy.metrics import exposition
from wakeproxy.proxy.headers import WAIT_HEADER
from wakeproxy.readiness import Readiness

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
WAKES = 3
DEADLINE = 30.0  # for Prometheus to scrape what happened; a bound on a hang, not a timing


def check_metrics(text: bytes) -> None:
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", "promtool has lint findings"


def family_totals(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- promtool ---------------------------------------------------------------------------------


def test_the_alert_rules_are_valid_and_fire_as_their_tests_say() -> None:
    checked = promtool("check", "rules", str(CONFIG / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(Path(__file__).with_name("alerts_test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_shipped_scrape_config_is_valid_with_and_without_the_sandboxes_job(
    tmp_path: Path,
) -> None:
    checked = promtool("check", "config", str(CONFIG / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = (CONFIG / "prometheus.yml").read_text()
    commented = text[text.index("#  - job_name: sandboxes") :]
    uncommented = "\n".join(line[1:] for line in commented.splitlines())
    with_sandboxes = tmp_path / "prometheus.yml"
    with_sandboxes.write_text(text.replace(commented, uncommented))
    (tmp_path / "alerts.yml").write_text((CONFIG / "alerts.yml").read_text())
    checked = promtool("check", "config", str(with_sandboxes))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "job_name: sandboxes" in with_sandboxes.read_text()


async def drive_wakes(scene: Scene, count: int) -> None:
    """`count` wakes of the paused sandbox, one request each; each says it waited."""
    scene.gate.set()  # resumes finish at once
    for number in range(count):
        if number:
            await scene.upstream.refuse_connections()
            scene.backend.set_state(SANDBOX, SandboxState.PAUSED)
        reply = await scene.send("GET", "/count")
        assert reply.status == 200, reply.body
        assert WAIT_HEADER in reply.headers
    assert scene.backend.total_resumes == count


async def test_the_exposition_of_a_proxy_that_woke_refused_and_relayed_passes_promtool(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    tool("promtool")
    async with (
        wake_scene(start_proxy, upstream) as scene,
        aiohttp.ClientSession() as client,
    ):
        await drive_wakes(scene, 1)
        for host in ("nowhere.example", host_for(upstream.port, "unknownsandbox")):
            async with client.get(f"{scene.url}/", headers={"Host": host}) as response:
                assert response.status >= 400
        assert scene.proxy.metrics is not None
        registry = scene.proxy.metrics.registry
        async with (
            running_admin("127.0.0.1:0", Readiness(), registry) as admin,
            client.get(f"{admin.url}/metrics") as response,
        ):
            text = await response.read()
    check_metrics(text)
    assert b'wakeproxy_wakes_total{result="ok"} 1.0' in text


def _worker_pids(process: ProxyProcess) -> list[int]:
    assert process.proc is not None
    supervisor = psutil.Process(process.proc.pid)
    return [child.pid for child in supervisor.children() if "--as-worker" in child.cmdline()]


def _one_workers_requests(directory: str, pid: int) -> float:
    """What one worker alone counted, read from its own files of the shared directory."""
    with tempfile.TemporaryDirectory() as alone:
        for path in Path(directory).glob(f"*_{pid}.db"):
            shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
        totals = family_totals(exposition(registry).decode())
    key = ("wakeproxy_requests_total", frozenset({("kind", "http"), ("code", "200")}))
    return totals.get(key, 0.0)


async def _until_every_worker_listens(client: aiohttp.ClientSession, process: ProxyProcess) -> None:
    """/readyz is 200 once one worker listens ("degraded"); "ok" once every one does."""
    give_up = time.monotonic() + DEADLINE
    while True:
        async with client.get(f"http://127.0.0.1:{process.admin_port}/readyz") as response:
            document = await response.json()
        if document["status"] == "ok":
            assert document["checks"]["workers"] == "ok"
            return
        assert time.monotonic() < give_up, document
        await asyncio.sleep(0.05)


async def test_with_two_workers_one_scrape_reports_the_sum_of_both(
    proxy_process: Callable[..., ProxyProcess], upstream: Upstream
) -> None:
    requests = 40
    process = proxy_process("--workers", "2")
    pids = _worker_pids(process)
    assert len(pids) == 2
    directory = psutil.Process(pids[0]).environ()["PROMETHEUS_MULTIPROC_DIR"]
    async with aiohttp.ClientSession() as client:
        await _until_every_worker_listens(client, process)
        for _ in range(requests):
            # A fresh connection each time, so the kernel spreads them over the workers.
            headers = {"Host": host_for(upstream.port), "Connection": "close"}
            async with client.get(f"{process.url}/count", headers=headers) as response:
                assert response.status == 200
        group = [psutil.Process(pid) for pid in (process.proc.pid, *pids)]  # type: ignore[union-attr]
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in group)
        async with client.get(f"http://127.0.0.1:{process.admin_port}/metrics") as response:
            text = await response.read()
    totals = family_totals(text.decode())
    # The supervisor's process metrics are those of the whole group, one series each.
    assert totals[("process_cpu_seconds_total", frozenset())] >= cpu_before - 0.05
    names = [name for name, _ in totals]
    for name in ("process_resident_memory_bytes", "process_open_fds", "wakeproxy_build_info"):
        assert names.count(name) == 1, name
    assert not [name for name in names if name.endswith("_created")]
    ok = frozenset({("kind", "http"), ("code", "200")})
    assert totals[("wakeproxy_requests_total", ok)] == requests
    assert totals[("wakeproxy_request_duration_seconds_count", frozenset())] == requests
    assert totals[("wakeproxy_held_requests", frozenset())] == 0  # one series, not one per pid
    per_worker = [_one_workers_requests(directory, pid) for pid in pids]
    assert sum(per_worker) == requests
    assert all(count > 0 for count in per_worker), per_worker
    check_metrics(text)


# -- a real Prometheus ------------------------------------------------------------------------


async def eventually(
    prometheus: PrometheusServer, expr: str, expected: float, deadline: float = DEADLINE
) -> None:
    """Poll the query API until `expr` is `expected` (it runs in a thread: the proxy and
    the admin listener Prometheus scrapes run on this event loop)."""
    give_up = time.monotonic() + deadline
    while True:
        found = await asyncio.to_thread(prometheus.value, expr)
        if found == expected:
            return
        if time.monotonic() > give_up:
            raise AssertionError(f"{expr} is {found}, expected {expected}:\n{prometheus.log()}")
        await asyncio.sleep(0.2)


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return [expr.replace("$__rate_interval", "1m").replace("$instance", ".*") for expr in exprs]


async def test_a_real_prometheus_sees_exactly_the_wakes_driven_through_the_proxy(
    start_proxy: StartProxy, upstream: Upstream, tmp_path: Path
) -> None:
    tool("prometheus")
    async with wake_scene(start_proxy, upstream) as scene:
        assert scene.proxy.metrics is not None
        registry = scene.proxy.metrics.registry
        async with running_admin("127.0.0.1:0", Readiness(), registry) as admin:
            await _scrape_while_waking(scene, admin.port, tmp_path)


async def _scrape_while_waking(scene: Scene, admin_port: int, tmp_path: Path) -> None:
    """Start Prometheus against the admin listener, drive the wakes, read the counts back."""
    prometheus = PrometheusServer(
        tmp_path, [f"127.0.0.1:{admin_port}"], rule_files=[CONFIG / "alerts.yml"]
    )
    await asyncio.to_thread(prometheus.start)
    try:
        await eventually(prometheus, 'up{job="wakeproxy"}', 1)
        await eventually(prometheus, "sum(wakeproxy_wakes_total)", 0)
        await eventually(prometheus, "wakeproxy_wake_duration_seconds_count", 0)
        await drive_wakes(scene, WAKES)
        await eventually(prometheus, 'wakeproxy_wakes_total{result="ok"}', WAKES)
        await eventually(prometheus, "sum(wakeproxy_wakes_total)", WAKES)
        await eventually(prometheus, "wakeproxy_wake_duration_seconds_count", WAKES)
        assert await asyncio.to_thread(prometheus.value, 'up{job="wakeproxy"}') == 1
        # The dashboard's queries are valid PromQL and find these metrics.
        for expr in dashboard_queries():
            await asyncio.to_thread(prometheus.query, expr)
        # The shipped alert rules load and evaluate against these series.
        await eventually_true(lambda: _rules_healthy(prometheus), "the rules evaluated")
    finally:
        await asyncio.to_thread(prometheus.stop)


def _rules_healthy(prometheus: PrometheusServer) -> bool:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=5) as response:
        groups = json.load(response)["data"]["groups"]
    health = [rule["health"] for group in groups for rule in group["rules"]]
    return len(health) == 9 and all(state == "ok" for state in health)


async def eventually_true(check: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(check):
        if time.monotonic() > give_up:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.2)
