"""Metrics hooks of the wake engine, in domain verbs; metrics attach by implementing them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Recorder(Protocol):
    """What the metrics module implements; `NullRecorder` when nobody listens."""

    def wake_started(self) -> None:
        """This process called `Backend.resume` for a sandbox."""

    def wake_finished(
        self, seconds: float, result: str, phases: Mapping[str, float], *, followed: bool = False
    ) -> None:
        """The wake that `wake_started` began is over, `seconds` after it began.

        `followed`: another replica performed the resume and this one only waited for it
        (it is still timed, but it is not a resume this process started).

        `result`: "ok" (running, and every port a held request wanted accepted), "timeout"
        (a port never accepted within the readiness budget, or the resume outlasted the
        transition budget) or "failed". `phases`: "resume" (until the sandbox ran again)
        and "ready" (from then until the end), each present only if it was reached.
        """

    def joined(self) -> None:
        """A request was held for a wake already under way."""

    def held_changed(self, total: int) -> None:
        """Requests now held over all sandboxes."""

    def hold_finished(self, seconds: float) -> None:
        """A held request stopped waiting (forwarded, answered, or its client left)."""

    def state_lookup(self, source: str, result: str, count: int = 1) -> None:
        """`count` lookups of a sandbox's state: `source` "l1" ("hit" or "miss") or
        "backend" (the state found, "not_found" or "error")."""


class NullRecorder:
    """Records nothing."""

    def wake_started(self) -> None:
        pass

    def wake_finished(
        self, seconds: float, result: str, phases: Mapping[str, float], *, followed: bool = False
    ) -> None:
        pass

    def joined(self) -> None:
        pass

    def held_changed(self, total: int) -> None:
        pass

    def hold_finished(self, seconds: float) -> None:
        pass

    def state_lookup(self, source: str, result: str, count: int = 1) -> None:
        pass
