"""The knobs of the hold-and-wake engine, shared by the pure machine and the coordinator."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from wakeproxy.wake.rules import NoWakeRule


@dataclass(frozen=True, slots=True)
class WakeSettings:
    """How long requests are held, how many, and how the engine polls. Times in seconds."""

    hold_timeout: float = 60.0
    """A held API request gets 503 + Retry-After (`WakeTimeout`) after this long."""
    navigation_hold: float = 2.0
    """A held browser navigation gets the waiting page (`StillWaking`) after this long."""
    readiness_budget: float = 30.0
    """After a wake, how long the requested port may refuse connects before 502."""
    closed_port_budget: float = 1.0
    """The same, for a port that refused through the whole `readiness_budget` after an
    earlier wake of the same sandbox (`wake.closedports`)."""
    readiness_initial_delay: float = 0.002
    """First pause between readiness connects; doubles up to `readiness_max_delay`."""
    readiness_max_delay: float = 0.1
    max_held_per_sandbox: int = 1000
    """Held requests per sandbox; the excess gets 503 (`Overloaded`)."""
    max_held_total: int = 10000
    """Requests held for wakes over all sandboxes of this process (not those waiting only
    for a lookup)."""
    negative_ttl: float = 2.0
    """How long an unknown or killed sandbox id is answered from memory."""
    state_ttl: float = 5.0
    """How long a backend answer is trusted before it is refreshed."""
    transition_budget: float = 30.0
    """How long to wait for a pause (or a resume started elsewhere) to finish; then 503."""
    poll_initial_delay: float = 0.005
    """First pause between state polls while a transition runs; doubles up to the max."""
    poll_max_delay: float = 0.25
    activity_interval: float = 1.0
    """Seconds between activity flushes to `Backend.touch` (and sweeps of idle entries)."""
    activity_batch: int = 1000
    """Most sandboxes in one `Backend.touch` call."""
    forget_after: float = 60.0
    """An unused running sandbox's entry is dropped this long after its state went stale."""
    no_wake: tuple[NoWakeRule, ...] = field(default=())
    """Requests that never wake a paused sandbox (503 instead); `[[wake.no_wake]]` tables."""

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            if isinstance(value, int | float) and not value > 0:
                raise ValueError(f"wake.{setting.name} must be positive, got {value!r}")
