"""The in-process L1 cache of the hot path: running sandboxes and where their ports are.

A request for a running sandbox is answered from here with two dict lookups and one clock
read. Entries appear when a machine decides `Cache` and vanish on `Uncache`; the
addresses of ports (from `Backend.upstream`) are kept per sandbox version, because a
resume may move a sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wakeproxy.backends.base import SandboxInfo, Upstream
from wakeproxy.wake.timing import FinishedWake


@dataclass(frozen=True, slots=True)
class Acquired:
    """Where to forward a request, and what it took to get there."""

    upstream: Upstream
    info: SandboxInfo
    held_for: float = 0.0  # seconds the request was held; 0 when it was not
    triggered_wake: bool = False  # this request's arrival started the wake
    wake: FinishedWake | None = None  # that wake, for the request's trace


@dataclass(slots=True)
class _Running:
    info: SandboxInfo
    fresh_until: float
    ports: dict[int, Acquired]  # built once per port, returned as is on every hit


class RouteCache:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self._upstreams: dict[str, dict[int, tuple[int, Upstream]]] = {}  # id → port → version

    def get(self, sandbox_id: str, port: int) -> Acquired | None:
        """The answer for `port` of a running sandbox while it is fresh, else None."""
        running = self._running.get(sandbox_id)
        if running is None or self._clock() >= running.fresh_until:
            return None
        return running.ports.get(port)

    def set_running(self, sandbox_id: str, info: SandboxInfo, fresh_until: float) -> None:
        running = self._running.get(sandbox_id)
        if running is None or running.info.version != info.version:
            known = self._upstreams.get(sandbox_id, {}).items()
            ports = {p: Acquired(up, info) for p, (v, up) in known if v == info.version}
            self._running[sandbox_id] = _Running(info, fresh_until, ports)
            return
        if running.info != info:
            running.ports = {port: Acquired(a.upstream, info) for port, a in running.ports.items()}
        running.info, running.fresh_until = info, fresh_until

    def set_not_running(self, sandbox_id: str) -> None:
        self._running.pop(sandbox_id, None)

    def upstream(self, sandbox_id: str, info: SandboxInfo, port: int) -> Upstream | None:
        known = self._upstreams.get(sandbox_id, {}).get(port)
        return known[1] if known is not None and known[0] == info.version else None

    def add_upstream(
        self, sandbox_id: str, info: SandboxInfo, port: int, upstream: Upstream
    ) -> None:
        self._upstreams.setdefault(sandbox_id, {})[port] = (info.version, upstream)
        running = self._running.get(sandbox_id)
        if running is not None and running.info.version == info.version:
            running.ports[port] = Acquired(upstream, running.info)

    def forget(self, sandbox_id: str) -> None:
        self._running.pop(sandbox_id, None)
        self._upstreams.pop(sandbox_id, None)

    def clear(self) -> None:
        self._running.clear()
        self._upstreams.clear()
