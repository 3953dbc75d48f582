"""`wakeproxy up`'s metrics: the embedded platform's sandboxes and a wake by traffic, as the
admin listener reports them, driven by the real e2b SDK."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from platform_process import PlatformProcess
from prometheus_client.parser import text_string_to_metric_families

e2b = pytest.importorskip("e2b")


def scrape(platform: PlatformProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{platform.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def one(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def test_sandbox_states_transitions_and_a_wake_are_reported(
    platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    sandbox = await e2b.AsyncSandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        before = await asyncio.to_thread(scrape, platform)
        assert before[one("wakeproxy_sandboxes", state="running")] == 1
        assert await sandbox.pause()
        paused = await asyncio.to_thread(scrape, platform)
        assert paused[one("wakeproxy_sandboxes", state="paused")] == 1
        assert paused[one("wakeproxy_sandboxes", state="running")] == 0
        await sandbox.files.write("/home/user/woke.txt", "traffic resumed me")  # wakes it
        woke = await asyncio.to_thread(scrape, platform)
    finally:
        await asyncio.wait_for(sandbox.kill(), 30)
    assert woke[one("wakeproxy_sandboxes", state="running")] == 1
    assert woke[one("wakeproxy_sandbox_transitions_total", to="resuming")] == 1
    assert woke[one("wakeproxy_sandbox_resume_seconds_count")] == 1
    assert woke[one("wakeproxy_wakes_total", result="ok")] == 1
    assert woke[one("wakeproxy_wake_duration_seconds_count")] == 1
    for (name, labels), _ in woke.items():
        assert sandbox.sandbox_id not in dict(labels).values(), name
