"""The wake state machine, driven by events with explicit times: no loop, no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import pytest

from wakeproxy.backends.base import Lifecycle, SandboxInfo, SandboxState
from wakeproxy.errors import (
    Conflict,
    NotAllowed,
    NotFound,
    Overloaded,
    PortNotOpen,
    Unavailable,
    WakeTimeout,
)
from wakeproxy.wake.events import (
    BackendReported,
    Cache,
    ClientGone,
    Decision,
    Event,
    Failure,
    Forward,
    Hold,
    HoldExpired,
    Invalidated,
    Lookup,
    LookupFailed,
    PortFailed,
    PortReady,
    ProbePort,
    ReadinessExhausted,
    Reject,
    RequestArrived,
    ResumeFailed,
    ResumeSucceeded,
    SandboxKilled,
    ServeWaitingPage,
    StartResume,
    TransitionTimedOut,
    Uncache,
    WaitForTransition,
)
from wakeproxy.wake.machine import NOT_FOUND_MESSAGE, SandboxMachine
from wakeproxy.wake.settings import WakeSettings
from wakeproxy.wake.table import RESTING, TRANSITIONS, Phase

SID = "sbx1"
PORT = 3000
SETTINGS = WakeSettings(
    hold_timeout=60.0,
    navigation_hold=2.0,
    max_held_per_sandbox=3,
    max_held_total=10,
    negative_ttl=2.0,
    state_ttl=5.0,
    forget_after=60.0,
)
S = SandboxState


def info(state: SandboxState, *, auto_resume: bool = True, version: int = 1) -> SandboxInfo:
    return SandboxInfo(SID, state, Lifecycle("pause", auto_resume), version=version)


def arrive(
    rid: int,
    now: float = 0.0,
    *,
    port: int = PORT,
    navigation: bool = False,
    wake_allowed: bool = True,
    total_held: int = 0,
) -> RequestArrived:
    deadline = now + SETTINGS.hold_timeout
    return RequestArrived(rid, port, deadline, navigation, wake_allowed, total_held)


def rejected(decisions: list[Decision]) -> dict[int, Reject]:
    return {d.rid: d for d in decisions if isinstance(d, Reject)}


def forwarded(decisions: list[Decision]) -> dict[int, Forward]:
    return {d.rid: d for d in decisions if isinstance(d, Forward)}


def of_type(decisions: list[Decision], kind: type[Decision]) -> list[Decision]:
    return [d for d in decisions if isinstance(d, kind)]


# -- setting a machine up, through its own events ---------------------------------------------

Setup = Callable[[SandboxMachine], None]


def feed(*events: Event, now: float = 0.0) -> Setup:
    def setup(m: SandboxMachine) -> None:
        for event in events:
            m.handle(event, now)

    return setup


# Each setup reaches its phase through events only; variants differ in what is held.
SETUPS: dict[str, tuple[Phase, Setup]] = {
    "idle": (Phase.IDLE, feed()),
    "looking_up": (Phase.LOOKING_UP, feed(arrive(1))),
    "looking_up, client gone": (Phase.LOOKING_UP, feed(arrive(1), ClientGone(1))),
    "running": (Phase.RUNNING, feed(BackendReported(info(S.RUNNING)))),
    "paused": (Phase.PAUSED, feed(BackendReported(info(S.PAUSED)))),
    "paused, no auto-resume": (
        Phase.PAUSED,
        feed(BackendReported(info(S.PAUSED, auto_resume=False))),
    ),
    "pausing": (Phase.PAUSING, feed(arrive(1), BackendReported(info(S.PAUSING)))),
    "pausing, client gone": (
        Phase.PAUSING,
        feed(arrive(1), BackendReported(info(S.PAUSING)), ClientGone(1)),
    ),
    "waking": (Phase.WAKING, feed(arrive(1), BackendReported(info(S.PAUSED)))),
    "waking, client gone": (
        Phase.WAKING,
        feed(arrive(1), BackendReported(info(S.PAUSED)), ClientGone(1)),
    ),
    "joining": (Phase.JOINING, feed(arrive(1), BackendReported(info(S.RESUMING)))),
    "joining, client gone": (
        Phase.JOINING,
        feed(arrive(1), BackendReported(info(S.RESUMING)), ClientGone(1)),
    ),
    "readying": (
        Phase.READYING,
        feed(arrive(1), BackendReported(info(S.PAUSED)), ResumeSucceeded(info(S.RUNNING, version=2))),
    ),
    "readying, two ports": (
        Phase.READYING,
        feed(
            arrive(1),
            arrive(2, port=8080),
            BackendReported(info(S.PAUSED)),
            ResumeSucceeded(info(S.RUNNING, version=2)),
        ),
    ),
    "gone": (Phase.GONE, feed(arrive(1), BackendReported(None))),
    "gone long ago": (Phase.GONE, feed(arrive(1), BackendReported(None), now=-10.0)),
}

# One or more samples of every event type, with payloads that matter to the machine.
SAMPLES: dict[str, Event] = {
    "request": arrive(9, 1.0),
    "request, no-wake": arrive(9, 1.0, wake_allowed=False),
    "request, too many held": arrive(9, 1.0, total_held=SETTINGS.max_held_total),
    "request, knowledge expired": arrive(9, 100.0),
    "report running": BackendReported(info(S.RUNNING, version=3)),
    "report paused": BackendReported(info(S.PAUSED, version=3)),
    "report paused, no auto-resume": BackendReported(info(S.PAUSED, auto_resume=False, version=3)),
    "report pausing": BackendReported(info(S.PAUSING, version=3)),
    "report pausing, no auto-resume": BackendReported(
        info(S.PAUSING, auto_resume=False, version=3)
    ),
    "report resuming": BackendReported(info(S.RESUMING, version=3)),
    "report killed": BackendReported(info(S.KILLED, version=3)),
    "report unknown": BackendReported(None),
    "report stale": BackendReported(info(S.PAUSED, version=0)),
    "lookup failed": LookupFailed(Failure.TRANSIENT, "backend down"),
    "lookup not found": LookupFailed(Failure.NOT_FOUND, "no such sandbox"),
    "resumed": ResumeSucceeded(info(S.RUNNING, version=3)),
    "resumed, still resuming": ResumeSucceeded(info(S.RESUMING, version=3)),
    "resumed, but paused": ResumeSucceeded(info(S.PAUSED, version=3)),
    "resume failed": ResumeFailed(Failure.TRANSIENT, "backend down"),
    "resume not found": ResumeFailed(Failure.NOT_FOUND, "gone"),
    "port ready": PortReady(PORT),
    "readiness exhausted": ReadinessExhausted(PORT),
    "port failed": PortFailed(PORT, Failure.TRANSIENT, "backend down"),
    "port not found": PortFailed(PORT, Failure.NOT_FOUND, "gone"),
    "transition timed out": TransitionTimedOut(),
    "hold expired": HoldExpired(1),
    "client gone": ClientGone(1),
    "killed": SandboxKilled(),
    "invalidated": Invalidated(),
}


def test_every_phase_and_event_stays_on_the_table() -> None:
    """Walk every setup with every event; every move is allowed and every entry is used."""
    seen: set[tuple[Phase, type[Event], Phase]] = set()
    for setup_name, (phase, setup) in SETUPS.items():
        for sample_name, event in SAMPLES.items():
            m = SandboxMachine(SID, SETTINGS)
            setup(m)
            assert m.phase is phase, setup_name
            held_before = m.held
            left = isinstance(event, ClientGone) and m.holds(event.rid)
            now = 100.0 if sample_name == "request, knowledge expired" else 1.0
            decisions = m.handle(event, now)
            allowed = TRANSITIONS[phase].get(type(event), frozenset({phase}))
            assert m.phase in allowed, (setup_name, sample_name, m.phase)
            assert m.held == 0 or m.phase not in RESTING, (setup_name, sample_name)
            # Every request is accounted for: still held, or answered exactly once.
            answers = [*forwarded(decisions), *rejected(decisions)]
            answers += [d.rid for d in of_type(decisions, ServeWaitingPage)]  # type: ignore[attr-defined]
            arrived = isinstance(event, RequestArrived)
            assert held_before + arrived == m.held + len(answers) + left, (setup_name, sample_name)
            seen.add((phase, type(event), m.phase))
    listed = {
        (phase, event_type, target)
        for phase, row in TRANSITIONS.items()
        for event_type, targets in row.items()
        for target in targets
    }
    assert listed - seen == set(), "table entries no walk reached"
    assert set(SETUPS[name][0] for name in SETUPS) == set(Phase)
