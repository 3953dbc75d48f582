"""Sandboxes whose processes die: the real `wakeproxy up`, real sandboxes, the real `e2b`
SDK. A sandbox whose init is killed from the host ends as killed (not found through the
API and the proxy), its exit is logged and counted, and no zombie is left.

Waits are bounded polls; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from platform_process import PlatformProcess
from prometheus_client.parser import text_string_to_metric_families

from wakeproxy.platform.runtime import procfs

e2b = pytest.importorskip("e2b")

GUARD = 30.0


def connection(platform: PlatformProcess) -> dict[str, Any]:
    return {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
        "request_timeout": GUARD,
    }


def exits_counted(platform: PlatformProcess, reason: str) -> float:
    url = f"http://127.0.0.1:{platform.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wakeproxy_sandbox_exits_total" and sample.labels == {
                "reason": reason
            }:
                return float(sample.value)
    raise AssertionError("wakeproxy_sandbox_exits_total is not exported")


def log_events(platform: PlatformProcess, event: str) -> list[dict[str, Any]]:
    lines = platform.log_path.read_text(errors="replace").splitlines()
    found = []
    for line in lines:
        if line.startswith("{"):
            document = json.loads(line)
            if document.get("event") == event:
                found.append(document)
    return found


def through_proxy(platform: PlatformProcess, sandbox_id: str) -> tuple[int, str]:
    """GET /health of the sandbox's envd port through the proxy: status and body."""
    request = urllib.request.Request(
        f"{platform.proxy_url}/health", headers={"Host": f"49983-{sandbox_id}.{platform.domain}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=GUARD) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def zombies_of(pid: int) -> list[int]:
    table = procfs.process_table()
    return [p for p, stat in table.items() if stat.ppid == pid and stat.dead]


async def until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {GUARD:g} s for {what}")
        await asyncio.sleep(0.02)


async def gone(platform: PlatformProcess, sandbox_id: str) -> bool:
    try:
        await e2b.AsyncSandbox.get_info(sandbox_id, **connection(platform))
    except e2b.NotFoundException:
        return True
    return False


@pytest.mark.parametrize("target", ["agent", "all"])
async def test_a_sandbox_whose_process_is_killed_is_not_found_logged_counted_and_reaped(
    platform_process: Callable[..., PlatformProcess], target: str
) -> None:
    """`agent`: the sandbox's envd, its container's first process (PID 1 inside), whose
    death ends the container; `all`: every process of the sandbox at once."""
    platform = platform_process("--log-format", "json")
    victim = await e2b.AsyncSandbox.create(**connection(platform))
    bystander = await e2b.AsyncSandbox.create(**connection(platform))
    await victim.commands.run("sleep 86400", background=True)
    record_path = platform.data_dir / "records" / f"{victim.sandbox_id}.json"
    runtime = json.loads(record_path.read_text())["runtime"]
    root = procfs.read_stat(runtime["pid"])
    assert root is not None
    assert platform.proc is not None
    assert root.ppid == platform.proc.pid  # our child: reaping it is ours to do

    below = procfs.descendants(runtime["pid"], procfs.process_table())
    assert below  # the command
    for pid in [runtime["pid"], *below] if target == "all" else [runtime["pid"]]:
        os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + GUARD
    while not await gone(platform, victim.sandbox_id):
        assert time.monotonic() < deadline, f"{victim.sandbox_id} still found after {GUARD} s"
        await asyncio.sleep(0.02)
    with pytest.raises(e2b.NotFoundException):
        await e2b.AsyncSandbox.connect(victim.sandbox_id, **connection(platform))
    status, body = await asyncio.to_thread(through_proxy, platform, victim.sandbox_id)
    assert (status, "was not found" in body) == (502, True)  # E2B's answer for traffic
    await until(lambda: log_events(platform, "exit"), "the exit to be logged")
    [line] = log_events(platform, "exit")
    assert (line["sandbox_id"], line["level"]) == (victim.sandbox_id, "warning")
    assert line["duration"] > 0
    assert (line["reason"], "SIGKILL" in line["detail"]) == ("signal", True)
    assert await asyncio.to_thread(exits_counted, platform, "signal") == 1
    assert await asyncio.to_thread(exits_counted, platform, "oom") == 0
    # Reaped: the root is not left <defunct> (its pid is gone or someone else's now).
    after = procfs.read_stat(runtime["pid"])
    assert after is None or after.start_time != root.start_time
    await until(lambda: not record_path.exists(), "its record to be removed")
    assert (await bystander.commands.run("echo still here")).stdout == "still here\n"
    bystander_record = platform.data_dir / "records" / f"{bystander.sandbox_id}.json"
    bystander_root = json.loads(bystander_record.read_text())["runtime"]["pid"]
    await bystander.kill()
    created = {e["sandbox_id"] for e in log_events(platform, "create")}
    assert created == {victim.sandbox_id, bystander.sandbox_id}
    await until(lambda: len(log_events(platform, "kill")) == 2, "both kills to be logged")
    kills = {e["sandbox_id"]: e["trigger"] for e in log_events(platform, "kill")}
    assert kills == {victim.sandbox_id: "exit", bystander.sandbox_id: "api"}
    # Nor did the kill leave the bystander's root a zombie (reaped though it was ended
    # on purpose).
    await until(lambda: bystander_root not in zombies_of(platform.proc.pid), "its reaping")  # type: ignore[union-attr]
    # Nor anything else the platform started for them (their network stacks).
    await until(lambda: not zombies_of(platform.proc.pid), "no zombie child of the platform")  # type: ignore[union-attr]
