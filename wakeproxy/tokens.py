"""The traffic access token: pure checks shared by the gateway and the wake machine.

Sandboxes created with `allowPublicTraffic=false` demand their token in the
`e2b-traffic-access-token` header on every port but the agent's. The wake machine checks it
before it starts a resume, so a request without the token can never wake a sandbox.
"""

from __future__ import annotations

import hmac

from wakeproxy.backends.base import SandboxInfo

TOKEN_HEADER = "e2b-traffic-access-token"


def token_admits(info: SandboxInfo, port: int, token: str | None) -> bool:
    """Compared in constant time, so the comparison leaks nothing of the token."""
    if info.traffic_token is None or port == info.agent_port:
        return True
    return token is not None and hmac.compare_digest(token.encode(), info.traffic_token.encode())


def token_refusal(sandbox_id: str) -> str:
    return (
        f"Sandbox {sandbox_id} does not allow public traffic: send its traffic access "
        f"token in the {TOKEN_HEADER} header"
    )
