"""The right to wake a sandbox: pure checks shared by the gateway and the wake machine.

A request may wake a paused sandbox only with what the sandbox itself would demand of it,
so that a stranger who knows an id cannot keep it awake. That is decided per port:

- on the agent's (envd's) port, a `secure` sandbox's envd access token, which its SDK sends
  as `X-Access-Token` on every call, `/health` included (or a signed file URL whose
  signature that token made); a sandbox that is not secure demands nothing there;
- on every other port, the traffic access token of a sandbox created with
  `allowPublicTraffic=false`, in the `e2b-traffic-access-token` header.

The wake machine checks this before it starts a resume, so a request without the right
credential can never wake a sandbox.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from wakeproxy.backends.base import SandboxInfo

TOKEN_HEADER = "e2b-traffic-access-token"
ACCESS_HEADER = "X-Access-Token"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request shows to prove its right to wake a sandbox."""

    traffic: str | None = None
    """The `e2b-traffic-access-token` header."""
    access: str | None = None
    """The `X-Access-Token` header (the envd access token)."""
    signed: bool = False
    """A signed file URL whose signature a sandbox's envd access token made."""


NO_CREDENTIALS = Credentials()


def _same(given: str | None, expected: str) -> bool:
    """Compared in constant time, so the comparison leaks nothing of the token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def token_admits(info: SandboxInfo, port: int, credentials: Credentials) -> bool:
    """Whether `credentials` prove the right to use (and so wake) `port` of the sandbox."""
    if port == info.agent_port:
        expected = info.agent_token
        return expected is None or credentials.signed or _same(credentials.access, expected)
    expected = info.traffic_token
    return expected is None or _same(credentials.traffic, expected)


def token_refusal(info: SandboxInfo, port: int) -> str:
    if port == info.agent_port:
        return (
            f"Sandbox {info.sandbox_id} is secure: send its envd access token in the "
            f"{ACCESS_HEADER} header"
        )
    return (
        f"Sandbox {info.sandbox_id} does not allow public traffic: send its traffic access "
        f"token in the {TOKEN_HEADER} header"
    )
