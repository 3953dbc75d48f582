"""Timeouts of labelled containers, which no control plane enforces: the proxies do.

E2B's semantics: a sandbox lives `timeout` seconds from each start or wake, then sleeps
(or is killed, as `on_timeout` says). With `activity_extends_timeout`, the time counts
from the last request instead, whichever is later.

Every `interval`, each replica tries the lease `<p>:lease:timeouts` (one interval long,
never released, like the activity report's); the one that gets it puts to sleep what is
due. Its view of activity is the cluster's: the store's last-activity set, which every
replica feeds, and what reached this replica's backend. Without a shared store (one
process) it needs no lease; with the store down, each replica acts on its own view, and
the engine refuses a second pause of a paused container, which is then nothing.

When a wake happened is known from the engine's events as this process heard them; a
container found running when the process started counts from then, so a timeout is
never early, only late by the proxy's downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from wakeproxy.backends.base import TurnStore
from wakeproxy.backends.docker.containers import Spec
from wakeproxy.errors import StoreUnavailable

log = logging.getLogger(__name__)

LEASE: Final = "timeouts"


@dataclass(frozen=True, slots=True)
class Awake:
    """A running container with a timeout, as the keeper sees it."""

    spec: Spec
    since: float  # epoch seconds: when it was last started or woken (as far as known)


def due_at(awake: Awake, last_activity: float | None) -> float | None:
    """When the container's timeout ends (epoch seconds); None: never."""
    spec = awake.spec
    if spec.timeout <= 0:
        return None
    start = awake.since
    if spec.idle and last_activity is not None:
        start = max(start, last_activity)
    return start + spec.timeout


def due(awake: Iterable[Awake], now: float, activity: Callable[[str], float | None]) -> list[Spec]:
    """The containers whose timeout has ended at `now`."""
    return [
        one.spec
        for one in awake
        if (end := due_at(one, activity(one.spec.sandbox_id))) is not None and end <= now
    ]


class TimeoutKeeper:
    def __init__(
        self,
        awake: Callable[[], list[Awake]],
        local_activity: Callable[[str], float | None],
        put_to_sleep: Callable[[Spec], Awaitable[None]],
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._awake = awake
        self._local_activity = local_activity
        self._put_to_sleep = put_to_sleep
        self._interval = interval
        self._clock = clock
        self.store: TurnStore | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # one bad round must not end the timeouts of every container
                log.exception("checking container timeouts failed")

    async def check(self) -> int:
        """One round: put to sleep what is due if it is this replica's turn; how many."""
        candidates = [one for one in self._awake() if one.spec.timeout > 0]
        if not candidates or not await self._my_turn():
            return 0
        now = self._clock()
        # The cluster's last activity only for those the local view already finds due.
        suspects = due(candidates, now, self._local_activity)
        if not suspects:
            return 0
        cluster = await self._cluster_activity([spec.sandbox_id for spec in suspects])
        finished = due(
            [one for one in candidates if one.spec in suspects],
            now,
            lambda sid: _latest(self._local_activity(sid), cluster.get(sid)),
        )
        for spec in finished:
            log.info(
                "container timed out",
                extra={"event": "timeout", "sandbox": spec.sandbox_id, "to": spec.on_timeout},
            )
            await self._put_to_sleep(spec)
        return len(finished)

    async def _my_turn(self) -> bool:
        store = self.store
        if store is None or not store.shared or not store.healthy:
            return True
        try:
            return await store.acquire(LEASE, self._interval) is not None
        except StoreUnavailable:
            return True  # the store just went away: every replica acts on its own

    async def _cluster_activity(self, sandbox_ids: list[str]) -> dict[str, float]:
        store = self.store
        seen: dict[str, float] = {}
        if store is None or not store.shared or not store.healthy:
            return seen
        for sandbox_id in sandbox_ids:
            with contextlib.suppress(StoreUnavailable):
                at = await store.last_activity(sandbox_id)
                if at is not None:
                    seen[sandbox_id] = at
        return seen


def _latest(one: float | None, other: float | None) -> float | None:
    if one is None:
        return other
    return one if other is None else max(one, other)
