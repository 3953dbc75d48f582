"""Metrics hooks of the wake engine, in domain verbs; metrics attach by implementing them."""

from __future__ import annotations

from typing import Protocol


class Recorder(Protocol):
    """What the metrics module implements; `NullRecorder` when nobody listens."""

    def wake_started(self) -> None: ...

    def wake_finished(self, seconds: float, result: str) -> None:
        """`result`: "ok", or a `Failure` value ("transient", "not_found", "not_allowed")."""

    def joined(self) -> None:
        """A request was held for a wake already under way."""

    def held_changed(self, total: int) -> None:
        """Requests now held over all sandboxes."""


class NullRecorder:
    """Records nothing."""

    def wake_started(self) -> None:
        pass

    def wake_finished(self, seconds: float, result: str) -> None:
        pass

    def joined(self) -> None:
        pass

    def held_changed(self, total: int) -> None:
        pass
