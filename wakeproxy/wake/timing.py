"""How long each wake took, and how it ended: read from the machine's phases, no I/O.

A wake starts when this process calls `Backend.resume` and ends when the sandbox's
machine leaves the wake phases: RUNNING once every port a held request wanted accepted
a connection (or gave up), anything else when it failed. It is split where the sandbox
ran again (the machine reached READYING or RUNNING): "resume" before, "ready" after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wakeproxy.wake.events import Event, PortFailed, ReadinessExhausted, TransitionTimedOut
from wakeproxy.wake.table import READYING, RUNNING, WAKE_PHASES, Phase


@dataclass(frozen=True, slots=True)
class FinishedWake:
    seconds: float
    result: str  # "ok", "failed" or "timeout"
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Wake:
    started: float
    running_at: float | None = None
    trouble: str | None = None  # "timeout" or "failed", as soon as an event says so


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
        if wake.running_at is None and (phase is READYING or phase is RUNNING):
            wake.running_at = now
        if phase in WAKE_PHASES:
            return None
        del self._wakes[sandbox_id]
        result = wake.trouble or ("ok" if phase is RUNNING else "failed")
        return _finished(wake, result, now)

    def abandon(self, now: float) -> list[FinishedWake]:
        """Every wake under way, ended as failed (the coordinator is closing)."""
        finished = [_finished(wake, "failed", now) for wake in self._wakes.values()]
        self._wakes.clear()
        return finished


def _finished(wake: _Wake, result: str, now: float) -> FinishedWake:
    if wake.running_at is None:
        return FinishedWake(now - wake.started, result)
    phases = {"resume": wake.running_at - wake.started, "ready": now - wake.running_at}
    return FinishedWake(now - wake.started, result, phases)
