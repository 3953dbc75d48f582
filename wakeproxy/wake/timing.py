"""How long each wake took, and how it ended: read from the machine's phases, no I/O.

A wake starts when this process calls `Backend.resume` and ends when the sandbox's
machine leaves the wake phases: RUNNING once every port a held request wanted accepted
a connection (or gave up), anything else when it failed. It is split where the sandbox
ran again (the machine reached READYING or RUNNING): "resume" before, "ready" after.
A wake that did not end well also says in which of those phases it ended and why (the
first event that said so), for the one log line the coordinator writes about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wakeproxy.backends.base import SandboxState
from wakeproxy.wake.events import (
    BackendReported,
    Event,
    PortFailed,
    ReadinessExhausted,
    ResumeFailed,
    ResumeSucceeded,
    SandboxKilled,
    TransitionTimedOut,
)
from wakeproxy.wake.table import READYING, RUNNING, WAKE_PHASES, Phase


@dataclass(frozen=True, slots=True)
class FinishedWake:
    seconds: float
    result: str  # "ok", "failed" or "timeout"
    phases: dict[str, float] = field(default_factory=dict)
    cause: str = ""  # what went wrong ("" for "ok")
    started: float = 0.0  # on the coordinator's clock

    @property
    def phase(self) -> str:
        """The phase it ended in: "resume" (the sandbox never ran again) or "ready"."""
        return "ready" if self.phases else "resume"


@dataclass(slots=True)
class _Wake:
    started: float
    running_at: float | None = None
    trouble: str | None = None  # "timeout" or "failed", as soon as an event says so
    cause: str | None = None


class WakeTimes:
    """The wakes under way, by sandbox id."""

    def __init__(self) -> None:
        self._wakes: dict[str, _Wake] = {}

    def start(self, sandbox_id: str, now: float) -> bool:
        """A resume was started; False when it belongs to a wake already timed (the
        sandbox was paused again before it ran, and is resumed once more)."""
        if sandbox_id in self._wakes:
            return False
        self._wakes[sandbox_id] = _Wake(now)
        return True

    def observe(
        self, sandbox_id: str, event: Event, phase: Phase, now: float
    ) -> FinishedWake | None:
        """The machine handled `event` and is now in `phase`: the finished wake, if it ended."""
        wake = self._wakes.get(sandbox_id)
        if wake is None:
            return None
        match event:
            case ReadinessExhausted() | TransitionTimedOut():
                wake.trouble = wake.trouble or "timeout"
            case PortFailed():
                wake.trouble = "failed"
        wake.cause = wake.cause or _cause(event)
        if wake.running_at is None and (phase is READYING or phase is RUNNING):
            wake.running_at = now
        if phase in WAKE_PHASES:
            return None
        del self._wakes[sandbox_id]
        result = wake.trouble or ("ok" if phase is RUNNING else "failed")
        cause = "" if result == "ok" else wake.cause or f"the sandbox's state became {phase}"
        return _finished(wake, result, now, cause)

    def abandon(self, now: float) -> list[tuple[str, FinishedWake]]:
        """Every wake under way, ended as failed (the coordinator is closing)."""
        cause = "wakeproxy stopped during the wake"
        finished = [
            (sandbox_id, _finished(wake, "failed", now, cause))
            for sandbox_id, wake in self._wakes.items()
        ]
        self._wakes.clear()
        return finished


def _cause(event: Event) -> str | None:
    """What an event says went wrong with a wake, None when it says nothing bad."""
    match event:
        case ResumeFailed(message=message):
            return f"the resume failed: {message}"
        case ResumeSucceeded(info=info) if info.state not in _RESUMED:
            return f"the resume left the sandbox {info.state}"
        case TransitionTimedOut():
            return "the sandbox was still pausing or resuming after wake.transition_budget"
        case ReadinessExhausted(port=port):
            return f"port {port} accepted no connection within wake.readiness_budget"
        case PortFailed(port=port, message=message):
            return f"port {port} could not be reached: {message}"
        case BackendReported(info=None) | SandboxKilled():
            return "the sandbox was killed or is unknown"
    return None


_RESUMED = frozenset({SandboxState.RUNNING, SandboxState.RESUMING})


def _finished(wake: _Wake, result: str, now: float, cause: str) -> FinishedWake:
    if wake.running_at is None:
        return FinishedWake(now - wake.started, result, cause=cause, started=wake.started)
    phases = {"resume": wake.running_at - wake.started, "ready": now - wake.running_at}
    return FinishedWake(now - wake.started, result, phases, cause, wake.started)
