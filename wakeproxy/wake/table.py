"""The phases of a sandbox's wake machine and the table of moves between them.

Phases (what this process knows and is doing about one sandbox):

    IDLE        nothing usable is known; the next request looks the sandbox up
    LOOKING_UP  a `Backend.get` is in flight; requests wait for its answer
    RUNNING     forward; the answer is trusted for `state_ttl`, then refreshed in the
                background while requests keep flowing (stale-while-revalidate)
    PAUSED      paused and nobody waiting: auto-resume off, or every request left
    PAUSING     a pause is completing; once it has, this process resumes the sandbox
    WAKING      this process's one `Backend.resume` is in flight; requests join it
    JOINING     a resume started elsewhere is in flight; requests join it, none started
    READYING    the sandbox runs again; held requests wait for their port to accept
    GONE        unknown or killed; answered from memory for `negative_ttl`

The usual paths:

    IDLE ─▶ LOOKING_UP ─┬─ running ─────────────────────────────────────────▶ RUNNING
                        ├─ paused, auto-resume ──────────▶ WAKING ─▶ READYING ─▶ RUNNING
                        ├─ pausing ─▶ PAUSING ─ paused ──▶ WAKING
                        ├─ resuming ─▶ JOINING ─ running ─────────▶ READYING
                        ├─ paused, no auto-resume ─▶ PAUSED (409 while fresh)
                        └─ unknown or killed ─▶ GONE (502 while fresh)

`TRANSITIONS` lists every phase change an event may cause; `SandboxMachine.handle` checks
each change against it, so the table is the truth about the machine, not only its
documentation. Requests are held and work is in flight only in the non-resting phases.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from wakeproxy.wake.events import (
    BackendReported,
    Event,
    Invalidated,
    LookupFailed,
    PortFailed,
    PortReady,
    ReadinessExhausted,
    RequestArrived,
    ResumeFailed,
    ResumeSucceeded,
    SandboxKilled,
    TransitionTimedOut,
)


class Phase(StrEnum):
    IDLE = "idle"
    LOOKING_UP = "looking_up"
    RUNNING = "running"
    PAUSED = "paused"
    PAUSING = "pausing"
    WAKING = "waking"
    JOINING = "joining"
    READYING = "readying"
    GONE = "gone"


IDLE, LOOKING_UP, RUNNING, PAUSED = Phase.IDLE, Phase.LOOKING_UP, Phase.RUNNING, Phase.PAUSED
PAUSING, WAKING, JOINING, READYING, GONE = (
    Phase.PAUSING,
    Phase.WAKING,
    Phase.JOINING,
    Phase.READYING,
    Phase.GONE,
)

RESTING: Final = frozenset({IDLE, RUNNING, PAUSED, GONE})
"""Phases with nothing held and no wake under way."""
WAKE_PHASES: Final = frozenset({PAUSING, WAKING, JOINING, READYING})
"""Phases in which a wake is under way; a request that arrives joins it."""
WATCHED: Final = frozenset({PAUSING, JOINING})
"""Phases in which the coordinator polls the backend (`WaitForTransition`)."""

_TO_REST: Final = frozenset({IDLE, RUNNING, PAUSED, GONE})
_ANSWERED: Final = frozenset({RUNNING, WAKING, PAUSING, JOINING, PAUSED, IDLE, GONE})
_WATCHED_ANSWER: Final = _ANSWERED | {READYING}
_GONE: Final = frozenset({GONE})

# phase → event type → the phases the event may lead to. An event type missing from a
# phase's row leaves the phase unchanged (it may still forward, hold or reject requests).
TRANSITIONS: Final[Mapping[Phase, Mapping[type[Event], frozenset[Phase]]]] = {
    IDLE: {
        RequestArrived: frozenset({LOOKING_UP}),
        BackendReported: _TO_REST,
        SandboxKilled: _GONE,
    },
    LOOKING_UP: {
        BackendReported: _ANSWERED,
        LookupFailed: frozenset({IDLE, GONE}),
        SandboxKilled: _GONE,
    },
    RUNNING: {
        BackendReported: _TO_REST,
        Invalidated: frozenset({IDLE}),
        SandboxKilled: _GONE,
    },
    PAUSED: {
        RequestArrived: frozenset({PAUSED, WAKING, LOOKING_UP}),
        BackendReported: _TO_REST,
        Invalidated: frozenset({IDLE}),
        SandboxKilled: _GONE,
    },
    PAUSING: {
        BackendReported: _WATCHED_ANSWER,
        TransitionTimedOut: frozenset({IDLE}),
        SandboxKilled: _GONE,
    },
    WAKING: {
        BackendReported: frozenset({WAKING, READYING, RUNNING, GONE}),
        ResumeSucceeded: frozenset({READYING, RUNNING, JOINING, IDLE}),
        ResumeFailed: frozenset({IDLE, GONE}),
        SandboxKilled: _GONE,
    },
    JOINING: {
        BackendReported: _WATCHED_ANSWER,
        TransitionTimedOut: frozenset({IDLE}),
        SandboxKilled: _GONE,
    },
    READYING: {
        BackendReported: frozenset({READYING, GONE}),
        PortReady: frozenset({READYING, RUNNING}),
        ReadinessExhausted: frozenset({READYING, RUNNING}),
        PortFailed: frozenset({READYING, RUNNING, GONE}),
        SandboxKilled: _GONE,
    },
    GONE: {
        RequestArrived: frozenset({GONE, LOOKING_UP}),
        BackendReported: _TO_REST,
        Invalidated: frozenset({IDLE}),
        SandboxKilled: _GONE,
    },
}


class TransitionError(RuntimeError):
    """The machine made a move its own table does not allow: a bug, never a client error."""
