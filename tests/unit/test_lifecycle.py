"""The lifecycle rules, with explicit times: no clock, no loop, no sleeps."""

from __future__ import annotations

import pytest

from wakeproxy.backends.base import SandboxState
from wakeproxy.platform.control import lifecycle
from wakeproxy.platform.control.lifecycle import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    InvalidLifecycle,
    Life,
    Policy,
)

S = SandboxState
T0 = 1_700_000_000.0
PAUSE_AND_RESUME = Policy(60, "pause", auto_resume=True)


def run(life: Life, *events: Event, now: float = T0, timeout: float | None = None) -> Life:
    for event in events:
        life = lifecycle.transition(life, event, now=now, timeout=timeout)
    return life


def paused(policy: Policy = PAUSE_AND_RESUME, at: float = T0) -> Life:
    return run(lifecycle.start(policy, at), Event.PAUSE_START, Event.PAUSE_DONE, now=at)


# -- creating ----------------------------------------------------------------------------------


def test_create_runs_until_now_plus_timeout() -> None:
    life = lifecycle.start(Policy(300), T0)
    assert (life.state, life.version, life.end_at) == (S.RUNNING, 1, T0 + 300)


def test_the_default_action_at_the_end_is_kill_without_auto_resume() -> None:
    assert Policy(10) == Policy(10, "kill", auto_resume=False, activity_extends=False)


def test_auto_resume_is_refused_unless_the_sandbox_pauses_on_timeout() -> None:
    with pytest.raises(InvalidLifecycle, match="autoResume can only be enabled"):
        Policy(60, "kill", auto_resume=True)
    assert Policy(60, "pause", auto_resume=True).auto_resume


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), True, "60", None])
def test_a_timeout_must_be_a_finite_non_negative_number(timeout: object) -> None:
    with pytest.raises(InvalidLifecycle):
        Policy(timeout)  # type: ignore[arg-type]


def test_a_timeout_above_the_limit_is_refused() -> None:
    assert lifecycle.check_timeout(3600, limit=3600) == 3600.0
    with pytest.raises(InvalidLifecycle, match="at most 3600"):
        lifecycle.check_timeout(3601, limit=3600)


def test_an_unknown_on_timeout_action_is_refused() -> None:
    with pytest.raises(InvalidLifecycle, match="onTimeout"):
        Policy(60, "hibernate")  # type: ignore[arg-type]


# -- the end of the window ---------------------------------------------------------------------


def test_nothing_is_due_before_end_at() -> None:
    life = lifecycle.start(PAUSE_AND_RESUME, T0)
    assert lifecycle.due(life, T0 + 59.999) is None
    assert lifecycle.deadline(life) == T0 + 60


@pytest.mark.parametrize("action", ["pause", "kill"])
def test_at_end_at_the_policy_says_what_happens(action: lifecycle.OnTimeout) -> None:
    life = lifecycle.start(Policy(60, action), T0)
    assert lifecycle.due(life, T0 + 60) == action
    assert lifecycle.due(life, T0 + 3600) == action


@pytest.mark.parametrize(
    "state_events", [(Event.PAUSE_START,), (Event.PAUSE_START, Event.PAUSE_DONE)]
)
def test_only_a_running_sandbox_has_a_deadline(state_events: tuple[Event, ...]) -> None:
    life = run(lifecycle.start(PAUSE_AND_RESUME, T0), *state_events)
    assert lifecycle.due(life, T0 + 10_000) is None
    assert lifecycle.deadline(life) is None


# -- pause, resume and the auto-resume cycle ---------------------------------------------------


def test_every_transition_bumps_the_version() -> None:
    life = lifecycle.start(PAUSE_AND_RESUME, T0)
    versions = [life.version]
    for event in (Event.PAUSE_START, Event.PAUSE_DONE, Event.RESUME_START, Event.RESUME_DONE):
        life = lifecycle.transition(life, event, now=T0)
        versions.append(life.version)
    assert versions == [1, 2, 3, 4, 5]
    assert life.state is S.RUNNING


def test_an_auto_resume_restores_the_create_time_timeout_and_the_cycle_repeats() -> None:
    life = lifecycle.start(PAUSE_AND_RESUME, T0)
    for cycle in range(3):
        now = life.end_at
        assert lifecycle.due(life, now) == "pause", cycle
        life = run(life, Event.PAUSE_START, Event.PAUSE_DONE, now=now)
        woke = now + 500  # traffic, long after the pause
        life = run(life, Event.RESUME_START, Event.RESUME_DONE, now=woke)
        assert (life.state, life.end_at) == (S.RUNNING, woke + 60)


