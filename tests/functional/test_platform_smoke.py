"""`wakeproxy up` end to end with the real e2b SDK: create, write, pause, auto-resume."""

from __future__ import annotations

import asyncio

import pytest
from platform_process import PlatformProcess

e2b = pytest.importorskip("e2b")


async def test_sdk_file_survives_a_pause_and_reading_it_resumes_the_sandbox(
    platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    sandbox = await e2b.AsyncSandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        await sandbox.files.write("/home/user/note.txt", "kept across a pause")
        assert await sandbox.pause()
        assert (await sandbox.get_info()).state == "paused"
        assert await sandbox.files.read("/home/user/note.txt") == "kept across a pause"
        assert (await sandbox.get_info()).state == "running"
        result = await sandbox.commands.run('python3 -c "print(2 + 2)"')
        assert result.stdout == "4\n"
    finally:
        await asyncio.wait_for(sandbox.kill(), 30)
