"""One task that sleeps until the earliest deadline, woken whenever deadlines change.

Supervised: a scan that raises is logged at once and tried again a moment later (the
timer never stops for one failure), and should the task itself end with an error
anyway, that is logged and a new one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_AFTER_FAILURE = 1.0  # seconds before a scan that raised is tried again


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
            self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Deadlines changed (or the clock jumped): scan again now."""
        self._wakeup.set()

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Cancelled: by `stop`, or by the loop closing; nothing to start again then.
        if task is not self._task or task.cancelled():
            return
        self._task = None
        log.error("the sandbox deadline timer ended; it is started again",
                  exc_info=task.exception())  # fmt: skip
        self.start()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                next_at = self._scan()
            except Exception:
                log.exception("the sandbox deadline scan failed; it runs again shortly")
                next_at = self._clock() + _AFTER_FAILURE
            delay = None if next_at is None else max(next_at - self._clock(), 0.0)
            # Not `wait_for`: on 3.11 it can swallow a cancel that races a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()
