"""Where one exchange is in its life, and the moves it may make: one table, no I/O.

The exchange (`proxy/exchange.py`) holds one `Phase` instead of a handful of booleans, and
every change of it goes through `moved`, so a move the table does not allow (answering
twice, relaying a head after an error answer) fails loudly instead of corrupting a
connection. `wake/table.py` does the same for a sandbox's wake.

    ROUTING ──▶ WAITING ──▶ ATTACHED ──▶ ANSWERING ──▶ ANSWERED ──▶ RELEASED
       │           ▲  │        │  │          │             ▲
       │           └──┼────────┘  └─▶ TUNNELLED ───────────┤
       └──────────────┴───────────────────────────────────┘

- ROUTING: parsed; routed and admitted inside the parse callback.
- WAITING: a task runs: held for a wake, or waiting for a connection to the port.
- ATTACHED: the request went (or is going) upstream on a link; no answer yet. A link that
  closes before any byte of an answer sends an idempotent request back to WAITING, once.
- ANSWERING: the response head is out; the body is being relayed.
- TUNNELLED: a WebSocket session after the upstream's 101.
- ANSWERED: answered (relayed whole, made by the proxy, cut, or the client left), and
  counted and logged once.
- RELEASED: the connection may carry its next request.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Phase(enum.IntEnum):
    ROUTING = 0
    WAITING = 1
    ATTACHED = 2
    ANSWERING = 3
    TUNNELLED = 4
    ANSWERED = 5
    RELEASED = 6


_ = Phase
MOVES: Mapping[Phase, frozenset[Phase]] = MappingProxyType(
    {
        _.ROUTING: frozenset({_.WAITING, _.ATTACHED, _.ANSWERED}),
        _.WAITING: frozenset({_.ATTACHED, _.ANSWERED}),
        _.ATTACHED: frozenset({_.WAITING, _.ANSWERING, _.ANSWERED}),
        _.ANSWERING: frozenset({_.TUNNELLED, _.ANSWERED}),
        _.TUNNELLED: frozenset({_.ANSWERED}),
        _.ANSWERED: frozenset({_.RELEASED}),
        _.RELEASED: frozenset(),
    }
)
"""The moves each phase allows."""

HEAD_SENT = frozenset({Phase.ANSWERING, Phase.TUNNELLED})
"""Phases in which a status can no longer say what went wrong: a failure cuts instead."""


class IllegalMove(RuntimeError):
    """A move the table does not allow: a bug in the relay, never a peer's doing."""


def moved(current: Phase, to: Phase) -> Phase:
    """`to`, when `MOVES` allows it from `current`; else `IllegalMove`."""
    if to not in MOVES[current]:
        raise IllegalMove(f"an exchange cannot move from {current.name} to {to.name}")
    return to
