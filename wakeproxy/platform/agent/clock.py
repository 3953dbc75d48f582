"""Time the sandbox has spent running, so that a pause does not count against timeouts.

A command's `timeout` in E2B is measured inside the VM, whose clock stops while the
sandbox is paused. Here a pause freezes the agent's process (cgroup freezer or
SIGSTOP) while the monotonic clock runs on, so a command started with the default
60 s timeout would be killed the moment a long pause ends. `ActiveClock` notices a
freeze as a gap between its observations: a ticker observes every `TICK` seconds
while the agent runs, so a gap longer than `max_gap` can only be time the process was
stopped, and only `max_gap` of it is counted. The error per pause is below `max_gap`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TICK = 0.5
MAX_GAP = 1.5


class ActiveClock:
    def __init__(self, now: Callable[[], float] = time.monotonic, max_gap: float = MAX_GAP) -> None:
        self._now = now
        self._max_gap = max_gap
        self._last = now()
        self._active = 0.0

    def observe(self) -> float:
        """Seconds of running time since the clock was made."""
        t = self._now()
        gap = t - self._last
        self._last = t
        if gap > 0:
            self._active += min(gap, self._max_gap)
        return self._active

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of running time (frozen time is not counted)."""
        target = self.observe() + seconds
        # A wake-up after a freeze comes early in running time: sleep for what is left.
        while (remaining := target - self.observe()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)

    async def tick(self, interval: float = TICK) -> None:
        """Observe forever; run it as a task for as long as the clock is used."""
        while True:
            await asyncio.sleep(interval)
            self.observe()
