"""A real Prometheus discovers `wakeproxy up`'s running sandboxes through the admin
listener's HTTP service discovery and scrapes an exporter inside one through the proxy.

The sandbox is a real one of the embedded platform, made by the real `e2b` SDK with create
metadata `prometheus.io/port`; its exporter is a small stdlib HTTP server started inside it.
Prometheus (Debian's package, 1 s scrapes and refreshes, `proxy_url` the proxy) must:
find it and scrape it; see it leave the targets once it is paused, and not wake it while
it keeps scraping the rest (the shipped no-wake rule for its User-Agent is on); and see
it come back once other traffic wakes it. Waits are for what Prometheus reports, bounded
by `DEADLINE` only to turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess
from prometheus_client.parser import text_string_to_metric_families
from prometheus_process import PrometheusServer, tool
from support import free_port

e2b = pytest.importorskip("e2b")

DEADLINE = 60.0
JOB = "sandboxes"

EXPORTER = """
import http.server, sys

scrapes = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global scrapes
        scrapes += 1
        body = (
            "# TYPE sandbox_exporter_scrapes_total counter\\n"
            f"sandbox_exporter_scrapes_total {scrapes}\\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

WAIT_FOR_PORT = """
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("port %s never opened" % sys.argv[1])
        time.sleep(0.05)
"""


async def eventually(check: Callable[[], Any], what: str, prometheus: PrometheusServer) -> Any:
    """The first truthy result of `check()` (run in a thread: it does blocking I/O)."""
    give_up = time.monotonic() + DEADLINE
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"still waiting for {what}:\n{prometheus.log()}")
        await asyncio.sleep(0.2)


def admin_metrics(platform: PlatformProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{platform.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def listed(platform: PlatformProcess) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{platform.admin_port}/sd/sandboxes"
    with urllib.request.urlopen(url, timeout=5) as response:
        groups: list[dict[str, Any]] = json.load(response)
    return groups


async def test_prometheus_scrapes_running_sandboxes_through_the_proxy_and_never_wakes_them(
    platform_process: Callable[..., PlatformProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tool("prometheus")
    config = tmp_path / "wakeproxy.toml"
    config.write_text('[[wake.no_wake]]\nuser_agent = "Prometheus/*"\n')
    platform = platform_process("--config", str(config))
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    sandbox = await e2b.AsyncSandbox.create(
        metadata={"prometheus.io/port": str(port)},
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    sid = sandbox.sandbox_id
    prometheus = PrometheusServer(
        tmp_path,
        [f"127.0.0.1:{platform.admin_port}"],
        scrape_configs=[
            {
                "job_name": JOB,
                "scrape_timeout": "1s",
                "proxy_url": platform.proxy_url,
                "http_sd_configs": [
                    {
                        "url": f"http://127.0.0.1:{platform.admin_port}/sd/sandboxes",
                        "refresh_interval": "1s",
                    }
                ],
            }
        ],
    )
    try:
        await sandbox.files.write("/home/user/exporter.py", EXPORTER)
        await sandbox.files.write("/home/user/wait_for_port.py", WAIT_FOR_PORT)
        handle = await sandbox.commands.run(f"python3 exporter.py {port}", background=True)
        await handle.disconnect()
        await sandbox.commands.run(f"python3 wait_for_port.py {port}")
        [group] = listed(platform)
        assert group["labels"]["sandbox_id"] == sid
        await asyncio.to_thread(prometheus.start)
        scrapes = f'sandbox_exporter_scrapes_total{{job="{JOB}",sandbox_id="{sid}"}}'

        # Discovered, and scraped through the proxy.
        before_pause = await eventually(
            lambda: (prometheus.value(scrapes) or 0) >= 2 and prometheus.value(scrapes),
            "the exporter in the sandbox to be scraped",
            prometheus,
        )
        up = f'up{{job="{JOB}",sandbox_id="{sid}"}}'
        assert await asyncio.to_thread(prometheus.value, up) == 1

        # Paused: it leaves the targets and the scrapes do not wake it.
        assert await sandbox.pause()
        assert listed(platform) == []
        await eventually(lambda: prometheus.active_targets(JOB) == [], "no target", prometheus)
        cycles = 'count_over_time(up{job="wakeproxy"}[1h])'
        seen = await asyncio.to_thread(prometheus.value, cycles) or 0
        await eventually(
            lambda: (prometheus.value(cycles) or 0) >= seen + 3,
            "three more scrape cycles",
            prometheus,
        )
        paused = await asyncio.to_thread(admin_metrics, platform)
        assert paused[("wakeproxy_sandboxes", frozenset({("state", "paused")}))] == 1
        assert paused[("wakeproxy_wakes_total", frozenset({("result", "ok")}))] == 0
        assert prometheus.active_targets(JOB) == []

        # Other traffic wakes it: it is a target again and scraped where it left off.
        assert (await sandbox.commands.run("echo awake")).stdout == "awake\n"
        await eventually(
            lambda: (prometheus.value(scrapes) or 0) > before_pause,
            "scrapes of the woken sandbox",
            prometheus,
        )
        [target] = await asyncio.to_thread(prometheus.active_targets, JOB)
        assert target["health"] == "up"
        assert target["labels"]["sandbox_id"] == sid
    finally:
        await asyncio.to_thread(prometheus.stop)
        await asyncio.wait_for(sandbox.kill(), 30)
