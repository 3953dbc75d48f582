"""The backend as the wake coordinator sees it when replicas share state through a store.

`SharedBackend` wraps the real backend and keeps the `Backend` contract, so the
coordinator (and its hot path, which never gets here) is unchanged:

    get       a shared store's record first (if it is settled and this replica was not
              told to distrust it), else the backend, whose answer is written back
              (version-checked) and announced to the other replicas when it is news
    resume    one resume across replicas (`wakeproxy.state.wake`)
    upstream  the backend's
    touch     into the store's activity set, which one replica at a time reports to the
              backend (`wakeproxy.state.activity`); straight to the backend otherwise
    watch     state changes from other replicas' notices and from the backend itself
              (whose changes are also written to the store: news to the others when
              this replica is the first to write that version)

`StateStore` is the interface it needs; `MemoryStore` and `RedisStore` implement it.
Nothing here waits on the store without its timeout, and every store failure turns into
the degraded path: backend lookups and one resume per replica. What was learned while
the store was away is written back once it returns, so the replicas converge.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Protocol, TypeVar

from wakeproxy.backends.base import (
    Backend,
    KeepsTimeouts,
    SandboxInfo,
    SandboxState,
    StateListener,
    Upstream,
    Watchable,
)
from wakeproxy.errors import StoreUnavailable
from wakeproxy.state.activity import ActivityReporter
from wakeproxy.state.records import Lease, Notice, Record, StateChanged, WakeFailed
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.wake import LeasedWake

log = logging.getLogger(__name__)

_REMEMBERED: Final = 10_000  # most sandboxes each bookkeeping table below keeps
K = TypeVar("K")
V = TypeVar("V")


class StateStore(Protocol):
    """Shared state of the replicas: versioned records, leases, notices, activity.

    Every coroutine raises `StoreUnavailable` (and nothing else) when the store fails or
    does not answer within its timeout; none waits longer than that.
    """

    @property
    def shared(self) -> bool:
        """True when other processes see the same store (then reading records pays)."""
        ...

    @property
    def healthy(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def listen(self, listener: Callable[[Notice], None]) -> None:
        """Call `listener` with every notice any writer publishes (its own included)."""

    def watch_health(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(healthy)` whenever `healthy` changes."""

    async def read(self, sandbox_id: str) -> Record | None: ...

    async def write(self, record: Record, origin: str, *, announce: bool = False) -> bool:
        """Store `record` unless a newer version is stored (then False). Publish a
        `StateChanged` when it is news: a newer version than stored, a first record
        that is not "running", or any stored record when `announce`."""
        ...

    async def announce(self, notice: WakeFailed) -> None: ...

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """The lease `name` for `ttl` seconds, or None when someone else holds it."""
        ...

    async def renew(self, lease: Lease, ttl: float) -> bool: ...

    async def release(self, lease: Lease) -> None: ...

    async def lease_left(self, name: str) -> float:
        """Seconds until lease `name` expires (0 when nobody holds it)."""
        ...

    async def add_activity(self, activity: Mapping[str, float]) -> None: ...

    async def take_activity(self, limit: int) -> dict[str, float]: ...

    async def last_activity(self, sandbox_id: str) -> float | None:
        """When any replica last served the sandbox (epoch seconds), for observability."""
        ...

    async def forget_idle(self) -> None:
        """Drop last-activity times older than a day."""


class StateRecorder(Protocol):
    """The metrics the shared state reports (`wakeproxy.metrics.Metrics` has them)."""

    def state_lookup(self, source: str, result: str, count: int = 1) -> None: ...

    def state_notice(self, kind: str) -> None:
        """Another replica's notice arrived: "state" (a record changed) or "wake_failed"."""

    def redis_up(self, up: bool) -> None: ...


