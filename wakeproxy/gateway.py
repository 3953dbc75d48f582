"""Between a request head and an upstream: admission and resolution.

The HTTP front end asks one question — where does this request go? — and gets an
`Upstream` or a `ProxyError`. Nothing here knows which HTTP library serves the client.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from wakeproxy.backends.base import Backend, SandboxInfo, SandboxState, Upstream
from wakeproxy.errors import Conflict, Forbidden, NotFound
from wakeproxy.routing import Target

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
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def resolve(self, target: Target, headers: Mapping[str, str]) -> Upstream:
        info = await self._backend.get(target.sandbox_id)
        if info is None or info.state is SandboxState.KILLED:
            raise NotFound("The sandbox was not found", sandbox_id=target.sandbox_id)
        if info.state is not SandboxState.RUNNING:
            raise Conflict(
                f"Sandbox {target.sandbox_id} is {info.state}; try again shortly",
                sandbox_id=target.sandbox_id,
            )
        check_traffic_token(info, target.port, headers)
        return await self._backend.upstream(info, target.port)
