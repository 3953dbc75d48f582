"""`WakeTimes`: how a wake's end and result are read from the machine's phases."""

from __future__ import annotations

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.wake.events import (
    BackendReported,
    Failure,
    PortFailed,
    PortReady,
    ResumeFailed,
    ResumeSucceeded,
    TransitionTimedOut,
)
from wakeproxy.wake.table import GONE, IDLE, JOINING, READYING, RUNNING
from wakeproxy.wake.timing import FinishedWake, WakeTimes

RUNNING_INFO = SandboxInfo("a", SandboxState.RUNNING)


def test_a_wake_is_split_where_the_sandbox_runs_again() -> None:
    times = WakeTimes()
    assert times.start("a", 10.0)
    assert times.observe("a", ResumeSucceeded(RUNNING_INFO), READYING, 10.5) is None
    finished = times.observe("a", PortReady(3000), RUNNING, 10.75)
    assert finished == FinishedWake(0.75, "ok", {"resume": 0.5, "ready": 0.25}, started=10.0)
    assert times.observe("a", PortReady(3000), RUNNING, 11.0) is None  # over and forgotten


def test_a_resume_that_must_be_joined_ends_its_resume_phase_when_running() -> None:
    times = WakeTimes()
    times.start("a", 0.0)
    times.observe("a", ResumeSucceeded(SandboxInfo("a", SandboxState.RESUMING)), JOINING, 1.0)
    times.observe("a", BackendReported(RUNNING_INFO), READYING, 3.0)
    finished = times.observe("a", PortReady(3000), RUNNING, 4.0)
    assert finished == FinishedWake(4.0, "ok", {"resume": 3.0, "ready": 1.0})


def test_a_second_resume_of_the_same_wake_is_not_a_new_wake() -> None:
    times = WakeTimes()
    assert times.start("a", 0.0)
    assert not times.start("a", 1.0)


def test_results_say_timeout_and_failed_with_the_phase_and_the_cause() -> None:
    times = WakeTimes()
    times.start("a", 0.0)
    timed_out = times.observe("a", TransitionTimedOut(), IDLE, 30.0)
    cause = "the sandbox was still pausing or resuming after wake.transition_budget"
    assert timed_out == FinishedWake(30.0, "timeout", cause=cause)
    assert timed_out.phase == "resume"
    times.start("b", 0.0)
    times.observe("b", BackendReported(RUNNING_INFO), READYING, 1.0)
    failed = times.observe("b", PortFailed(3000, Failure.TRANSIENT, "no route"), RUNNING, 2.0)
    assert failed is not None
    assert (failed.result, failed.phase) == ("failed", "ready")
    assert failed.cause == "port 3000 could not be reached: no route"
    times.start("c", 0.0)
    gone = times.observe("c", BackendReported(None), GONE, 1.0)
    assert gone == FinishedWake(1.0, "failed", cause="the sandbox was killed or is unknown")
    times.start("d", 0.0)
    hung = times.observe("d", ResumeFailed(Failure.TRANSIENT, "resume timed out"), IDLE, 9.0)
    assert hung == FinishedWake(9.0, "failed", cause="the resume failed: resume timed out")


def test_abandon_ends_every_wake_as_failed() -> None:
    times = WakeTimes()
    times.start("a", 0.0)
    times.observe("a", ResumeSucceeded(RUNNING_INFO), READYING, 1.0)
    times.start("b", 2.0)
    abandoned = times.abandon(3.0)
    assert [(sid, w.result) for sid, w in abandoned] == [("a", "failed"), ("b", "failed")]
    assert abandoned[0][1].cause == "wakeproxy stopped during the wake"
    assert times.abandon(4.0) == []
