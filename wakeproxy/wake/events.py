"""What goes into the wake state machine (events) and what comes out of it (decisions).

Events report something that happened: a request arrived, the backend answered, a port
opened, a deadline passed, a client went away. Decisions tell the coordinator what to do
next: forward or reject a request, hold it until a time, look the sandbox up, start the
one resume, watch a transition, probe a port, update the hot-path cache. Requests are
named by an id the coordinator picks (`rid`); the machine never sees a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from wakeproxy.backends.base import SandboxInfo
from wakeproxy.errors import ProxyError, WakeTimeout
from wakeproxy.tokens import NO_CREDENTIALS, Credentials


class StillWaking(WakeTimeout):
    """A browser navigation held for `navigation_hold` while the wake still runs.

    The HTTP layer answers it with the waiting page (503, `Retry-After`, no-store) that
    reloads itself once the sandbox is ready; API clients get plain `WakeTimeout`.
    """

    reason = "still_waking"
    retry_after = 1.0


class Failure(StrEnum):
    """How a backend call failed, as far as the machine cares."""

    TRANSIENT = "transient"  # backend down, timed out, refused more work: retry later
    NOT_FOUND = "not_found"  # the sandbox is unknown or was killed
    NOT_ALLOWED = "not_allowed"  # the backend refuses to resume it


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A request for `port` wants the sandbox; it may be held until `deadline` at most."""

    rid: int
    port: int
    deadline: float
    navigation: bool = False  # a browser navigation: held only `navigation_hold`
    wake_allowed: bool = True  # False when a no-wake rule matched
    token: Credentials = NO_CREDENTIALS  # what the request shows to prove its right to wake


@dataclass(frozen=True, slots=True)
class BackendReported:
    """The backend said what state the sandbox is in; None means unknown or killed."""

    info: SandboxInfo | None


@dataclass(frozen=True, slots=True)
class LookupFailed:
    """`Backend.get` failed."""

    failure: Failure
    message: str


@dataclass(frozen=True, slots=True)
class ResumeSucceeded:
    """The resume this process started returned."""

    info: SandboxInfo


@dataclass(frozen=True, slots=True)
class ResumeFailed:
    """The resume this process started raised."""

    failure: Failure
    message: str


@dataclass(frozen=True, slots=True)
class PortReady:
    """After a wake, `port` accepted a connection."""

    port: int


@dataclass(frozen=True, slots=True)
class ReadinessExhausted:
    """After a wake, `port` kept refusing connects for the whole readiness budget."""

    port: int


@dataclass(frozen=True, slots=True)
class PortFailed:
    """After a wake, the backend could not say where `port` is reached."""

    port: int
    failure: Failure
    message: str


@dataclass(frozen=True, slots=True)
class TransitionTimedOut:
    """A pause (or a resume started elsewhere) outlasted the transition budget."""


@dataclass(frozen=True, slots=True)
class HoldExpired:
    """The time a held request was given (its `Hold.until`) has come."""

    rid: int


@dataclass(frozen=True, slots=True)
class ClientGone:
    """The client of request `rid` disconnected or was cancelled."""

    rid: int


@dataclass(frozen=True, slots=True)
class SandboxKilled:
    """Word from elsewhere (e.g. a state-store notification) that the sandbox was killed."""


@dataclass(frozen=True, slots=True)
class Invalidated:
    """What is known about the sandbox is wrong (an upstream connect was refused)."""


Event: TypeAlias = (
    RequestArrived
    | BackendReported
    | LookupFailed
    | ResumeSucceeded
    | ResumeFailed
    | PortReady
    | ReadinessExhausted
    | PortFailed
    | TransitionTimedOut
    | HoldExpired
    | ClientGone
    | SandboxKilled
    | Invalidated
)


# -- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """Send request `rid` to the sandbox described by `info`."""

    rid: int
    info: SandboxInfo
    triggered: bool = False  # this request's arrival started the wake
    waited: bool = False  # it was held while a wake ran (not only for a lookup)


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer request `rid` with `error(message)` instead of forwarding it."""

    rid: int
    error: type[ProxyError]
    message: str
    retry_after: float | None = None  # None: the error class's default
    triggered: bool = False  # this request's arrival started the wake that failed
    waited: bool = False  # it was held while a wake ran (not only for a lookup)


@dataclass(frozen=True, slots=True)
class ServeWaitingPage:
    """Answer navigation `rid` with the waiting page (`StillWaking`)."""

    rid: int
    message: str
    triggered: bool = False
    waited: bool = True  # a waiting page is served only while a wake runs


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep request `rid` waiting; report `HoldExpired(rid)` at `until` if still held."""

    rid: int
    until: float
    joined: bool = False  # a wake was already under way when it arrived


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask `Backend.get`; report `BackendReported` or `LookupFailed`."""


@dataclass(frozen=True, slots=True)
class StartResume:
    """Call `Backend.resume` once; report `ResumeSucceeded` or `ResumeFailed`."""


@dataclass(frozen=True, slots=True)
class WaitForTransition:
    """Poll `Backend.get` (backing off) while a pause or a foreign resume runs.

    Report each answer as `BackendReported`; stop when the machine leaves PAUSING and
    JOINING; report `TransitionTimedOut` when the transition budget runs out. A pause
    that completes is followed by the machine's own `StartResume`.
    """


@dataclass(frozen=True, slots=True)
class ProbePort:
    """Connect to `port` of the sandbox until it accepts (`PortReady`) or the readiness
    budget runs out (`ReadinessExhausted`); `PortFailed` if its address is unknown."""

    port: int
    info: SandboxInfo


@dataclass(frozen=True, slots=True)
class Cache:
    """The sandbox is running: serve it from the hot-path cache until `fresh_until`."""

    info: SandboxInfo
    fresh_until: float


@dataclass(frozen=True, slots=True)
class Uncache:
    """The sandbox is no longer known to be running: drop it from the hot-path cache."""


Decision: TypeAlias = (
    Forward
    | Reject
    | ServeWaitingPage
    | Hold
    | Lookup
    | StartResume
    | WaitForTransition
    | ProbePort
    | Cache
    | Uncache
)
