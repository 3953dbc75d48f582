"""The lifecycle rules of one sandbox: states, timeouts and what happens at the end.

Pure: every function takes the current `Life` and `now` (epoch seconds) and returns the
next `Life`, or raises; nothing here sleeps, reads a clock or touches a process. The
manager does the I/O around these decisions.

States and the events that move between them (`TRANSITIONS` is the whole table):

    running ──pause_start──▶ pausing ──pause_done──▶ paused
       ▲                        │                     │
       └──────pause_failed──────┘               resume_start
       ▲                                              ▼
       └───────────resume_done───────────────── resuming ──resume_failed──▶ paused

    any of them ──kill──▶ killed (final: no event leaves it)

Every transition bumps `version`. Timeouts follow E2B:

- create: `end_at = now + timeout`; at `end_at` a running sandbox is paused
  (`on_timeout="pause"`) or killed (`"kill"`). `auto_resume` needs `on_timeout="pause"`.
- a resume (by traffic or by `connect`) starts a fresh window: `end_at = now + timeout`,
  where `timeout` is the create-time one for traffic (at least the platform's
  `auto_resume_min_timeout`) and the requested one for `connect`.
  So pause → auto-resume → timeout → pause repeats for as long as traffic comes back.
- `connect(timeout)` on a running sandbox only extends: `end_at = max(end_at, now + timeout)`.
- `set_timeout(timeout)` may shorten or extend: `end_at = now + timeout`.
- optional, beyond E2B: with `activity_extends`, activity at `at` keeps the sandbox up
  until at least `at + timeout` (idle-timeout semantics).

A paused sandbox has no deadline: its `end_at` keeps the value it had when it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Literal

from wakeproxy.backends.base import SandboxState
from wakeproxy.errors import WakeproxyError

OnTimeout = Literal["pause", "kill"]

# E2B's default sandbox lifetime when a create or connect request names none.
DEFAULT_TIMEOUT: Final = 300.0


class LifecycleError(WakeproxyError):
    """A lifecycle rule refused a request."""


class InvalidLifecycle(LifecycleError, ValueError):
    """The requested lifecycle or timeout is malformed (an API answers 400)."""


class IllegalTransition(LifecycleError):
    """The sandbox's state does not allow this (an API answers 409)."""

    def __init__(self, state: SandboxState, what: str) -> None:
        self.state = state
        super().__init__(f"cannot {what}: the sandbox is {state.value}")


class Event(StrEnum):
    PAUSE_START = "pause_start"
    PAUSE_DONE = "pause_done"
    PAUSE_FAILED = "pause_failed"
    RESUME_START = "resume_start"
    RESUME_DONE = "resume_done"
    RESUME_FAILED = "resume_failed"
    KILL = "kill"


_S = SandboxState
TRANSITIONS: Final[dict[tuple[SandboxState, Event], SandboxState]] = {
    (_S.RUNNING, Event.PAUSE_START): _S.PAUSING,
    (_S.PAUSING, Event.PAUSE_DONE): _S.PAUSED,
    (_S.PAUSING, Event.PAUSE_FAILED): _S.RUNNING,
    (_S.PAUSED, Event.RESUME_START): _S.RESUMING,
    (_S.RESUMING, Event.RESUME_DONE): _S.RUNNING,
    (_S.RESUMING, Event.RESUME_FAILED): _S.PAUSED,
    **{(state, Event.KILL): _S.KILLED for state in SandboxState if state is not _S.KILLED},
}


@dataclass(frozen=True, slots=True)
class Policy:
    """What a sandbox asked for at creation; it never changes afterwards."""

    timeout: float
    on_timeout: OnTimeout = "kill"
    auto_resume: bool = False
    activity_extends: bool = False

    def __post_init__(self) -> None:
        check_timeout(self.timeout)
        if self.on_timeout not in ("pause", "kill"):
            raise InvalidLifecycle(f"onTimeout must be 'pause' or 'kill', not {self.on_timeout!r}")
        if self.auto_resume and self.on_timeout != "pause":
            raise InvalidLifecycle(
                "autoResume can only be enabled when the sandbox pauses on timeout "
                "(autoPause / on_timeout='pause')"
            )


@dataclass(frozen=True, slots=True)
class Life:
    state: SandboxState
    version: int
    end_at: float
    policy: Policy


def check_timeout(timeout: float, limit: float | None = None) -> float:
    """`timeout` if it is a usable number of seconds, else `InvalidLifecycle`."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidLifecycle(f"timeout must be a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidLifecycle(f"timeout must be zero or more seconds, not {timeout!r}")
    if limit is not None and timeout > limit:
        raise InvalidLifecycle(f"timeout must be at most {limit:g} seconds, not {timeout:g}")
    return float(timeout)


def start(policy: Policy, now: float) -> Life:
    """A freshly created sandbox: running until `now + timeout`."""
    return Life(SandboxState.RUNNING, 1, now + policy.timeout, policy)


def transition(life: Life, event: Event, *, now: float, timeout: float | None = None) -> Life:
    """Apply `event`; `timeout` (seconds) sets the new window on `RESUME_DONE` and
    defaults to the create-time timeout there (an auto-resume)."""
    target = TRANSITIONS.get((life.state, event))
    if target is None:
        raise IllegalTransition(life.state, event.value.replace("_", " "))
    end_at = life.end_at
    if event is Event.RESUME_DONE:
        window = life.policy.timeout if timeout is None else check_timeout(timeout)
        end_at = now + window
    return Life(target, life.version + 1, end_at, life.policy)


def auto_resume_window(policy: Policy, floor: float) -> float:
    """The window a resume by traffic starts: the create-time timeout, or `floor` when
    longer (E2B's auto-resume runs a sandbox for max(5 min, its timeout); `floor` 300)."""
    return max(policy.timeout, floor)


def extend(life: Life, now: float, timeout: float) -> Life:
    """`connect(timeout)` (or a refresh) on a running sandbox: never shortens."""
    _require_running(life, "extend the timeout")
    return replace(life, end_at=max(life.end_at, now + check_timeout(timeout)))


def set_timeout(life: Life, now: float, timeout: float) -> Life:
    """`set_timeout(timeout)`: the sandbox ends `timeout` seconds from now, sooner or later."""
    _require_running(life, "set the timeout")
    return replace(life, end_at=now + check_timeout(timeout))


def touch(life: Life, at: float) -> Life:
    """Activity seen at `at`; extends `end_at` only when the policy asks for it."""
    if life.state is not SandboxState.RUNNING or not life.policy.activity_extends:
        return life
    end_at = max(life.end_at, at + life.policy.timeout)
    return life if end_at == life.end_at else replace(life, end_at=end_at)


def due(life: Life, now: float) -> OnTimeout | None:
    """What to do now: `"pause"` or `"kill"` once a running sandbox's time is up."""
    if life.state is SandboxState.RUNNING and now >= life.end_at:
        return life.policy.on_timeout
    return None


def deadline(life: Life) -> float | None:
    """When `due` will next say something, or None while nothing is pending."""
    return life.end_at if life.state is SandboxState.RUNNING else None


def _require_running(life: Life, what: str) -> None:
    if life.state is not SandboxState.RUNNING:
        raise IllegalTransition(life.state, what)