def test_a_resume_by_connect_starts_the_window_it_asks_for() -> None:
    life = run(paused(), Event.RESUME_START, Event.RESUME_DONE, now=T0 + 100, timeout=600)
    assert life.end_at == T0 + 700


def test_a_failed_pause_leaves_it_running_and_a_failed_resume_leaves_it_paused() -> None:
    start = lifecycle.start(PAUSE_AND_RESUME, T0)
    assert run(start, Event.PAUSE_START, Event.PAUSE_FAILED).state is S.RUNNING
    assert run(paused(), Event.RESUME_START, Event.RESUME_FAILED).state is S.PAUSED


def test_a_failed_pause_keeps_end_at_so_the_timeout_is_still_due() -> None:
    life = lifecycle.start(PAUSE_AND_RESUME, T0)
    life = run(life, Event.PAUSE_START, Event.PAUSE_FAILED, now=T0 + 60)
    assert lifecycle.due(life, T0 + 60) == "pause"


@pytest.mark.parametrize(
    ("events", "refused"),
    [
        ((), Event.PAUSE_DONE),
        ((), Event.RESUME_START),
        ((Event.PAUSE_START,), Event.PAUSE_START),
        ((Event.PAUSE_START,), Event.RESUME_START),
        ((Event.PAUSE_START, Event.PAUSE_DONE), Event.PAUSE_START),
    ],
)
def test_moves_outside_the_table_are_refused(events: tuple[Event, ...], refused: Event) -> None:
    life = run(lifecycle.start(PAUSE_AND_RESUME, T0), *events)
    with pytest.raises(IllegalTransition):
        lifecycle.transition(life, refused, now=T0)


def test_kill_is_possible_from_every_live_state_and_final() -> None:
    for state in S:
        if state is not S.KILLED:
            assert TRANSITIONS[(state, Event.KILL)] is S.KILLED
    killed = run(lifecycle.start(PAUSE_AND_RESUME, T0), Event.KILL)
    for event in Event:
        with pytest.raises(IllegalTransition, match="killed"):
            lifecycle.transition(killed, event, now=T0)
    with pytest.raises(IllegalTransition):
        lifecycle.set_timeout(killed, T0, 60)
    assert lifecycle.due(killed, T0 + 10_000) is None


# -- connect, set_timeout ----------------------------------------------------------------------


def test_connect_on_a_running_sandbox_only_ever_extends() -> None:
    life = lifecycle.start(Policy(600), T0)
    assert lifecycle.extend(life, T0 + 10, 60).end_at == T0 + 600  # would shorten: kept
    assert lifecycle.extend(life, T0 + 10, 900).end_at == T0 + 910


def test_set_timeout_can_shorten_and_extend() -> None:
    life = lifecycle.start(Policy(600), T0)
    assert lifecycle.set_timeout(life, T0 + 10, 30).end_at == T0 + 40
    assert lifecycle.set_timeout(life, T0 + 10, 3000).end_at == T0 + 3010


def test_set_timeout_does_not_bump_the_version() -> None:
    life = lifecycle.start(Policy(600), T0)
    assert lifecycle.set_timeout(life, T0, 30).version == life.version


def test_set_timeout_and_connect_extension_need_a_running_sandbox() -> None:
    with pytest.raises(IllegalTransition, match="paused"):
        lifecycle.set_timeout(paused(), T0, 60)
    with pytest.raises(IllegalTransition, match="paused"):
        lifecycle.extend(paused(), T0, 60)


def test_a_zero_timeout_is_due_at_once() -> None:
    life = lifecycle.set_timeout(lifecycle.start(Policy(600, "pause"), T0), T0 + 5, 0)
    assert lifecycle.due(life, T0 + 5) == "pause"


# -- activity extends the timeout (opt-in) -----------------------------------------------------


def test_activity_does_not_extend_by_default() -> None:
    life = lifecycle.start(Policy(60), T0)
    assert lifecycle.touch(life, T0 + 50) is life


def test_with_activity_extends_the_sandbox_lives_timeout_past_its_last_activity() -> None:
    life = lifecycle.start(Policy(60, "pause", activity_extends=True), T0)
    life = lifecycle.touch(life, T0 + 50)
    assert life.end_at == T0 + 110
    assert lifecycle.due(life, T0 + 109) is None
    assert lifecycle.due(life, T0 + 110) == "pause"


def test_old_activity_never_shortens_and_paused_sandboxes_ignore_it() -> None:
    life = lifecycle.start(Policy(60, "pause", activity_extends=True), T0)
    longer = lifecycle.set_timeout(life, T0, 3600)
    assert lifecycle.touch(longer, T0 + 10) is longer
    frozen = paused(Policy(60, "pause", activity_extends=True))
    assert lifecycle.touch(frozen, T0 + 10_000) is frozen
