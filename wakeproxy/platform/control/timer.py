"""One task that sleeps until the earliest deadline, woken whenever deadlines change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class DeadlineTimer:
    def __init__(self, scan: Callable[[], float | None], clock: Callable[[], float]) -> None:
        """`scan()` acts on whatever is due and returns the next deadline (clock time),
        or None when nothing is pending."""
        self._scan = scan
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sandbox-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Deadlines changed (or the clock jumped): scan again now."""
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            next_at = self._scan()
            delay = None if next_at is None else max(next_at - self._clock(), 0.0)
            # Not `wait_for`: on 3.11 it can swallow a cancel that races a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()
