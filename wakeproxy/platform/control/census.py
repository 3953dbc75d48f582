"""The embedded platform's sandboxes in Prometheus metrics, on the proxy's registry.

wakeproxy_sandboxes{state}                  sandboxes by state now
wakeproxy_sandbox_transitions_total{to}     state changes, by the state entered
wakeproxy_sandbox_resume_seconds            resuming until running
wakeproxy_sandbox_exits_total{reason}       sandboxes that ended by themselves: exited,
                                            oom or signal
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.metrics import WAKE_BUCKETS
from wakeproxy.platform.contracts import SandboxExit

Clock = Callable[[], float]


class SandboxCensus:
    """The embedded platform's sandboxes, counted from the state changes it publishes.

    Feed it every `SandboxInfo` the platform publishes (`changed`); it keeps each
    sandbox's last state (in memory only, never as a label) to move the per-state gauge,
    count transitions and time resumes (`resuming` until `running`).
    """

    def __init__(self, registry: CollectorRegistry, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._sandboxes = Gauge(
            "wakeproxy_sandboxes",
            "Sandboxes of the embedded platform by state.",
            ["state"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._transitions = Counter(
            "wakeproxy_sandbox_transitions",
            "State changes of the embedded platform's sandboxes, by the state entered.",
            ["to"],
            registry=registry,
        )
        self._resume_seconds = Histogram(
            "wakeproxy_sandbox_resume_seconds",
            "Embedded platform: how long a resume took (resuming until running).",
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        self._exits = Counter(
            "wakeproxy_sandbox_exits",
            "Embedded platform: sandboxes that ended by themselves, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in ("exited", "oom", "signal"):
            self._exits.labels(reason)
        for state in SandboxState:
            if state is not SandboxState.KILLED:
                self._sandboxes.labels(state.value).set(0)
        self._states: dict[str, SandboxState] = {}
        self._resuming_since: dict[str, float] = {}

    def seed(self, infos: Iterable[SandboxInfo]) -> None:
        """Sandboxes that exist before the census starts: counted, not as transitions."""
        for info in infos:
            if info.state is not SandboxState.KILLED and info.sandbox_id not in self._states:
                self._states[info.sandbox_id] = info.state
                self._sandboxes.labels(info.state.value).inc()

    def changed(self, info: SandboxInfo) -> None:
        sandbox_id, state = info.sandbox_id, info.state
        before = self._states.get(sandbox_id)
        if state is before:
            return
        self._transitions.labels(state.value).inc()
        if before is not None:
            self._sandboxes.labels(before.value).dec()
        if state is SandboxState.KILLED:
            self._states.pop(sandbox_id, None)
        else:
            self._states[sandbox_id] = state
            self._sandboxes.labels(state.value).inc()
        started = self._resuming_since.pop(sandbox_id, None)
        if state is SandboxState.RESUMING:
            self._resuming_since[sandbox_id] = self._clock()
        elif started is not None and state is SandboxState.RUNNING:
            self._resume_seconds.observe(self._clock() - started)

    def exited(self, ended: SandboxExit) -> None:
        """A sandbox ended by itself (its kill is published through `changed`)."""
        self._exits.labels(ended.reason).inc()
