"""One resume per sandbox across every replica: a lease decides who calls the backend.

Each replica's coordinator already resumes a sandbox at most once at a time (its own
single flight); this module makes that once across replicas. The replica that gets the
lease `<p>:lease:wake:<id>` (SET NX PX, a random token) *leads*: it calls
`Backend.resume`, renews the lease every third of its TTL while the call runs, publishes
the outcome — the new record (a "running" notice), or `WakeFailed` — and releases the
lease (compare-and-delete, so only with its own token). Every other replica *follows*:
it waits for that notice, not polling. A follower re-checks only when the lease could
have expired, which happens when its holder died without releasing it; it then tries to
take the lease itself and leads the rest of the wake (`resume` is idempotent, so a
second call joins a resume already under way at the backend).

Before leading, and when a follower re-checks, the stored record is read: if it shows the
sandbox running at a newer version than the one this replica saw asleep, the wake has
already happened and the backend is not called again.

Without a healthy store everything degrades to one resume per replica: the call goes
straight to the backend, and followers still waiting give up following and do the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from wakeproxy.backends.base import SandboxInfo
from wakeproxy.errors import BackendError, NotFound, StoreUnavailable, Unavailable
from wakeproxy.state.records import Lease, Notice, Record, StateChanged, WakeFailed

log = logging.getLogger(__name__)

# A follower looks again this long after the lease should have expired: time for the
# holder's last renewal or release to land.
_MARGIN: Final = 0.05


class LeaseStore(Protocol):
    """What waking needs of a `StateStore`."""

    @property
    def healthy(self) -> bool: ...

    async def read(self, sandbox_id: str) -> Record | None: ...

    async def announce(self, notice: WakeFailed) -> None: ...

    async def acquire(self, name: str, ttl: float) -> Lease | None: ...

    async def renew(self, lease: Lease, ttl: float) -> bool: ...

    async def release(self, lease: Lease) -> None: ...

    async def lease_left(self, name: str) -> float: ...


@dataclass(frozen=True, slots=True)
class _Degraded:
    """The store went away while following."""


_Outcome: TypeAlias = SandboxInfo | WakeFailed | _Degraded | None  # None: the sandbox is gone
Resume = Callable[[str], Awaitable[SandboxInfo]]
Publish = Callable[[str, SandboxInfo], Awaitable[None]]


def ends_wait(notice: Notice) -> _Outcome | bool:
    """What a notice means to a follower of its sandbox's wake; False: keep waiting.
    (Never True: the bool only marks "no outcome", as None means "gone".)"""
    match notice:
        case StateChanged(record=record):
            if record.info is None:
                return None
            return record.info if record.running else False
        case WakeFailed():
            return notice


def woken(record: Record | None, asleep_at: int | None) -> SandboxInfo | None:
    """The running state in `record` when it is newer than the version seen asleep."""
    if record is None or not record.running or asleep_at is None or record.version <= asleep_at:
        return None
    return record.info


class LeasedWake:
    def __init__(
        self,
        store: LeaseStore,
        resume: Resume,
        publish: Publish,
        origin: str,
        *,
        lease_ttl: float,
        wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._resume = resume
        self._publish = publish
        self._origin = origin
        self._lease_ttl = lease_ttl
        self._wait = wait
        self._clock = clock
        self._followers: dict[str, set[asyncio.Future[_Outcome]]] = {}
        self.followed: set[str] = set()
        """Sandboxes whose last wake here only waited for another replica's resume."""

    # -- what the shared backend tells it ---------------------------------------------------

    def notice(self, notice: Notice) -> None:
        sandbox_id = (
            notice.record.sandbox_id if isinstance(notice, StateChanged) else notice.sandbox_id
        )
        followers = self._followers.get(sandbox_id)
        if not followers:
            return
        outcome = ends_wait(notice)
        if not isinstance(outcome, bool):
            self._settle(followers, outcome)

    def health(self, healthy: bool) -> None:
        if not healthy:
            for followers in self._followers.values():
                self._settle(followers, _Degraded())

    @staticmethod
    def _settle(followers: set[asyncio.Future[_Outcome]], outcome: _Outcome) -> None:
        for future in followers:
            if not future.done():
                future.set_result(outcome)

    # -- the wake ---------------------------------------------------------------------------

    async def resume(self, sandbox_id: str, asleep_at: int | None) -> SandboxInfo:
        """Resume the sandbox, or wait for the replica that does; `asleep_at` is the
        version this replica last saw it not running (None: unknown). A wait for another
        replica's resume leaves the id in `followed`."""
        self.followed.discard(sandbox_id)
        if not self._store.healthy:
            return await self._alone(sandbox_id)
        with self._following(sandbox_id) as outcome:
            try:
                return await self._lead_or_follow(sandbox_id, asleep_at, outcome)
            except StoreUnavailable:
                pass
        return await self._alone(sandbox_id)

    async def _lead_or_follow(
        self, sandbox_id: str, asleep_at: int | None, outcome: asyncio.Future[_Outcome]
    ) -> SandboxInfo:
        name = f"wake:{sandbox_id}"
        deadline = self._clock() + self._wait
        while True:
            lease = await self._store.acquire(name, self._lease_ttl)
            if lease is not None:
                self.followed.discard(sandbox_id)  # a follower may take over a dead lead
                return await self._lead(sandbox_id, lease, asleep_at)
            self.followed.add(sandbox_id)
            if (info := woken(await self._store.read(sandbox_id), asleep_at)) is not None:
                return info
            budget = deadline - self._clock()
            if budget <= 0:
                raise Unavailable(
                    f"the wake of sandbox {sandbox_id} by another replica did not finish",
                    sandbox_id=sandbox_id,
                )
            left = await self._store.lease_left(name)
            done, _ = await asyncio.wait({outcome}, timeout=min(budget, left + _MARGIN))
            if done:
                return await self._followed(sandbox_id, outcome.result())

    async def _followed(self, sandbox_id: str, outcome: _Outcome) -> SandboxInfo:
        match outcome:
            case SandboxInfo():
                return outcome
            case None:
                raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
            case WakeFailed(error=error, message=message):
                raise error(message, sandbox_id=sandbox_id)
            case _Degraded():
                return await self._alone(sandbox_id)

    async def _lead(self, sandbox_id: str, lease: Lease, asleep_at: int | None) -> SandboxInfo:
        keeper = asyncio.get_running_loop().create_task(self._keep(lease))
        try:
            with contextlib.suppress(StoreUnavailable):
                if (info := woken(await self._store.read(sandbox_id), asleep_at)) is not None:
                    # Another replica's wake ended just before this one got the lease.
                    self.followed.add(sandbox_id)
                    return info
            try:
                info = await self._resume(sandbox_id)
            except Exception as exc:
                await self._tell_failed(sandbox_id, exc)
                raise
            await self._publish(sandbox_id, info)
            return info
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            with contextlib.suppress(StoreUnavailable):
                await self._store.release(lease)

    async def _alone(self, sandbox_id: str) -> SandboxInfo:
        self.followed.discard(sandbox_id)
        info = await self._resume(sandbox_id)
        await self._publish(sandbox_id, info)
        return info

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease while the resume runs, so nobody takes over a live wake."""
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                if not await self._store.renew(lease, self._lease_ttl):
                    log.warning("lost the lease %s while resuming", lease.name)
                    return
            except StoreUnavailable:
                continue  # the store is down: nobody else can take the lease either

    async def _tell_failed(self, sandbox_id: str, exc: Exception) -> None:
        error = type(exc) if isinstance(exc, BackendError) else Unavailable
        message = exc.message if isinstance(exc, BackendError) else "the resume failed"
        with contextlib.suppress(StoreUnavailable):
            await self._store.announce(WakeFailed(self._origin, sandbox_id, error, message))

    @contextlib.contextmanager
    def _following(self, sandbox_id: str) -> Iterator[asyncio.Future[_Outcome]]:
        """Registered before the lease is tried, so no notice slips between the two."""
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        followers = self._followers.setdefault(sandbox_id, set())
        followers.add(future)
        try:
            yield future
        finally:
            followers.discard(future)
            if not followers and self._followers.get(sandbox_id) is followers:
                del self._followers[sandbox_id]
