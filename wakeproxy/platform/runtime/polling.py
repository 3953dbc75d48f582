"""Waiting for process and cgroup state that changes without an event to await."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def poll_until(check: Callable[[], bool], timeout: float) -> bool:  # noqa: ASYNC109
    """True as soon as `check()` holds, False once `timeout` seconds passed without it.
    Callers act on "not in time" (raise their own error, undo a half-done freeze), so it
    is an answer rather than a TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.001
    # /proc and cgroup v1 files offer nothing to wait on, so this polls, starting fast
    # (most changes take a few milliseconds) and backing off to 20 ms.
    while not check():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
    return True
