"""The exchange's phases and moves (`wakeproxy.proxy.phase`): one table, tested alone."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.phase import HEAD_SENT, MOVES, IllegalMove, Phase, moved

P = Phase

LIVES = [
    [P.ROUTING, P.ATTACHED, P.ANSWERING, P.ANSWERED, P.RELEASED],  # the hot path
    [P.ROUTING, P.WAITING, P.ATTACHED, P.ANSWERING, P.ANSWERED, P.RELEASED],  # held
    [P.ROUTING, P.ATTACHED, P.WAITING, P.ATTACHED, P.ANSWERED],  # sent again, then 502
    [P.ROUTING, P.ANSWERED, P.RELEASED],  # refused at admission
    [P.ROUTING, P.WAITING, P.ANSWERED],  # a wake that failed, a client that left
    [P.ROUTING, P.WAITING, P.ATTACHED, P.ANSWERING, P.TUNNELLED, P.ANSWERED],  # WebSocket
]


@pytest.mark.parametrize("life", LIVES)
def test_every_life_the_relay_lives_is_allowed(life: list[Phase]) -> None:
    phase = life[0]
    for step in life[1:]:
        phase = moved(phase, step)
    assert phase is life[-1]


@pytest.mark.parametrize(
    ("current", "to"),
    [
        (P.ANSWERING, P.ATTACHED),  # no second request on a link whose answer has begun
        (P.ANSWERED, P.ANSWERING),  # no relayed head after the proxy answered
        (P.ANSWERED, P.ANSWERED),  # counted and logged once
        (P.WAITING, P.ANSWERING),  # no answer without a link
        (P.RELEASED, P.ROUTING),
        (P.TUNNELLED, P.WAITING),
    ],
)
def test_moves_the_table_does_not_list_are_refused(current: Phase, to: Phase) -> None:
    with pytest.raises(IllegalMove, match=f"{current.name} to {to.name}"):
        moved(current, to)


def test_every_phase_but_released_leads_to_an_answer() -> None:
    answered = {P.ANSWERED}
    changed = True
    while changed:
        reaching = {phase for phase, moves in MOVES.items() if moves & answered} | answered
        changed = reaching != answered
        answered = reaching
    assert answered == set(Phase) - {P.RELEASED}
    assert answered >= HEAD_SENT
