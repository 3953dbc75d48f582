"""One platform per data dir: real `wakeproxy up` and `serve-api` processes on one data dir,
and a sandbox made with the real `e2b` SDK. The second platform exits 2 naming the holder
and leaves the first one's sandboxes alone; a dead platform's lock is taken over."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess
from support import free_port

from wakeproxy.platform.control.holder import LOCK_NAME, DataDirInUse, DataDirLock

e2b = pytest.importorskip("e2b")

GUARD = 30.0


def connection(platform: PlatformProcess) -> dict[str, Any]:
    return {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
        "request_timeout": GUARD,
    }


def refused(platform: PlatformProcess) -> str:
    """Start `platform`, which must exit 2; what it said."""
    with pytest.raises(RuntimeError, match="exited 2"):
        platform.start()
    return platform.log()


def serve_api_on(data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable, "-m", "wakeproxy", "serve-api",
        "--api-listen", f"127.0.0.1:{free_port()}",
        "--admin-listen", f"127.0.0.1:{free_port()}",
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, timeout=GUARD, check=False)


async def test_a_second_up_on_a_data_dir_exits_2_naming_the_holder_and_touches_nothing(
    tmp_path: Path,
) -> None:
    first = PlatformProcess(tmp_path).start()
    later: PlatformProcess | None = None
    try:
        assert first.proc is not None
        sandbox = await e2b.AsyncSandbox.create(**connection(first))
        await sandbox.commands.run("echo started > /home/user/mark")

        second = PlatformProcess(tmp_path)  # same workdir: same data dir, other ports
        said = refused(second)
        assert f"pid {first.proc.pid}" in said
        assert first.env["E2B_API_URL"] in said
        assert str(first.data_dir) in said
        serve_api = await asyncio.to_thread(serve_api_on, first.data_dir)
        assert serve_api.returncode == 2, serve_api.stderr
        assert f"pid {first.proc.pid}".encode() in serve_api.stderr

        # The first platform and its sandbox carry on as if nothing happened.
        info = await e2b.AsyncSandbox.get_info(sandbox.sandbox_id, **connection(first))
        assert info.state.value == "running"
        result = await sandbox.commands.run("cat /home/user/mark")
        assert result.stdout == "started\n"
        assert (first.data_dir / "records" / f"{sandbox.sandbox_id}.json").exists()

        # Its lock dies with it, however it ends; the next start takes over and cleans up.
        first.stop(signal.SIGKILL)
        later = PlatformProcess(tmp_path).start()
        with pytest.raises(e2b.NotFoundException):
            await e2b.AsyncSandbox.get_info(sandbox.sandbox_id, **connection(later))
        holder = json.loads((later.data_dir / LOCK_NAME).read_text())
        assert later.proc is not None
        assert holder == {"pid": later.proc.pid, "api": later.env["E2B_API_URL"]}
    finally:
        first.stop()
        if later is not None:
            later.stop()


def test_the_lock_is_exclusive_and_released_with_its_holder(tmp_path: Path) -> None:
    with DataDirLock.take(tmp_path) as lock:
        lock.announce("http://127.0.0.1:1")
        # flock locks belong to open descriptions: a second take in this process conflicts
        # as another process's would.
        with pytest.raises(DataDirInUse) as refused_here:
            DataDirLock.take(tmp_path)
        assert refused_here.value.holder.api == "http://127.0.0.1:1"
    with DataDirLock.take(tmp_path):
        pass
