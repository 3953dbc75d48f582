"""The timeouts of the running sandboxes: when each is due, what happens then, and again.

One `DeadlineTimer` task scans whenever a deadline changes. At a sandbox's `end_at` it is
paused or killed as its policy says (`act`), unless requests to it are in flight: then it
is looked at again every `BUSY_RECHECK` seconds until they are answered, but no later
than `BUSY_GRACE` after its deadline (a long stream or never-ending traffic must not
cancel the timeout; what is still in flight is frozen with the sandbox and finishes when
traffic wakes it). A pause that failed, or could not even begin because its record could
not be written, is tried again `RETRY_SECONDS` later. A failure with one sandbox is
logged and never stops the scan of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from wakeproxy.platform.control import events, lifecycle
from wakeproxy.platform.control.records import RecordNotWritten, SandboxRecord
from wakeproxy.platform.control.timer import DeadlineTimer

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
BUSY_RECHECK = 0.05
BUSY_GRACE = 5.0

Act = Callable[[SandboxRecord, lifecycle.OnTimeout], None]
"""Kill, or begin a pause; raises `RecordNotWritten` when a pause cannot begin."""


class Timeouts:
    def __init__(
        self,
        candidates: Callable[[], Iterable[SandboxRecord]],
        act: Act,
        chores: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        """`candidates()`: the sandboxes with no transition in flight; `chores()`: work
        the scan also does (rewriting records), True while some is left."""
        self._candidates = candidates
        self._act = act
        self._chores = chores
        self._clock = clock
        self._busy: Callable[[str], bool] = lambda sandbox_id: False
        self._retry_at: dict[str, float] = {}
        self._announced: dict[str, float] = {}  # the `end_at` whose timeout was logged
        self._timer = DeadlineTimer(self._scan, clock)

    def start(self) -> None:
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()

    def wake(self) -> None:
        """Deadlines changed (or the clock jumped): scan again now."""
        self._timer.wake()

    def set_busy_check(self, busy: Callable[[str], bool]) -> None:
        """`busy(sandbox_id)`: are requests to it in flight? (the proxy knows)."""
        self._busy = busy

    def retry_later(self, sandbox_id: str) -> None:
        """Its pause failed: not again at once, should it be overdue."""
        self._retry_at[sandbox_id] = self._clock() + RETRY_SECONDS

    def forget(self, sandbox_id: str) -> None:
        self._retry_at.pop(sandbox_id, None)
        self._announced.pop(sandbox_id, None)

    def _scan(self) -> float | None:
        """Act on every sandbox whose time is up; the next time to look."""
        # A scan per wake-up is fine at one machine's scale; the timer never polls.
        now = self._clock()
        times = [now + RETRY_SECONDS] if self._chores() else []
        for record in list(self._candidates()):
            try:
                at = self._look_at(record, now)
            except Exception:  # one sandbox's failure must not stop the others' timeouts
                log.exception("the timeout of sandbox %s failed; retried", record.sandbox_id)
                at = self._retry_at[record.sandbox_id] = now + RETRY_SECONDS
            if at is not None:
                times.append(at)
        return min(times, default=None)

    def _look_at(self, record: SandboxRecord, now: float) -> float | None:
        """Act on `record` if its time is up; when to look at it again."""
        retry_at = self._retry_at.get(record.sandbox_id, now)
        action = lifecycle.due(record.life, now) if retry_at <= now else None
        if action is not None and self._still_serving(record, now):
            retry_at = self._retry_at[record.sandbox_id] = now + BUSY_RECHECK
            action = None
        if action is not None:
            return self._expire(record, action, now)
        return retry_at if retry_at > now else lifecycle.deadline(record.life)

    def _still_serving(self, record: SandboxRecord, now: float) -> bool:
        # Freezing a sandbox mid-answer would hold its clients until something woke it.
        deadline = lifecycle.deadline(record.life) or now
        return now - deadline < BUSY_GRACE and self._busy(record.sandbox_id)

    def _expire(
        self, record: SandboxRecord, action: lifecycle.OnTimeout, now: float
    ) -> float | None:
        sandbox_id = record.sandbox_id
        self._retry_at.pop(sandbox_id, None)
        if self._announced.get(sandbox_id) != record.life.end_at:  # once, not per retry
            self._announced[sandbox_id] = record.life.end_at
            late = now - record.life.end_at
            events.logged("timeout", sandbox_id, now - record.started_at, action=action, late=late)
        try:
            self._act(record, action)
        except RecordNotWritten as exc:
            events.logged(
                "failed", sandbox_id, 0.0, level=logging.ERROR, what="pause",
                trigger="timeout", error=str(exc),
            )  # fmt: skip
            at = self._retry_at[sandbox_id] = now + RETRY_SECONDS
            return at
        return None
