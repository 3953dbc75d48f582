"""Activity from every replica, merged in the store and reported to the backend once.

Each replica's coordinator batches its own activity (`wakeproxy.wake.activity`) and hands
it here. With a shared store it goes into two sorted sets, keeping the latest time per
sandbox: one of activity not yet reported, and one of last activity that operators (and
metrics) can read to see what the whole cluster served. Every `interval`, each replica
tries the lease `<p>:lease:activity`, which lasts one interval and is never released;
the replica that gets it takes the unreported times (oldest first, `batch` at a time)
and calls `Backend.touch`. So the backend hears of each busy sandbox about once per
interval however many replicas served it, instead of once per replica.

Why not let every replica touch the backend itself? That is what happens while the
store is down (it is the fallback), but it multiplies the backend's load by the number
of replicas and leaves nobody with the cluster-wide view.

A batch the backend refuses goes back into the unreported set (an older time never
replaces a newer one), so an outage of the backend does not make busy sandboxes look idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from wakeproxy.errors import StoreUnavailable
from wakeproxy.state.records import Lease

log = logging.getLogger(__name__)

Touch = Callable[[Mapping[str, float]], Awaitable[None]]
_TRIM_EVERY = 3600  # flushes between trims of the last-activity set


class ActivityStore(Protocol):
    @property
    def shared(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    async def acquire(self, name: str, ttl: float) -> Lease | None: ...

    async def add_activity(self, activity: Mapping[str, float]) -> None: ...

    async def take_activity(self, limit: int) -> dict[str, float]: ...

    async def forget_idle(self) -> None: ...


class ActivityReporter:
    def __init__(self, store: ActivityStore, touch: Touch, *, interval: float, batch: int) -> None:
        self._store = store
        self._touch = touch
        self._interval = interval
        self._batch = batch
        self._flushes = 0

    async def record(self, activity: Mapping[str, float]) -> bool:
        """Put `activity` into the shared store; False when the caller must report it
        to the backend itself (no shared store, or it is down)."""
        if not (self._store.shared and self._store.healthy):
            return False
        try:
            await self._store.add_activity(activity)
        except StoreUnavailable:
            return False
        return True

    async def run(self) -> None:
        """Report the cluster's activity whenever this replica gets the interval's lease."""
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> int:
        """If this replica gets the lease: report what is unreported; how many sandboxes."""
        if not self._store.healthy:
            return 0
        try:
            if await self._store.acquire("activity", self._interval) is None:
                return 0
            sent = 0
            while batch := await self._store.take_activity(self._batch):
                if not await self._report(batch):
                    break
                sent += len(batch)
            self._flushes += 1
            if self._flushes % _TRIM_EVERY == 1:
                await self._store.forget_idle()
            return sent
        except StoreUnavailable:
            return 0

    async def _report(self, batch: dict[str, float]) -> bool:
        try:
            await self._touch(batch)
        except Exception as exc:
            log.warning("reporting activity of %d sandboxes failed: %s", len(batch), exc)
            with contextlib.suppress(StoreUnavailable):
                await self._store.add_activity(batch)
            return False
        return True
