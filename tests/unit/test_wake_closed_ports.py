"""`ClosedPorts`: which ports stayed closed through a wake, fed the machine's events."""

from __future__ import annotations

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.wake.closedports import ClosedPorts
from wakeproxy.wake.events import (
    BackendReported,
    PortReady,
    ReadinessExhausted,
    SandboxKilled,
)


def test_a_port_that_exhausted_its_budget_is_remembered_until_it_accepts() -> None:
    ports = ClosedPorts()
    ports.observe("a", ReadinessExhausted(3000))
    assert ports.closed("a", 3000)
    assert not ports.closed("a", 8080)
    assert not ports.closed("b", 3000)
    ports.observe("a", BackendReported(SandboxInfo("a", SandboxState.RUNNING)))
    assert ports.closed("a", 3000)  # news of a running sandbox says nothing about the port
    ports.observe("a", PortReady(3000))
    assert not ports.closed("a", 3000)


def test_a_killed_or_unknown_sandbox_forgets_its_ports() -> None:
    ports = ClosedPorts()
    for sandbox_id in ("a", "b"):
        ports.observe(sandbox_id, ReadinessExhausted(3000))
        ports.observe(sandbox_id, ReadinessExhausted(8080))
    ports.observe("a", SandboxKilled())
    ports.observe("b", BackendReported(None))
    assert not any(ports.closed(s, p) for s in "ab" for p in (3000, 8080))


def test_memory_is_bounded_and_the_oldest_goes_first() -> None:
    ports = ClosedPorts(limit=2)
    for port in (1, 2, 3):
        ports.observe("a", ReadinessExhausted(port))
    assert [ports.closed("a", port) for port in (1, 2, 3)] == [False, True, True]
