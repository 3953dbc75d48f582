"""Between a request head and an upstream: admission, resolution and waking.

The HTTP front end asks one question — where does this request go? — and gets an
`Acquired` (upstream + sandbox state) or a `ProxyError`. Nothing here knows which HTTP
library serves the client.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from wakeproxy.backends.base import SandboxInfo
from wakeproxy.errors import Forbidden
from wakeproxy.routing import Target
from wakeproxy.wake import Acquired, NoWakeRule, WakeCoordinator, first_match

TOKEN_HEADER = "e2b-traffic-access-token"


def check_traffic_token(info: SandboxInfo, port: int, headers: Mapping[str, str]) -> None:
    """Sandboxes created with `allowPublicTraffic=false` demand their token on every
    port but the agent's; compared in constant time."""
    if info.traffic_token is None or port == info.agent_port:
        return
    given = headers.get(TOKEN_HEADER)
    if given is None or not hmac.compare_digest(given.encode(), info.traffic_token.encode()):
        raise Forbidden(
            f"Sandbox {info.sandbox_id} does not allow public traffic: send its traffic "
            f"access token in the {TOKEN_HEADER} header",
            sandbox_id=info.sandbox_id,
        )


class Gateway:
    def __init__(self, coordinator: WakeCoordinator, no_wake: Sequence[NoWakeRule] = ()) -> None:
        self.coordinator = coordinator
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
                target.sandbox_id, target.port, navigation=navigation, wake_allowed=not quiet
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
