"""The in-memory `StateStore`: the state of one process, and the default.

It keeps the same rules as the Redis store — versioned records with a TTL, leases with
tokens and a TTL, notices to every listener, activity merged by latest time — so code
written against the protocol behaves the same with either. With one process there is no
other replica to share with, so it says `shared = False`, and the shared backend then
neither reads records from it (the coordinator's own cache is fresher than a copy) nor
routes activity through it. Several `SharedBackend`s over one `MemoryStore(shared=True)`
act as replicas of one cluster, without Redis (component tests do that).

Notices are delivered on the next turn of the event loop, never from inside `write`, as
they would arrive from Redis: a listener never runs in the middle of its writer's call.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from itertools import islice

from wakeproxy.state.records import (
    ACTIVITY_KEPT,
    Lease,
    Notice,
    Record,
    StateChanged,
    WakeFailed,
)

HealthListener = Callable[[bool], None]
NoticeListener = Callable[[Notice], None]


class MemoryStore:
    def __init__(
        self,
        *,
        shared: bool = False,
        record_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._record_ttl = record_ttl
        self._clock = clock
        self._records: dict[str, tuple[Record, float]] = {}  # id → (record, expires at)
        self._leases: dict[str, tuple[str, float]] = {}  # name → (token, expires at)
        self._pending: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._listeners: list[NoticeListener] = []

    @property
    def shared(self) -> bool:
        return self._shared

    @property
    def healthy(self) -> bool:
        return True

    def listen(self, listener: NoticeListener) -> None:
        self._listeners.append(listener)

    def watch_health(self, listener: HealthListener) -> None:
        """Never called: memory does not fail."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._listeners.clear()

    # -- records ----------------------------------------------------------------------------

    async def read(self, sandbox_id: str) -> Record | None:
        kept = self._records.get(sandbox_id)
        if kept is None or kept[1] <= self._clock():
            return None
        return kept[0]

    async def write(self, record: Record, origin: str, *, announce: bool = False) -> bool:
        old = await self.read(record.sandbox_id)
        if old is not None and old.version > record.version:
            return False
        self._records[record.sandbox_id] = (record, self._clock() + self._record_ttl)
        if _news(old, record, announce):
            self._deliver(StateChanged(origin, record))
        return True

    async def announce(self, notice: WakeFailed) -> None:
        self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        loop = asyncio.get_running_loop()
        for listener in list(self._listeners):
            loop.call_soon(listener, notice)

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        if await self.lease_left(name) > 0:
            return None
        token = secrets.token_hex(16)
        self._leases[name] = (token, self._clock() + ttl)
        return Lease(name, token)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        if not self._holds(lease):
            return False
        self._leases[lease.name] = (lease.token, self._clock() + ttl)
        return True

    async def release(self, lease: Lease) -> None:
        if self._holds(lease):
            del self._leases[lease.name]

    async def lease_left(self, name: str) -> float:
        held = self._leases.get(name)
        return 0.0 if held is None else max(0.0, held[1] - self._clock())

    def _holds(self, lease: Lease) -> bool:
        held = self._leases.get(lease.name)
        return held is not None and held[0] == lease.token and held[1] > self._clock()

    # -- activity ---------------------------------------------------------------------------

    async def add_activity(self, activity: Mapping[str, float]) -> None:
        for sandbox_id, at in activity.items():
            for times in (self._pending, self._seen):
                if times.get(sandbox_id, at - 1) < at:
                    times[sandbox_id] = at

    async def take_activity(self, limit: int) -> dict[str, float]:
        oldest = sorted(self._pending.items(), key=lambda item: item[1])
        taken = dict(islice(oldest, limit))
        for sandbox_id in taken:
            del self._pending[sandbox_id]
        return taken

    async def last_activity(self, sandbox_id: str) -> float | None:
        return self._seen.get(sandbox_id)

    async def forget_idle(self) -> None:
        cutoff = time.time() - ACTIVITY_KEPT
        self._seen = {sandbox_id: at for sandbox_id, at in self._seen.items() if at >= cutoff}


def _news(old: Record | None, new: Record, announce: bool) -> bool:
    """Whether a stored `new` record is worth a notice (the rule the Redis script keeps)."""
    if old is None:
        return announce or not new.running
    return new.version > old.version or (announce and new.version == old.version)
