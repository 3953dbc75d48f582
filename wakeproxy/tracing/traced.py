"""What the relay hands the tracer, and the tracer's interface: no OpenTelemetry here, so
the relay imports it whether or not the `tracing` extra is installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wakeproxy.wake.timing import FinishedWake

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Traced:
    """What the relay knows of a request when its spans are made."""

    method: str
    path: str
    host: bytes | None
    headers: Headers
    request_id: bytes
    started: float  # time.perf_counter() at the request head
    sandbox_id: str | None
    port: int | None
    held_for: float
    triggered: bool
    wake: FinishedWake | None  # the wake this request triggered, once it is over
    reason: str | None = None


class Tracer(Protocol):
    """`wakeproxy.tracing.spans.Tracing` implements it; None in `Services` when off."""

    def wants(self, headers: Headers) -> bool:
        """Whether this request is traced at all (asked once, before the other calls)."""

    def forwarding(self, request: Traced, host: str, port: int) -> tuple[object, bytes]:
        """The request goes upstream now: a handle of its spans, and its `traceparent`."""

    def finished(self, request: Traced, spans: object | None, status: int) -> None:
        """The request was answered (`spans`: what `forwarding` returned, if it was)."""
