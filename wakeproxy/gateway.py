"""Between a request head and an upstream: admission, resolution and waking.

The HTTP front end asks one question — where does this request go? — and gets an
`Acquired` (upstream + sandbox state) or a `ProxyError`. Nothing here knows which HTTP
library serves the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from wakeproxy.backends.base import SandboxInfo
from wakeproxy.errors import Forbidden
from wakeproxy.routing import Target
from wakeproxy.tokens import TOKEN_HEADER, token_admits, token_refusal
from wakeproxy.wake import Acquired, NoWakeRule, WakeCoordinator, first_match


def check_traffic_token(info: SandboxInfo, port: int, headers: Mapping[str, str]) -> None:
    if not token_admits(info, port, headers.get(TOKEN_HEADER)):
        raise Forbidden(token_refusal(info.sandbox_id), sandbox_id=info.sandbox_id)


class InFlight:
    """HTTP requests being forwarded, per sandbox, and the tasks forwarding them.

    The platform asks `busy` before a timeout pauses a sandbox, so it is not frozen in the
    middle of an answer; shutdown cuts the tasks that outlive the grace period.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.tasks: set[asyncio.Task[object]] = set()

    def begin(self, sandbox_id: str) -> None:
        self._counts[sandbox_id] = self._counts.get(sandbox_id, 0) + 1
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)

    def end(self, sandbox_id: str) -> None:
        left = self._counts[sandbox_id] - 1
        if left:
            self._counts[sandbox_id] = left
        else:
            del self._counts[sandbox_id]
        task = asyncio.current_task()
        if task is not None:
            self.tasks.discard(task)

    def busy(self, sandbox_id: str) -> bool:
        return sandbox_id in self._counts


class Gateway:
    def __init__(self, coordinator: WakeCoordinator, no_wake: Sequence[NoWakeRule] = ()) -> None:
        self.coordinator = coordinator
        self.in_flight = InFlight()
        self._no_wake = tuple(no_wake)

    async def resolve(
        self,
        target: Target,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        navigation: bool = False,
    ) -> Acquired:
        """Where the request goes, holding it while its sandbox wakes."""
        # Requests matching a no-wake rule are neither wake triggers nor activity, so a
        # scraper cannot keep a sandbox awake; with no rules this costs one truth test.
        quiet = bool(self._no_wake) and first_match(self._no_wake, method, path, headers)
        coordinator = self.coordinator
        acquired = coordinator.cached(target.sandbox_id, target.port)
        if acquired is None:
            acquired = await coordinator.acquire(
                target.sandbox_id,
                target.port,
                navigation=navigation,
                wake_allowed=not quiet,
                token=headers.get(TOKEN_HEADER),
            )
        check_traffic_token(acquired.info, target.port, headers)
        if not quiet:
            coordinator.record_activity(target.sandbox_id)
        return acquired

    async def ensure_running(self, target: Target) -> None:
        """Before relaying a WebSocket message: wake the sandbox if it was paused meanwhile."""
        if self.coordinator.cached(target.sandbox_id, target.port) is None:
            await self.coordinator.acquire(target.sandbox_id, target.port)
        self.coordinator.record_activity(target.sandbox_id)
