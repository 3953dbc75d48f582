"""Between a request head and an upstream: admission, resolution and waking.

The relay asks one question — where does this request go? — and gets an
`Acquired` (upstream + sandbox state) or a `ProxyError`. Nothing here knows which HTTP
library serves the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wakeproxy.backends.base import SandboxInfo
from wakeproxy.errors import Forbidden
from wakeproxy.routing import Target
from wakeproxy.tokens import ACCESS_HEADER, TOKEN_HEADER, Credentials, token_admits, token_refusal
from wakeproxy.wake import Acquired, NoWakeRule, WakeCoordinator, first_match


def check_traffic_token(info: SandboxInfo, port: int, headers: Mapping[str, str]) -> None:
    # Most sandboxes demand no token: their requests are not searched for the header.
    if info.traffic_token is None or port == info.agent_port:
        return
    if not token_admits(info, port, Credentials(traffic=headers.get(TOKEN_HEADER))):
        raise Forbidden(token_refusal(info, port), sandbox_id=info.sandbox_id)


class InFlight:
    """HTTP requests being forwarded, per sandbox.

    The platform asks `busy` before a timeout pauses a sandbox, so it is not frozen in the
    middle of an answer.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def begin(self, sandbox_id: str) -> None:
        self._counts[sandbox_id] = self._counts.get(sandbox_id, 0) + 1

    def end(self, sandbox_id: str) -> None:
        left = self._counts[sandbox_id] - 1
        if left:
            self._counts[sandbox_id] = left
        else:
            del self._counts[sandbox_id]

    def busy(self, sandbox_id: str) -> bool:
        return sandbox_id in self._counts

    def count(self, sandbox_id: str) -> int:
        """Requests being forwarded to `sandbox_id` now (a connection awaited included)."""
        return self._counts.get(sandbox_id, 0)


class Gateway:
    def __init__(self, coordinator: WakeCoordinator, no_wake: Sequence[NoWakeRule] = ()) -> None:
        self.coordinator = coordinator
        self.in_flight = InFlight()
        self._no_wake = tuple(no_wake)

    def admit(
        self, target: Target, method: str, path: str, headers: Mapping[str, str]
    ) -> Acquired | None:
        """The hot path, awaiting nothing: where a request for a running sandbox in the
        cache goes, or None when it must take the long way (`resolve`)."""
        acquired = self.coordinator.cached(target.sandbox_id, target.port)
        if acquired is not None:
            self._admitted(acquired, target, method, path, headers)
        return acquired

    async def resolve(
        self,
        target: Target,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        navigation: bool = False,
        signed: bool = False,
    ) -> Acquired:
        """Where the request goes, holding it while its sandbox wakes; `signed`: a signed
        file URL whose signature checked out (its credential on the agent's port)."""
        coordinator = self.coordinator
        acquired = coordinator.cached(target.sandbox_id, target.port)
        if acquired is None:
            acquired = await coordinator.acquire(
                target.sandbox_id,
                target.port,
                navigation=navigation,
                wake_allowed=not self._quiet(method, path, headers),
                token=Credentials(
                    headers.get(TOKEN_HEADER), headers.get(ACCESS_HEADER), signed=signed
                ),
            )
        self._admitted(acquired, target, method, path, headers)
        return acquired

    def _quiet(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        # Requests matching a no-wake rule are neither wake triggers nor activity, so a
        # scraper cannot keep a sandbox awake; with no rules this costs one truth test.
        return bool(self._no_wake) and (
            first_match(self._no_wake, method, path, headers) is not None
        )

    def _admitted(
        self,
        acquired: Acquired,
        target: Target,
        method: str,
        path: str,
        headers: Mapping[str, str],
    ) -> None:
        check_traffic_token(acquired.info, target.port, headers)
        if not self._quiet(method, path, headers):
            self.coordinator.record_activity(target.sandbox_id)

    def forwarding(self, target: Target) -> None:
        """A request to `target` is being forwarded: its sandbox is busy until `forwarded`."""
        self.in_flight.begin(target.sandbox_id)

    def forwarded(self, target: Target) -> None:
        self.in_flight.end(target.sandbox_id)

    def refused(self, target: Target) -> None:
        """The port refused a connection, so nothing was sent: the sandbox may have been
        paused under us; what is known of it is forgotten, and the next `resolve` asks."""
        self.coordinator.invalidate(target.sandbox_id)

    async def serving(self, target: Target) -> None:
        """Return once `target`'s port serves (waking its sandbox): the waiting page's
        long-poll. Raises the `ProxyError` a held request would get."""
        await self.coordinator.acquire(target.sandbox_id, target.port)

    def running_now(self, target: Target) -> bool:
        """Before relaying a WebSocket message: True (and the activity noted) when the
        sandbox is running as far as the cache knows; else `ensure_running` must wake it."""
        if self.coordinator.cached(target.sandbox_id, target.port) is None:
            return False
        self.coordinator.record_activity(target.sandbox_id)
        return True

    async def ensure_running(self, target: Target) -> None:
        """Before relaying a WebSocket message: wake the sandbox if it was paused meanwhile."""
        if self.coordinator.cached(target.sandbox_id, target.port) is None:
            await self.coordinator.acquire(target.sandbox_id, target.port)
        self.coordinator.record_activity(target.sandbox_id)
