"""Activity: which sandboxes were used, recorded in O(1) and handed to the backend in batches.

Every forwarded request and WebSocket message is activity. Recording is one dict store on
the hot path; a flush (once per `activity_interval`, run by the coordinator) takes what
accumulated and calls `Backend.touch` with at most `activity_batch` sandboxes per call.
Because only the latest time per sandbox is kept, each sandbox is reported at most once
per flush however busy it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from itertools import islice

log = logging.getLogger(__name__)

Touch = Callable[[Mapping[str, float]], Awaitable[None]]


class ActivityBuffer:
    """Last-activity times waiting to be flushed (sandbox id → epoch seconds)."""

    def __init__(self, touch: Touch, wall_clock: Callable[[], float], batch_size: int) -> None:
        self._touch = touch
        self._wall_clock = wall_clock
        self._batch_size = batch_size
        self._pending: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, sandbox_id: str) -> None:
        self._pending[sandbox_id] = self._wall_clock()

    async def flush(self) -> int:
        """Hand everything pending to `touch`; return how many sandboxes were reported.

        A batch that fails is kept for the next flush (unless newer activity replaced it),
        so a backend hiccup does not make a busy sandbox look idle.
        """
        batch, self._pending = self._pending, {}
        sent = 0
        items = iter(batch.items())
        while chunk := dict(islice(items, self._batch_size)):
            try:
                await self._touch(chunk)
            except BaseException as exc:
                self._requeue(chunk)
                self._requeue(dict(items))
                if not isinstance(exc, Exception):  # cancelled: keep it for the final flush
                    raise
                log.warning("reporting activity of %d sandboxes failed: %s", len(chunk), exc)
                break
            sent += len(chunk)
        return sent

    def _requeue(self, activity: Mapping[str, float]) -> None:
        for sandbox_id, at in activity.items():
            self._pending.setdefault(sandbox_id, at)
