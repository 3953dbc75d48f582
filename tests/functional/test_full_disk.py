"""A data dir on a small file system that fills up: the real `wakeproxy up` on a tmpfs
mounted by the test (root only), real sandboxes, the real `e2b` SDK.

One sandbox fills the disk; then every sandbox times out. The others still pause (the
records' reserve), the filling one ends paused as well (a true state, on disk and in the
API), writes get E2B's 507 `NotEnoughSpaceException` with no partial file left, creates a
507 that says what to do, and once space is freed everything works again without a
restart. Waits are bounded polls; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess

e2b = pytest.importorskip("e2b")

GUARD = 30.0
SIZE = "24m"
PAUSE_ON_TIMEOUT = {"on_timeout": "pause", "auto_resume": True}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/data`, a tmpfs of `SIZE` (the workdir of a `PlatformProcess` at tmp_path)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the data dir needs root")
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def connection(platform: PlatformProcess) -> dict[str, Any]:
    return {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
        "request_timeout": GUARD,
    }


async def state_of(platform: PlatformProcess, sandbox_id: str) -> str:
    info = await e2b.AsyncSandbox.get_info(sandbox_id, **connection(platform))
    return str(info.state.value)


async def until_paused(platform: PlatformProcess, sandbox_id: str) -> None:
    deadline = time.monotonic() + GUARD
    while await state_of(platform, sandbox_id) != "paused":
        assert time.monotonic() < deadline, f"{sandbox_id} did not pause within {GUARD} s"
        await asyncio.sleep(0.05)


async def until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():
        assert time.monotonic() < deadline, f"waited {GUARD:g} s for {what}"
        await asyncio.sleep(0.05)


def events(platform: PlatformProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in platform.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and (document := json.loads(line)).get("event") == event:
            found.append(document)
    return found


async def test_a_full_data_dir_keeps_timeouts_going_and_recovers_once_space_is_freed(
    tmp_path: Path, small_disk: Path
) -> None:
    platform = PlatformProcess(tmp_path, "--log-format", "json")
    assert platform.data_dir == small_disk
    platform.start()
    try:
        await _fill_time_out_and_recover(platform)
    finally:
        platform.stop()


async def _fill_time_out_and_recover(platform: PlatformProcess) -> None:
    options = {"lifecycle": PAUSE_ON_TIMEOUT, **connection(platform)}
    filler = await e2b.AsyncSandbox.create(**options)
    others = [await e2b.AsyncSandbox.create(**options) for _ in range(2)]
    home = platform.data_dir / "sandboxes" / filler.sandbox_id / "home"

    filled = await filler.commands.run(
        "head -c 1G /dev/zero > /home/user/fill; echo $?", timeout=GUARD
    )
    assert filled.stdout.strip() != "0"  # it stopped for want of space
    assert shutil.disk_usage(platform.data_dir).free < 64 * 1024

    # Writes and creates: E2B's "not enough space", nothing half-written left behind.
    with pytest.raises(e2b.NotEnoughSpaceException):
        await filler.files.write("/home/user/small.txt", "x")
    with pytest.raises(e2b.NotEnoughSpaceException):
        await filler.files.write("/home/user/large.bin", b"y" * (2 * 1024 * 1024))
    assert not (home / "small.txt").exists()
    assert not (home / "large.bin").exists()
    with pytest.raises(e2b.SandboxException) as refused:
        await e2b.AsyncSandbox.create(**options)
    assert "507" in str(refused.value)
    assert "not enough disk space" in str(refused.value)

    # Every sandbox times out now (the timeout itself is recorded from the reserve).
    for sandbox in (filler, *others):
        await sandbox.set_timeout(1)
    for sandbox in (filler, *others):
        await until_paused(platform, sandbox.sandbox_id)
        # The file may lag (what sandboxes write eats the freed reserve too): it says
        # `pausing` until its write is retried, which a restart would complete anyway.
        record = platform.data_dir / "records" / f"{sandbox.sandbox_id}.json"
        await until(lambda r=record: json.loads(r.read_text())["state"] == "paused", "records")
    paused = {e["sandbox_id"] for e in events(platform, "pause") if e["trigger"] == "timeout"}
    assert paused == {s.sandbox_id for s in (filler, *others)}
    assert not list((platform.data_dir / "records").glob("*.tmp"))
    log = platform.log_path.read_text(errors="replace")
    assert "written from the platform's reserve" in log  # the disk really was full

    # Space freed from inside the filling sandbox: everything works again, no restart.
    again = await e2b.AsyncSandbox.connect(filler.sandbox_id, **connection(platform))
    await again.commands.run("rm /home/user/fill")
    await again.files.write("/home/user/small.txt", "x")
    assert await again.files.read("/home/user/small.txt") == "x"
    fresh = await e2b.AsyncSandbox.create(**options)
    assert (await fresh.commands.run("echo fresh")).stdout == "fresh\n"
    for sandbox in others:
        woken = await e2b.AsyncSandbox.connect(sandbox.sandbox_id, **connection(platform))
        assert (await woken.commands.run("echo back")).stdout == "back\n"
    for sandbox in (again, fresh, *others):
        with contextlib.suppress(e2b.NotFoundException):
            await sandbox.kill()
