"""Ports that stayed closed through a whole wake, remembered so the next wake does not wait
for them as long: no I/O, fed the machine's events like `timing.WakeTimes`.

After a resume the proxy probes the port a held request wants for up to
`wake.readiness_budget` (30 s by default), since a sandbox restored from a snapshot may need
that long to listen again. A port that refused for all of that time will most likely refuse
again after the next wake (nothing inside listens on it), and 30 s per wake for the same
answer helps nobody. So such a port is remembered, per sandbox, until it accepts a
connection or the sandbox goes away, and later wakes probe it for `wake.closed_port_budget`
only; its requests get 502 "port is not open" with Retry-After either way. A thawed
sandbox's listening port accepts within milliseconds, so a remembered port that now listens
still gets through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from wakeproxy.wake.events import (
    BackendReported,
    Event,
    PortReady,
    ReadinessExhausted,
    SandboxKilled,
)

MAX_REMEMBERED: Final = 10_000
"""Most (sandbox, port) pairs kept; the oldest is forgotten first (it only costs one full
readiness budget again)."""


class ClosedPorts:
    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._closed: OrderedDict[tuple[str, int], None] = OrderedDict()

    def closed(self, sandbox_id: str, port: int) -> bool:
        """True when `port` stayed closed through the last wake that probed it."""
        return (sandbox_id, port) in self._closed

    def observe(self, sandbox_id: str, event: Event) -> None:
        match event:
            case ReadinessExhausted(port=port):
                self._closed[(sandbox_id, port)] = None
                self._closed.move_to_end((sandbox_id, port))
                if len(self._closed) > self._limit:
                    self._closed.popitem(last=False)
            case PortReady(port=port):
                self._closed.pop((sandbox_id, port), None)
            case BackendReported(info=None) | SandboxKilled():
                for key in [key for key in self._closed if key[0] == sandbox_id]:
                    del self._closed[key]
