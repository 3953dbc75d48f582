"""The wake state machine, driven by events with explicit times: no loop, no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import pytest

from wakeproxy.backends.base import AGENT_PORT, Lifecycle, SandboxInfo, SandboxState
from wakeproxy.errors import (
    Conflict,
    Forbidden,
    LookupTimeout,
    NotAllowed,
    NotFound,
    NotWoken,
    Overloaded,
    PauseInProgress,
    PortNotOpen,
    Unavailable,
    WakeFailed,
    WakeTimeout,
)
from wakeproxy.tokens import Credentials
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
) -> RequestArrived:
    deadline = now + SETTINGS.hold_timeout
    return RequestArrived(rid, port, deadline, navigation, wake_allowed)


def rejected(decisions: list[Decision]) -> dict[int, Reject]:
    return {d.rid: d for d in decisions if isinstance(d, Reject)}


def forwarded(decisions: list[Decision]) -> dict[int, Forward]:
    return {d.rid: d for d in decisions if isinstance(d, Forward)}


def pages(decisions: list[Decision]) -> list[int]:
    return [d.rid for d in decisions if isinstance(d, ServeWaitingPage)]


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
        feed(
            arrive(1), BackendReported(info(S.PAUSED)), ResumeSucceeded(info(S.RUNNING, version=2))
        ),
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
    "request, too many held": arrive(9, 1.0),  # handled with `total_held` at the limit
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
            total = SETTINGS.max_held_total if sample_name == "request, too many held" else 0
            decisions = m.handle(event, now, total)
            allowed = TRANSITIONS[phase].get(type(event), frozenset({phase}))
            assert m.phase in allowed, (setup_name, sample_name, m.phase)
            assert m.held == 0 or m.phase not in RESTING, (setup_name, sample_name)
            # Every request is accounted for: still held, or answered exactly once.
            answers = [*forwarded(decisions), *rejected(decisions)]
            answers += pages(decisions)
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
    assert {SETUPS[name][0] for name in SETUPS} == set(Phase)


# -- running ----------------------------------------------------------------------------------


def running_machine(now: float = 0.0) -> SandboxMachine:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(info(S.RUNNING)), now)
    return m


def test_unknown_sandbox_is_looked_up_once_and_found_running() -> None:
    m = SandboxMachine(SID, SETTINGS)
    assert m.handle(arrive(1), 0.0) == [Hold(1, 60.0), Lookup()]
    assert m.handle(arrive(2, 0.5), 0.5) == [Hold(2, 60.5)]  # joins the lookup in flight
    running = info(S.RUNNING)
    decisions = m.handle(BackendReported(running), 1.0)
    assert decisions == [Forward(1, running), Forward(2, running), Cache(running, 6.0)]
    assert (m.phase, m.held) == (Phase.RUNNING, 0)


def test_running_forwards_without_the_backend_until_stale_then_refreshes_once() -> None:
    m = running_machine()
    assert m.handle(arrive(1, 4.9), 4.9) == [Forward(1, info(S.RUNNING))]
    # Stale: still forwarded at once, and exactly one background refresh starts.
    assert m.handle(arrive(2, 5.0), 5.0) == [Forward(2, info(S.RUNNING)), Lookup()]
    assert m.handle(arrive(3, 5.1), 5.1) == [Forward(3, info(S.RUNNING))]
    assert m.handle(BackendReported(info(S.RUNNING)), 5.2) == [Cache(info(S.RUNNING), 10.2)]
    assert not m.refreshing


def test_a_refresh_that_fails_keeps_a_running_sandbox_served() -> None:
    m = running_machine()
    m.handle(arrive(1, 6.0), 6.0)
    assert m.handle(LookupFailed(Failure.TRANSIENT, "down"), 6.5) == [Cache(info(S.RUNNING), 11.5)]
    assert m.phase is Phase.RUNNING
    assert m.handle(arrive(2, 7.0), 7.0) == [Forward(2, info(S.RUNNING))]


def test_a_refresh_that_finds_it_paused_uncaches_and_the_next_request_wakes_it() -> None:
    m = running_machine()
    m.handle(arrive(1, 6.0), 6.0)
    assert m.handle(BackendReported(info(S.PAUSED, version=2)), 6.1) == [Uncache()]
    assert m.phase is Phase.PAUSED
    assert m.handle(arrive(2, 6.2), 6.2) == [Hold(2, 66.2), StartResume()]


def test_a_refresh_that_finds_it_pausing_forgets_it() -> None:
    m = running_machine()
    assert m.handle(BackendReported(info(S.PAUSING, version=2)), 1.0) == [Uncache()]
    assert m.phase is Phase.IDLE
    assert m.handle(arrive(1, 1.0), 1.0) == [Hold(1, 61.0), Lookup()]


def test_invalidation_forgets_a_running_sandbox() -> None:
    m = running_machine()
    assert m.handle(Invalidated(), 1.0) == [Uncache()]
    assert m.handle(arrive(1, 1.0), 1.0) == [Hold(1, 61.0), Lookup()]


def test_a_stale_report_does_not_undo_a_newer_one() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(info(S.RUNNING, version=5)), 0.0)
    assert m.handle(BackendReported(info(S.PAUSED, version=4)), 1.0) == []
    assert m.phase is Phase.RUNNING


# -- paused -----------------------------------------------------------------------------------


def waking_machine(*rids: int) -> tuple[SandboxMachine, list[Decision]]:
    """Requests `rids` arrive at 0.0 for a paused auto-resume sandbox; the lookup answers."""
    m = SandboxMachine(SID, SETTINGS)
    for rid in rids:
        m.handle(arrive(rid), 0.0)
    return m, m.handle(BackendReported(info(S.PAUSED)), 0.1)


def test_paused_with_auto_resume_starts_exactly_one_resume_that_later_requests_join() -> None:
    m, decisions = waking_machine(1, 2)
    assert decisions == [StartResume()]
    assert m.phase is Phase.WAKING
    assert m.handle(arrive(3, 0.2), 0.2) == [Hold(3, 60.2, joined=True)]
    assert m.handle(BackendReported(info(S.PAUSED)), 0.3) == []  # no second resume
    assert m.held == 3


def test_the_woken_sandbox_is_probed_per_port_and_requests_released_per_port() -> None:
    m, _ = waking_machine(1, 2)
    m.handle(arrive(3, 0.2, port=8080), 0.2)
    woke = info(S.RUNNING, version=2)
    assert m.handle(ResumeSucceeded(woke), 1.0) == [ProbePort(PORT, woke), ProbePort(8080, woke)]
    assert m.phase is Phase.READYING
    assert m.handle(PortReady(PORT), 1.1) == [
        Forward(1, woke, triggered=True, waited=True),
        Forward(2, woke, waited=True),
    ]
    assert m.handle(arrive(4, 1.2), 1.2) == [Forward(4, woke)]  # that port is known to answer
    assert m.handle(arrive(5, 1.2, port=9000), 1.2) == [
        Hold(5, 61.2, joined=True),
        ProbePort(9000, woke),
    ]
    assert m.handle(PortReady(8080), 1.3) == [Forward(3, woke, waited=True)]
    assert m.handle(PortReady(9000), 1.4) == [Forward(5, woke, waited=True), Cache(woke, 6.4)]
    assert (m.phase, m.held) == (Phase.RUNNING, 0)


def test_only_the_request_that_started_the_wake_is_marked_as_its_trigger() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(info(S.PAUSED)), 0.0)
    assert m.handle(arrive(7, 0.5), 0.5) == [Hold(7, 60.5), StartResume()]
    m.handle(arrive(8, 0.6), 0.6)
    m.handle(ResumeSucceeded(info(S.RUNNING, version=2)), 1.0)
    released = forwarded(m.handle(PortReady(PORT), 1.1))
    assert [released[7].triggered, released[8].triggered] == [True, False]


def test_paused_without_auto_resume_is_409_saying_how_to_resume_and_is_remembered() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    decisions = m.handle(BackendReported(info(S.PAUSED, auto_resume=False)), 0.1)
    [reject] = decisions
    assert isinstance(reject, Reject)
    assert reject.error is NotAllowed
    assert reject.error.status == 409
    assert "paused" in reject.message
    assert "Sandbox.connect()" in reject.message
    assert m.phase is Phase.PAUSED
    assert rejected(m.handle(arrive(2, 5.0), 5.0))[2].error is NotAllowed  # no lookup
    assert m.handle(arrive(3, 5.1), 5.1) == [Hold(3, 65.1), Lookup()]  # expired: ask again


# -- pausing and resuming elsewhere -----------------------------------------------------------


def test_a_request_during_pausing_waits_for_the_pause_then_resumes() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    assert m.handle(BackendReported(info(S.PAUSING, version=2)), 0.1) == [WaitForTransition()]
    assert m.handle(arrive(2, 0.2), 0.2) == [Hold(2, 60.2, joined=True)]
    assert m.handle(BackendReported(info(S.PAUSING, version=2)), 0.3) == []
    assert m.handle(BackendReported(info(S.PAUSED, version=3)), 0.4) == [StartResume()]
    woke = info(S.RUNNING, version=4)
    assert m.handle(ResumeSucceeded(woke), 0.5) == [ProbePort(PORT, woke)]
    assert set(forwarded(m.handle(PortReady(PORT), 0.6))) == {1, 2}


def test_pausing_without_auto_resume_is_409() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    decisions = m.handle(BackendReported(info(S.PAUSING, auto_resume=False)), 0.1)
    assert rejected(decisions)[1].error is NotAllowed
    assert "being paused" in rejected(decisions)[1].message
    assert m.phase is Phase.IDLE


def test_a_resume_started_elsewhere_is_joined_and_never_repeated() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    assert m.handle(BackendReported(info(S.RESUMING, version=2)), 0.1) == [WaitForTransition()]
    assert m.handle(arrive(2, 0.2), 0.2) == [Hold(2, 60.2, joined=True)]
    assert m.handle(BackendReported(info(S.RESUMING, version=2)), 0.3) == []
    woke = info(S.RUNNING, version=3)
    assert m.handle(BackendReported(woke), 0.4) == [ProbePort(PORT, woke)]
    assert set(forwarded(m.handle(PortReady(PORT), 0.5))) == {1, 2}


def test_a_foreign_resume_that_ends_paused_is_followed_by_our_own() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    m.handle(BackendReported(info(S.RESUMING, version=2)), 0.1)
    assert m.handle(BackendReported(info(S.PAUSED, version=3)), 0.2) == [StartResume()]


def test_a_transition_that_outlasts_its_budget_is_503_conflict_saying_which() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    m.handle(BackendReported(info(S.PAUSING)), 0.1)
    decisions = m.handle(TransitionTimedOut(), 30.2)
    assert rejected(decisions)[1].error is PauseInProgress
    assert (PauseInProgress.status, PauseInProgress.reason) == (503, "pause_in_progress")
    assert issubclass(PauseInProgress, Conflict)
    assert m.phase is Phase.IDLE


def test_a_resume_that_reports_resuming_is_watched_until_running() -> None:
    m, _ = waking_machine(1)
    assert m.handle(ResumeSucceeded(info(S.RESUMING, version=2)), 1.0) == [WaitForTransition()]
    assert m.phase is Phase.JOINING


# -- failures ---------------------------------------------------------------------------------


def test_a_transient_resume_failure_is_503_for_every_waiter_and_the_next_request_retries() -> None:
    m, _ = waking_machine(1, 2)
    decisions = m.handle(ResumeFailed(Failure.TRANSIENT, "backend timed out"), 1.0)
    assert set(rejected(decisions)) == {1, 2}
    assert {r.error for r in rejected(decisions).values()} == {WakeFailed}
    assert (WakeFailed.status, WakeFailed.reason) == (503, "wake_failed")
    assert "backend timed out" in rejected(decisions)[1].message
    # The request whose arrival started the wake is named as its trigger, the other not.
    assert {r.rid: r.triggered for r in rejected(decisions).values()} == {1: True, 2: False}
    assert all(r.waited for r in rejected(decisions).values())
    assert (m.phase, m.held) == (Phase.IDLE, 0)
    assert m.handle(arrive(3, 1.1), 1.1) == [Hold(3, 61.1), Lookup()]
    assert m.handle(BackendReported(info(S.PAUSED)), 1.2) == [StartResume()]


def test_a_resume_that_finds_no_sandbox_is_502_not_found() -> None:
    m, _ = waking_machine(1)
    [reject] = m.handle(ResumeFailed(Failure.NOT_FOUND, "gone"), 1.0)
    assert isinstance(reject, Reject)
    assert (reject.error, reject.message, reject.error.status) == (NotFound, NOT_FOUND_MESSAGE, 502)
    assert m.phase is Phase.GONE


def test_a_resume_the_backend_refuses_is_409() -> None:
    m, _ = waking_machine(1)
    [reject] = m.handle(ResumeFailed(Failure.NOT_ALLOWED, "auto-resume disabled"), 1.0)
    assert isinstance(reject, Reject)
    assert reject.error is NotAllowed
    assert "Sandbox.connect()" in reject.message


def test_a_resume_that_leaves_it_paused_is_503() -> None:
    m, _ = waking_machine(1)
    assert rejected(m.handle(ResumeSucceeded(info(S.PAUSED, version=2)), 1.0))[1].error is (
        WakeFailed
    )


def test_a_failed_lookup_is_503_for_its_waiters() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    [reject] = m.handle(LookupFailed(Failure.TRANSIENT, "down"), 0.1)
    assert isinstance(reject, Reject)
    assert (reject.error, reject.waited, reject.triggered) == (Unavailable, False, False)
    assert "Could not look up" in reject.message
    assert m.phase is Phase.IDLE


def test_late_results_of_an_abandoned_wake_are_ignored() -> None:
    m, _ = waking_machine(1)
    m.handle(SandboxKilled(), 1.0)
    assert m.handle(ResumeSucceeded(info(S.RUNNING, version=9)), 1.1) == []
    assert m.handle(PortReady(PORT), 1.2) == []
    assert m.handle(TransitionTimedOut(), 1.3) == []
    assert m.phase is Phase.GONE


# -- unknown and killed -----------------------------------------------------------------------


def test_an_unknown_id_is_502_and_negatively_cached_until_the_ttl_expires() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    [reject] = m.handle(BackendReported(None), 0.1)
    assert isinstance(reject, Reject)
    assert reject.error is NotFound
    assert "The sandbox was not found" in reject.message
    assert m.handle(arrive(2, 2.0), 2.0) == [Reject(2, NotFound, NOT_FOUND_MESSAGE)]
    assert m.handle(arrive(3, 2.1), 2.1) == [Hold(3, 62.1), Lookup()]


def test_a_sandbox_killed_while_requests_wait_fails_them_all_with_502() -> None:
    m, _ = waking_machine(1, 2)
    m.handle(arrive(3, 0.2), 0.2)
    decisions = m.handle(SandboxKilled(), 0.5)
    assert set(rejected(decisions)) == {1, 2, 3}
    assert {r.error for r in rejected(decisions).values()} == {NotFound}
    assert (m.phase, m.held) == (Phase.GONE, 0)


def test_a_killed_report_while_readying_fails_the_held_requests() -> None:
    m, _ = waking_machine(1)
    m.handle(ResumeSucceeded(info(S.RUNNING, version=2)), 1.0)
    assert set(rejected(m.handle(BackendReported(info(S.KILLED, version=3)), 1.1))) == {1}


# -- deadlines, clients, limits ---------------------------------------------------------------


def test_the_hold_deadline_is_503_wake_timeout_and_the_wake_goes_on() -> None:
    m, _ = waking_machine(1, 2)
    decisions = m.handle(HoldExpired(1), 60.0)
    text = f"Sandbox {SID} is still waking up"
    assert decisions == [Reject(1, WakeTimeout, text, triggered=True, waited=True)]
    assert WakeTimeout.status == 503
    assert WakeTimeout.retry_after
    assert m.phase is Phase.WAKING
    assert m.held == 1
    assert m.handle(HoldExpired(1), 60.1) == []  # already answered


def test_a_lookup_that_outlasts_the_hold_is_503_lookup_timeout() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    [reject] = m.handle(HoldExpired(1), 60.0)
    assert isinstance(reject, Reject)
    assert (reject.error, reject.waited) == (LookupTimeout, False)
    assert (LookupTimeout.status, LookupTimeout.reason) == (503, "lookup_timeout")


def test_a_navigation_is_held_briefly_then_gets_the_waiting_page() -> None:
    m, _ = waking_machine(1)
    assert m.handle(arrive(2, 0.5, navigation=True), 0.5) == [Hold(2, 2.5, joined=True)]
    [page] = m.handle(HoldExpired(2), 2.5)
    assert isinstance(page, ServeWaitingPage)
    assert page.rid == 2
    assert m.held == 1  # API clients keep waiting


def test_the_port_of_a_waiting_page_is_probed_after_the_resume_and_waited_for() -> None:
    m, _ = waking_machine()
    m.handle(arrive(1, 0.0, navigation=True), 0.0)
    m.handle(HoldExpired(1), 2.0)
    woke = info(S.RUNNING, version=2)
    # Nobody is held, but the page reloads: its port is probed before the sandbox counts
    # as running, and a request meanwhile (the reload) is held until the port accepts.
    assert m.handle(ResumeSucceeded(woke), 3.0) == [ProbePort(PORT, woke)]
    assert m.handle(arrive(2, 3.5), 3.5) == [Hold(2, 63.5, joined=True)]
    assert m.handle(PortReady(PORT), 4.0) == [Forward(2, woke, waited=True), Cache(woke, 9.0)]
    assert m.phase is Phase.RUNNING


def test_a_navigation_is_never_held_past_its_hold_deadline() -> None:
    m, _ = waking_machine(1)
    short = RequestArrived(2, PORT, deadline=1.0, navigation=True)
    assert m.handle(short, 0.5) == [Hold(2, 1.0, joined=True)]


def test_a_client_that_leaves_is_dropped_and_the_wake_goes_on() -> None:
    m, _ = waking_machine(1, 2)
    assert m.handle(ClientGone(1), 0.5) == []
    assert m.held == 1
    woke = info(S.RUNNING, version=2)
    m.handle(ResumeSucceeded(woke), 1.0)
    assert m.handle(PortReady(PORT), 1.1) == [Forward(2, woke, waited=True), Cache(woke, 6.1)]


def test_a_wake_everyone_left_still_completes_without_probing() -> None:
    m, _ = waking_machine(1)
    m.handle(ClientGone(1), 0.5)
    woke = info(S.RUNNING, version=2)
    assert m.handle(ResumeSucceeded(woke), 1.0) == [Cache(woke, 6.0)]
    assert m.phase is Phase.RUNNING


def test_held_requests_are_limited_per_sandbox() -> None:
    m, _ = waking_machine(1, 2, 3)
    [reject] = m.handle(arrive(4, 0.5), 0.5)
    assert isinstance(reject, Reject)
    assert reject.error is Overloaded
    assert Overloaded.status == 503
    assert Overloaded.retry_after
    assert m.held == 3


def test_held_requests_are_limited_in_total() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(info(S.PAUSED)), 0.0)
    decisions = m.handle(arrive(1), 0.0, SETTINGS.max_held_total)
    assert rejected(decisions)[1].error is Overloaded
    assert Overloaded.reason == "hold_queue_full"
    assert m.phase is Phase.PAUSED  # an overflow starts no wake


def test_a_request_waiting_for_a_lookup_is_not_held_for_a_wake() -> None:
    """Unknown ids and first requests after a restart wait for a lookup, not a wake: the
    total limit does not apply to them and they are not counted as held for a wake."""
    m = SandboxMachine(SID, SETTINGS)
    decisions = m.handle(arrive(1), 0.0, SETTINGS.max_held_total)
    assert decisions == [Hold(1, 60.0), Lookup()]
    assert (m.held, m.held_for_wake) == (1, 0)
    [reject] = m.handle(BackendReported(None), 0.1)
    assert isinstance(reject, Reject)
    assert (reject.error, reject.waited) == (NotFound, False)
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    assert m.handle(BackendReported(info(S.RUNNING)), 0.1)[0] == Forward(1, info(S.RUNNING))


def test_requests_held_for_a_lookup_count_once_it_turns_into_a_wake() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1), 0.0)
    m.handle(arrive(2), 0.0)
    assert m.held_for_wake == 0
    m.handle(BackendReported(info(S.PAUSED)), 0.1)
    assert (m.phase, m.held_for_wake) == (Phase.WAKING, 2)


def test_a_lookup_that_turns_into_a_wake_holds_only_what_the_total_limit_leaves_room_for() -> None:
    m = SandboxMachine(SID, SETTINGS)
    for rid in (1, 2, 3):
        m.handle(arrive(rid), 0.0)
    decisions = m.handle(BackendReported(info(S.PAUSED)), 0.1, SETTINGS.max_held_total - 2)
    assert {rid: r.error for rid, r in rejected(decisions).items()} == {3: Overloaded}
    assert StartResume() in decisions
    assert (m.phase, m.held_for_wake) == (Phase.WAKING, 2)


# -- no-wake rules ----------------------------------------------------------------------------


def test_a_no_wake_request_to_a_paused_sandbox_is_503_and_does_not_wake_it() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(info(S.PAUSED)), 0.0)
    [reject] = m.handle(arrive(1, 0.5, wake_allowed=False), 0.5)
    assert isinstance(reject, Reject)
    assert reject.error.status == 503
    assert "does not wake" in reject.message
    assert m.phase is Phase.PAUSED


def test_a_no_wake_request_waits_for_a_lookup_but_not_for_a_wake() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1, wake_allowed=False), 0.0)
    m.handle(arrive(2), 0.0)
    decisions = m.handle(BackendReported(info(S.PAUSED)), 0.1)
    assert set(rejected(decisions)) == {1}
    assert StartResume() in decisions  # request 2 wakes it
    [reject] = m.handle(arrive(3, 0.2, wake_allowed=False), 0.2)
    assert isinstance(reject, Reject)
    assert reject.error is NotWoken
    assert (NotWoken.status, NotWoken.reason, NotWoken.retry_after) == (503, "no_wake_rule", None)


def test_a_no_wake_request_to_a_running_sandbox_is_forwarded() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(arrive(1, wake_allowed=False), 0.0)
    assert set(forwarded(m.handle(BackendReported(info(S.RUNNING)), 0.1))) == {1}


# -- readiness --------------------------------------------------------------------------------


def test_a_port_that_never_opens_is_502_port_is_not_open() -> None:
    m, _ = waking_machine(1)
    m.handle(arrive(2, 0.2, port=8080), 0.2)
    m.handle(ResumeSucceeded(info(S.RUNNING, version=2)), 1.0)
    [reject] = m.handle(ReadinessExhausted(PORT), 31.0)
    assert isinstance(reject, Reject)
    assert reject.rid == 1
    assert reject.error is PortNotOpen
    assert reject.error.status == 502
    assert "port is not open" in reject.message
    assert m.phase is Phase.READYING  # port 8080 is still being probed
    assert m.handle(PortReady(8080), 31.1)[0] == Forward(2, info(S.RUNNING, version=2), waited=True)


def test_a_port_whose_address_cannot_be_found_fails_its_requests() -> None:
    m, _ = waking_machine(1)
    m.handle(ResumeSucceeded(info(S.RUNNING, version=2)), 1.0)
    decisions = m.handle(PortFailed(PORT, Failure.TRANSIENT, "backend down"), 1.1)
    assert rejected(decisions)[1].error is WakeFailed
    assert m.phase is Phase.RUNNING


# -- bookkeeping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "now", "disposable"),
    [
        ("idle", 0.0, True),
        ("looking_up", 100.0, False),
        ("running", 4.0, False),
        ("running", 5.0 + SETTINGS.forget_after, True),
        ("paused", 4.0, False),
        ("paused", 5.0, True),
        ("gone", 1.0, False),
        ("gone", 2.0, True),
        ("waking, client gone", 100.0, False),
    ],
)
def test_disposable(setup: str, now: float, disposable: bool) -> None:
    m = SandboxMachine(SID, SETTINGS)
    SETUPS[setup][1](m)
    assert m.disposable(now) is disposable


def test_settled_only_while_nothing_is_under_way() -> None:
    ids = count(1)
    m = SandboxMachine(SID, SETTINGS)
    assert m.settled
    m.handle(arrive(next(ids)), 0.0)
    assert not m.settled
    m.handle(BackendReported(info(S.PAUSED)), 0.1)
    assert not m.settled
    m.handle(ResumeSucceeded(info(S.RUNNING, version=2)), 0.2)
    assert not m.settled
    m.handle(PortReady(PORT), 0.3)
    assert m.settled


# -- the traffic access token -----------------------------------------------------------------


def private(state: SandboxState) -> SandboxInfo:
    return SandboxInfo(SID, state, Lifecycle("pause", True), version=1, traffic_token="t0ken")


def with_token(rid: int, now: float, token: str | None, port: int = PORT) -> RequestArrived:
    return RequestArrived(rid, port, now + SETTINGS.hold_timeout, token=Credentials(token))


def test_a_request_without_the_token_never_starts_a_resume_of_a_private_sandbox() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(with_token(1, 0.0, None), 0.0)
    m.handle(with_token(2, 0.0, "wrong"), 0.0)
    decisions = m.handle(BackendReported(private(S.PAUSED)), 0.1)
    assert StartResume() not in decisions
    assert {rid: r.error for rid, r in rejected(decisions).items()} == {1: Forbidden, 2: Forbidden}
    assert "e2b-traffic-access-token" in rejected(decisions)[1].message
    assert (m.phase, m.held) == (Phase.PAUSED, 0)
    # Known to be paused now: the next tokenless request is refused without a lookup.
    assert rejected(m.handle(with_token(3, 1.0, None), 1.0))[3].error is Forbidden


def test_the_right_token_wakes_a_private_sandbox_and_the_wrong_one_is_refused_alone() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(with_token(1, 0.0, "t0ken"), 0.0)
    m.handle(with_token(2, 0.0, None), 0.0)
    decisions = m.handle(BackendReported(private(S.PAUSED)), 0.1)
    assert StartResume() in decisions
    assert list(rejected(decisions)) == [2]
    assert m.held == 1


def secure(state: SandboxState) -> SandboxInfo:
    return SandboxInfo(SID, state, Lifecycle("pause", True), version=1, agent_token="envd")


def on_agent_port(rid: int, now: float, credentials: Credentials) -> RequestArrived:
    return RequestArrived(rid, AGENT_PORT, now + SETTINGS.hold_timeout, token=credentials)


def test_a_secure_sandbox_wakes_on_its_agent_port_only_for_its_access_token() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(on_agent_port(1, 0.0, Credentials()), 0.0)  # envd's /health, no credential
    m.handle(on_agent_port(2, 0.0, Credentials(access="wrong")), 0.0)
    m.handle(on_agent_port(3, 0.0, Credentials(traffic="envd")), 0.0)  # the wrong header
    decisions = m.handle(BackendReported(secure(S.PAUSED)), 0.1)
    assert StartResume() not in decisions
    refused = rejected(decisions)
    assert {rid: r.error for rid, r in refused.items()} == {
        1: Forbidden,
        2: Forbidden,
        3: Forbidden,
    }
    assert "X-Access-Token" in refused[1].message
    for credentials in (Credentials(access="envd"), Credentials(signed=True)):
        woken = SandboxMachine(SID, SETTINGS)
        woken.handle(BackendReported(secure(S.PAUSED)), 0.0)
        assert StartResume() in woken.handle(on_agent_port(4, 0.5, credentials), 0.5)


def test_a_secure_sandbox_demands_no_access_token_on_other_ports() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(secure(S.PAUSED)), 0.0)
    assert StartResume() in m.handle(with_token(1, 0.5, None), 0.5)


def test_the_agent_port_needs_no_traffic_token() -> None:
    m = SandboxMachine(SID, SETTINGS)
    m.handle(BackendReported(private(S.PAUSED)), 0.0)
    decisions = m.handle(with_token(1, 0.5, None, port=private(S.PAUSED).agent_port), 0.5)
    assert StartResume() in decisions
