"""What `/readyz` reports: each part of the proxy and its state.

States: "ok"; "degraded" (still serving: e.g. the backend is unreachable, so only
sandboxes known to be running are served, or Redis is down and the proxy runs on its
own); "down" (do not send traffic: the proxy is not listening); "disabled" (a part that
is not configured, e.g. Redis). Parts either report their state when it changes
(`report`: the listener, the Redis state store) or are asked at each request (`check`:
the backend).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from wakeproxy.backends.base import Backend
from wakeproxy.errors import ProxyError, Unavailable

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str]]

# The backend is asked about a sandbox no one creates: any answer, "not found"
# included, shows it is reachable. Matches the default sandbox id pattern.
PROBE_SANDBOX_ID: Final = "wakeproxyreadinessprobe"
_BACKEND_TIMEOUT = 2.0


class Readiness:
    """The parts `/readyz` reports, by name. `redis` is "disabled" until a Redis state
    store reports on it."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {"redis": "disabled"}
        self._checks: dict[str, Check] = {}

    def report(self, name: str, state: str) -> None:
        """Set the state of a part that says when it changes."""
        self._states[name] = state

    def check(self, name: str, check: Check) -> None:
        """Ask `check()` for the state of `name` at every `/readyz`."""
        self._checks[name] = check

    async def __call__(self) -> dict[str, str]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._checks[name]() for name in names))
        return {**self._states, **dict(zip(names, results, strict=True))}


def backend_check(backend: Backend, timeout: float = _BACKEND_TIMEOUT) -> Check:
    """A check that says "ok" when the backend answers a lookup in time, else "degraded":
    the proxy still serves the sandboxes it knows to be running, so it stays ready."""

    async def check() -> str:
        try:
            async with asyncio.timeout(timeout):
                await backend.get(PROBE_SANDBOX_ID)
        except (Unavailable, TimeoutError):
            return "degraded"
        except ProxyError:
            return "ok"  # it answered, if only to refuse
        except Exception:
            log.exception("the backend readiness check failed")
            return "degraded"
        return "ok"

    return check