class SharedBackend:
    def __init__(
        self,
        backend: Backend,
        store: StateStore,
        settings: StateSettings,
        *,
        activity_interval: float = 1.0,
        activity_batch: int = 1000,
        origin: str | None = None,
        recorder: StateRecorder | None = None,
    ) -> None:
        self._backend = backend
        self.store = store
        self._store = store
        self._recorder = recorder
        self.origin = origin or secrets.token_hex(8)
        self._listeners: list[StateListener] = []
        # Versions at which a sandbox was last seen not running: what a wake is newer than.
        self._asleep: dict[str, int] = {}
        # Sandboxes last heard of running after having been heard of asleep: woken by a
        # wake this replica may not have made (another replica's, seen in its events).
        self._woke: dict[str, SandboxInfo] = {}
        self._distrusted: dict[str, None] = {}  # next lookup goes to the backend
        self._unpublished: dict[str, Record] = {}  # learned while the store was away
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = LeasedWake(
            store,
            backend.resume,
            self._announce,
            self.origin,
            lease_ttl=settings.lease_ttl,
            wait=settings.wake_wait,
        )
        self._activity = ActivityReporter(
            store, backend.touch, interval=activity_interval, batch=activity_batch
        )
        store.listen(self._on_notice)
        store.watch_health(self._on_health)
        if isinstance(backend, Watchable):
            backend.watch(self._on_backend_change)
        if isinstance(backend, KeepsTimeouts):
            backend.keep_timeouts(store)

    # -- the Backend contract ---------------------------------------------------------------

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        store = self._store
        if store.shared and store.healthy and sandbox_id not in self._distrusted:
            try:
                record = await store.read(sandbox_id)
            except StoreUnavailable:
                record = None
                self._count("redis", "error")
            if record is not None and record.settled:
                self._count("redis", _result(record.info))
                return self._note(sandbox_id, record.info)
            if record is not None or store.healthy:
                self._count("redis", "miss")
        info = await self._backend.get(sandbox_id)
        self._distrusted.pop(sandbox_id, None)
        await self._publish(Record.of(sandbox_id, info), announce=False)
        return self._note(sandbox_id, info)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        woke = self._woke.pop(sandbox_id, None)
        if woke is not None:
            # Word that it runs came between the lookup that found it asleep and this
            # call (the coordinator's job starts a moment after it decides): nothing to do.
            self._wake.followed.add(sandbox_id)
            return woke
        info = await self._wake.resume(sandbox_id, self._asleep.get(sandbox_id))
        self._note(sandbox_id, info)
        self._woke.pop(sandbox_id, None)  # this replica's own wake
        return info

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        return await self._backend.upstream(info, port)

    def followed(self, sandbox_id: str) -> bool:
        """Did this replica's last wake of the sandbox only wait for another replica's?"""
        return sandbox_id in self._wake.followed

    async def touch(self, activity: Mapping[str, float]) -> None:
        if not await self._activity.record(activity):
            await self._backend.touch(activity)

    def watch(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def invalidate(self, sandbox_id: str) -> None:
        """What this replica knows turned out wrong (a connect was refused): the next
        lookup asks the backend, whatever the store says."""
        _remember(self._distrusted, sandbox_id, None)

    async def flush_activity(self) -> int:
        """Report the cluster's unreported activity now, if this replica gets the turn."""
        return await self._activity.flush()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._store.shared:
            self._spawn(self._activity.run())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._store.shared:
            await self._activity.flush()

    # -- what others say --------------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        if notice.origin == self.origin:
            return
        if self._recorder is not None:
            changed = isinstance(notice, StateChanged)
            self._recorder.state_notice("state" if changed else "wake_failed")
        self._wake.notice(notice)
        if isinstance(notice, StateChanged):
            record = notice.record
            self._tell(record.sandbox_id, self._note(record.sandbox_id, record.info))

    def _on_backend_change(self, sandbox_id: str, info: SandboxInfo | None) -> None:
        self._tell(sandbox_id, self._note(sandbox_id, info))
        if self._store.shared:
            # Not announced: when every replica hears the backend (an event stream), only
            # the first writer of a version makes it news, not each of them.
            self._spawn(self._publish(Record.of(sandbox_id, info), announce=False))

    def _on_health(self, healthy: bool) -> None:
        self._wake.health(healthy)
        if healthy and self._unpublished:
            self._spawn(self._republish())

    def _tell(self, sandbox_id: str, info: SandboxInfo | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(sandbox_id, info)
            except Exception:
                log.exception("a sandbox state listener failed")

    # -- writing ----------------------------------------------------------------------------

    async def _announce(self, sandbox_id: str, info: SandboxInfo) -> None:
        """A wake's outcome: every replica should hear of it."""
        await self._publish(Record.of(sandbox_id, info), announce=True)

    async def _publish(self, record: Record, *, announce: bool) -> None:
        if not self._store.shared:
            return
        if self._store.healthy:
            try:
                await self._store.write(record, self.origin, announce=announce)
                return
            except StoreUnavailable:
                pass
        kept = self._unpublished.get(record.sandbox_id)
        if kept is None or kept.version <= record.version:
            _remember(self._unpublished, record.sandbox_id, record)

    async def _republish(self) -> None:
        """Write back what was learned while the store was away (newest versions win)."""
        pending, self._unpublished = self._unpublished, {}
        for sandbox_id, record in list(pending.items()):
            try:
                await self._store.write(record, self.origin, announce=True)
            except StoreUnavailable:
                # Gone again: keep the rest, unless something newer was learned meanwhile.
                for left in pending.values():
                    kept = self._unpublished.get(left.sandbox_id)
                    if kept is None or kept.version < left.version:
                        _remember(self._unpublished, left.sandbox_id, left)
                return
            del pending[sandbox_id]

    # -- bookkeeping ------------------------------------------------------------------------

    def _note(self, sandbox_id: str, info: SandboxInfo | None) -> SandboxInfo | None:
        """Remember the version of a sandbox seen asleep, and whether it was heard of
        running since; pass `info` on."""
        if info is None:
            self._asleep.pop(sandbox_id, None)
            self._woke.pop(sandbox_id, None)
        elif info.state is SandboxState.RUNNING:
            if self._asleep.pop(sandbox_id, None) is not None or sandbox_id in self._woke:
                _remember(self._woke, sandbox_id, info)
        else:
            _remember(self._asleep, sandbox_id, info.version)
            self._woke.pop(sandbox_id, None)
        return info

    def _count(self, source: str, result: str) -> None:
        if self._recorder is not None:
            self._recorder.state_lookup(source, result)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("shared state task failed", exc_info=exc)


def _result(info: SandboxInfo | None) -> str:
    return "not_found" if info is None else info.state.value


def _remember(table: dict[K, V], key: K, value: V) -> None:
    """Set `key`, dropping the oldest entries beyond `_REMEMBERED`."""
    table.pop(key, None)
    table[key] = value
    while len(table) > _REMEMBERED:
        del table[next(iter(table))]
