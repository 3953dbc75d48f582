"""The per-sandbox wake state machine: events and `now` in, decisions out, no I/O.

One `SandboxMachine` per sandbox id tracks what this process knows about the sandbox (its
phase, see `wakeproxy.wake.table`) and which requests it holds, and answers every event
with the decisions the coordinator carries out. The machine never awaits, never reads a
clock and never touches a socket, so its tests walk every phase and race with plain
values for `now`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from wakeproxy.backends.base import SandboxInfo, SandboxState
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
    ProxyError,
    ResumeInProgress,
    Unavailable,
    WakeFailed,
    WakeTimeout,
)
from wakeproxy.tokens import NO_CREDENTIALS, Credentials, token_admits, token_refusal
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
from wakeproxy.wake.settings import WakeSettings
from wakeproxy.wake.table import (
    GONE,
    IDLE,
    JOINING,
    LOOKING_UP,
    PAUSED,
    PAUSING,
    READYING,
    RESTING,
    RUNNING,
    TRANSITIONS,
    WAKE_PHASES,
    WAKING,
    WATCHED,
    Phase,
    TransitionError,
)

NOT_FOUND_MESSAGE: Final = "The sandbox was not found"
PORT_RETRY_AFTER: Final = 2.0
"""Retry-After of a port that did not open after a wake: a server still starting may
listen by then, and a retry of a running sandbox's closed port is answered at once."""


@dataclass(frozen=True, slots=True)
class _Held:
    port: int
    navigation: bool
    wake_allowed: bool
    token: Credentials = NO_CREDENTIALS


class SandboxMachine:
    """What this process knows and does about one sandbox. Pure: `now` is passed in."""

    def __init__(self, sandbox_id: str, settings: WakeSettings) -> None:
        self.sandbox_id = sandbox_id
        self.settings = settings
        self.phase = IDLE
        self.info: SandboxInfo | None = None
        # RUNNING and PAUSED: `info` is trusted until then. GONE: the negative-cache expiry.
        self.valid_until = 0.0
        self.refreshing = False  # a background `Lookup` for a RUNNING sandbox is in flight
        self._held: dict[int, _Held] = {}
        self._probing: set[int] = set()  # READYING: ports still being probed
        self._ready: set[int] = set()  # READYING: ports that accepted a connect
        # Ports of navigations sent the waiting page during this wake: the page reloads once
        # the wake is over, so the port is probed as if its request were still held (a
        # server that starts slowly, e.g. a container started again, is waited for).
        self._awaited: set[int] = set()
        self._trigger: int | None = None  # the request whose arrival started this wake
        self._total_held = 0  # during `handle`: requests held for wakes by every machine

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def held_for_wake(self) -> int:
        """Requests held while a wake runs. Requests waiting only for a lookup (an id
        nobody knows yet, the first request after a restart) are not: they count against
        no total held-request limit and get no wait headers."""
        return len(self._held) if self.phase in WAKE_PHASES else 0

    def holds(self, rid: int) -> bool:
        return rid in self._held

    @property
    def settled(self) -> bool:
        """True when no lookup or wake is under way (a waiting page may reload now)."""
        return self.phase in RESTING

    def disposable(self, now: float) -> bool:
        """True when forgetting this machine loses nothing worth keeping."""
        if self.phase not in RESTING or self.refreshing:
            return False
        if self.phase is RUNNING:
            return now >= self.valid_until + self.settings.forget_after
        return self.phase is IDLE or now >= self.valid_until

    def handle(self, event: Event, now: float, total_held: int = 0) -> list[Decision]:
        """Apply `event` at time `now`, when `total_held` requests are held for wakes over
        all sandboxes of this process; return what the coordinator should do."""
        self._total_held = total_held
        before = (self.phase, self.info, self.valid_until)
        decisions = self._dispatch(event, now)
        allowed = TRANSITIONS[before[0]].get(type(event), frozenset({before[0]}))
        if self.phase not in allowed:
            raise TransitionError(f"{type(event).__name__}: {before[0]} -> {self.phase}")
        if self._held and self.phase in RESTING:
            raise TransitionError(f"{type(event).__name__}: {self.phase} holds requests")
        return decisions + self._cache_changes(*before)

    def _dispatch(self, event: Event, now: float) -> list[Decision]:
        match event:
            case RequestArrived():
                return self._on_request(event, now)
            case BackendReported(info=info):
                return self._gone(now) if info is None else self._on_report(info, now)
            case SandboxKilled():
                return self._gone(now)
            case LookupFailed(failure=failure, message=message):
                return self._on_lookup_failed(failure, message, now)
            case ResumeSucceeded(info=info):
                return self._on_resumed(info, now) if self.phase is WAKING else []
            case ResumeFailed(failure=failure, message=message):
                return self._fail(failure, message, now) if self.phase is WAKING else []
            case PortReady() | ReadinessExhausted() | PortFailed():
                return self._on_port(event, now) if self.phase is READYING else []
            case TransitionTimedOut():
                return self._on_transition_timeout() if self.phase in WATCHED else []
            case HoldExpired(rid=rid):
                return self._on_hold_expired(rid)
            case ClientGone(rid=rid):
                self._held.pop(rid, None)
                return []
            case Invalidated():
                if self.phase in RESTING:
                    self.phase = IDLE
                return []

    # -- requests -------------------------------------------------------------------------

    def _on_request(self, ev: RequestArrived, now: float) -> list[Decision]:
        phase = self.phase
        if phase is RUNNING:
            return self._forward_running(ev.rid, now)
        if phase is GONE and now < self.valid_until:
            return [Reject(ev.rid, NotFound, NOT_FOUND_MESSAGE)]
        if phase is PAUSED and now < self.valid_until:
            return self._request_while_paused(ev, now)
        if phase is READYING and ev.port in self._ready:
            return [Forward(ev.rid, self._known())]
        waking = phase in WAKE_PHASES
        if not ev.wake_allowed and waking:
            return [self._no_wake(ev.rid)]
        if (overflow := self._overflow(ev, waking)) is not None:
            return [overflow]
        hold = self._hold(ev, now, joined=waking)
        if phase is READYING and ev.port not in self._probing:
            self._probing.add(ev.port)
            return [hold, ProbePort(ev.port, self._known())]
        if phase in RESTING:  # IDLE, or what was known has expired
            self.phase = LOOKING_UP
            return [hold, Lookup()]
        return [hold]

    def _forward_running(self, rid: int, now: float) -> list[Decision]:
        decisions: list[Decision] = [Forward(rid, self._known())]
        if now >= self.valid_until and not self.refreshing:
            self.refreshing = True
            decisions.append(Lookup())
        return decisions

    def _request_while_paused(self, ev: RequestArrived, now: float) -> list[Decision]:
        if not token_admits(self._known(), ev.port, ev.token):
            return [Reject(ev.rid, Forbidden, token_refusal(self._known(), ev.port))]
        if not ev.wake_allowed:
            return [self._no_wake(ev.rid)]
        if not self._known().lifecycle.auto_resume:
            return [Reject(ev.rid, NotAllowed, self._paused_message("is paused"))]
        if (overflow := self._overflow(ev, waking=True)) is not None:
            return [overflow]
        return [self._hold(ev, now, joined=False), *self._start_resume(ev.rid)]

    def _hold(self, ev: RequestArrived, now: float, *, joined: bool) -> Hold:
        until = ev.deadline
        if ev.navigation:
            until = min(until, now + self.settings.navigation_hold)
        self._held[ev.rid] = _Held(ev.port, ev.navigation, ev.wake_allowed, ev.token)
        return Hold(ev.rid, until, joined)

    def _overflow(self, ev: RequestArrived, waking: bool) -> Reject | None:
        """The held-request limits: the per-sandbox one bounds every request this sandbox
        holds; the total one only requests held for a wake (`waking`), so lookups of
        unknown ids never crowd out the wakes of real sandboxes."""
        if len(self._held) >= self.settings.max_held_per_sandbox:
            text = f"Too many requests are waiting for sandbox {self.sandbox_id} to wake"
        elif waking and self._total_held >= self.settings.max_held_total:
            text = "Too many requests are waiting for sandboxes to wake"
        else:
            return None
        return Reject(ev.rid, Overloaded, f"{text}; retry shortly")

    def _admit_to_wake(self) -> list[Decision]:
        """A lookup's answer turns the requests that waited for it into requests held for a
        wake: past the total limit, the later ones get 503 (`Overloaded`)."""
        room = max(0, self.settings.max_held_total - self._total_held)
        over = list(self._held)[room:]
        if not over:
            return []
        text = "Too many requests are waiting for sandboxes to wake; retry shortly"
        return self._reject(over, Overloaded, text)

    def _on_hold_expired(self, rid: int) -> list[Decision]:
        held = self._held.pop(rid, None)
        if held is None:
            return []
        triggered, waited = rid == self._trigger, self.phase in WAKE_PHASES
        if held.navigation:
            self._awaited.add(held.port)
            text = f"Sandbox {self.sandbox_id} is waking up"
            return [ServeWaitingPage(rid, text, triggered, waited)]
        if self.phase is LOOKING_UP:
            text = f"The backend did not say in time whether sandbox {self.sandbox_id} exists"
            return [Reject(rid, LookupTimeout, text)]
        text = f"Sandbox {self.sandbox_id} is still waking up"
        return [Reject(rid, WakeTimeout, text, None, triggered, waited)]

    # -- backend answers ------------------------------------------------------------------

    def _on_report(self, info: SandboxInfo, now: float) -> list[Decision]:
        if info.state is SandboxState.KILLED:
            return self._gone(now)
        self.refreshing = False
        stale = self.info is not None and info.version < self.info.version
        # A lookup's answer is always taken: the requests waiting for it need one.
        if (stale and self.phase is not LOOKING_UP) or (
            self.phase is GONE and now < self.valid_until
        ):
            return []
        if self.phase in RESTING:
            self._rest(info, now)
            return []
        if self.phase is WAKING or self.phase is READYING:
            # Our own resume (or the probes) decide; only "running" is news here.
            if info.state is SandboxState.RUNNING and self.phase is WAKING:
                self.info = info
                return self._woke(now)
            return []
        return self._settle(info, now)

    def _rest(self, info: SandboxInfo, now: float) -> None:
        self.info = info
        if info.state is SandboxState.RUNNING or info.state is SandboxState.PAUSED:
            self.phase = RUNNING if info.state is SandboxState.RUNNING else PAUSED
            self.valid_until = now + self.settings.state_ttl
        else:  # pausing or resuming, and nobody waiting: ask again when someone does
            self.phase = IDLE

    def _settle(self, info: SandboxInfo, now: float) -> list[Decision]:
        """Act on a fresh answer while requests wait for one (LOOKING_UP, PAUSING, JOINING)."""
        self.info = info
        state = info.state
        if state is SandboxState.RUNNING:
            return self._woke(now) if self.phase in WATCHED else self._release_all(now)
        # Nobody wakes a sandbox without the credential it demands on the port asked for
        # (checked before any resume); the refusal names the one that was missing.
        agent = info.agent_port
        decisions = self._reject_held(
            lambda h: h.port == agent and not token_admits(info, h.port, h.token),
            Forbidden,
            token_refusal(info, agent),
        )
        decisions += self._reject_held(
            lambda h: h.port != agent and not token_admits(info, h.port, h.token),
            Forbidden,
            token_refusal(info, 0),
        )
        decisions += self._reject_held(lambda h: not h.wake_allowed, NotWoken, self._no_wake_text)
        if state is not SandboxState.RESUMING and not info.lifecycle.auto_resume:
            doing = "is paused" if state is SandboxState.PAUSED else "is being paused"
            decisions += self._reject_held(lambda h: True, NotAllowed, self._paused_message(doing))
        if self.phase is LOOKING_UP:
            decisions += self._admit_to_wake()
        if not self._held:
            self._rest(info, now)
        elif state is SandboxState.PAUSED:
            decisions += self._start_resume(next(iter(self._held)))
        else:
            watching = self.phase in WATCHED
            self.phase = PAUSING if state is SandboxState.PAUSING else JOINING
            if not watching:
                decisions.append(WaitForTransition())
        return decisions

    def _on_lookup_failed(self, failure: Failure, message: str, now: float) -> list[Decision]:
        if self.phase is LOOKING_UP:
            return self._fail(failure, message, now)
        if self.phase is RUNNING and self.refreshing:
            # Keep serving what we know; losing the backend must not break running sandboxes.
            self.valid_until = now + self.settings.state_ttl
        self.refreshing = False
        return []

    # -- the wake -------------------------------------------------------------------------

    def _start_resume(self, trigger: int) -> list[Decision]:
        self.phase = WAKING
        self._trigger = trigger
        return [StartResume()]

    def _on_resumed(self, info: SandboxInfo, now: float) -> list[Decision]:
        self.info = info
        if info.state is SandboxState.RUNNING:
            return self._woke(now)
        if info.state is SandboxState.RESUMING:
            self.phase = JOINING
            return [WaitForTransition()]
        return self._fail(Failure.TRANSIENT, f"the resume left it {info.state}", now)

    def _woke(self, now: float) -> list[Decision]:
        """The sandbox runs again: probe every port a held request wants."""
        ports = {held.port for held in self._held.values()} | self._awaited
        if not ports:
            return self._release_all(now)
        self.phase = READYING
        self._probing, self._ready = set(ports), set()
        info = self._known()
        return [ProbePort(port, info) for port in sorted(ports)]

    def _on_port(
        self, ev: PortReady | ReadinessExhausted | PortFailed, now: float
    ) -> list[Decision]:
        if ev.port not in self._probing:
            return []
        self._probing.discard(ev.port)
        decisions: list[Decision]
        match ev:
            case PortReady(port=port):
                self._ready.add(port)
                decisions = [self._forward(rid) for rid in self._rids(port)]
            case ReadinessExhausted(port=port):
                text = (
                    f"The sandbox {self.sandbox_id} is running but port is not open: "
                    f"nothing accepted connections on port {port}"
                )
                rids = self._rids(port)
                decisions = self._reject(rids, PortNotOpen, text, PORT_RETRY_AFTER)
            case PortFailed(failure=Failure.NOT_FOUND):
                return self._gone(now)
            case PortFailed(port=port, failure=failure, message=message):
                error, text = self._failure_error(failure, message, WakeFailed)
                decisions = self._reject_held(lambda h: h.port == port, error, text)
        if not self._probing:
            decisions += self._release_all(now)
        return decisions

    def _on_transition_timeout(self) -> list[Decision]:
        pausing = self.phase is PAUSING
        doing = "paused" if pausing else "resumed"
        text = f"Sandbox {self.sandbox_id} is still being {doing}; retry shortly"
        error: type[Conflict] = PauseInProgress if pausing else ResumeInProgress
        decisions = self._reject_held(lambda h: True, error, text)
        self._reset(IDLE)
        return decisions

    def _fail(self, failure: Failure, message: str, now: float) -> list[Decision]:
        if failure is Failure.NOT_FOUND:
            return self._gone(now)
        # A failed lookup says nothing about waking; a failed resume is a failed wake.
        transient = Unavailable if self.phase is LOOKING_UP else WakeFailed
        error, text = self._failure_error(failure, message, transient)
        decisions = self._reject_held(lambda h: True, error, text)
        self._reset(IDLE)
        return decisions

    def _gone(self, now: float) -> list[Decision]:
        decisions = self._reject_held(lambda h: True, NotFound, NOT_FOUND_MESSAGE)
        self._reset(GONE)
        self.info = None
        self.valid_until = now + self.settings.negative_ttl
        return decisions

    # -- helpers --------------------------------------------------------------------------

    def _release_all(self, now: float) -> list[Decision]:
        decisions: list[Decision] = [self._forward(rid) for rid in list(self._held)]
        self._reset(RUNNING)
        self.valid_until = now + self.settings.state_ttl
        return decisions

    def _reset(self, phase: Phase) -> None:
        self.phase = phase
        self._probing, self._ready, self._awaited = set(), set(), set()
        self._trigger = None

    def _forward(self, rid: int) -> Forward:
        del self._held[rid]
        waited = self.phase in WAKE_PHASES
        return Forward(rid, self._known(), triggered=rid == self._trigger, waited=waited)

    def _rids(self, port: int) -> list[int]:
        return [rid for rid, held in self._held.items() if held.port == port]

    def _reject_held(
        self, which: Callable[[_Held], bool], error: type[ProxyError], message: str
    ) -> list[Decision]:
        rids = [rid for rid, held in self._held.items() if which(held)]
        return self._reject(rids, error, message)

    def _reject(
        self,
        rids: list[int],
        error: type[ProxyError],
        message: str,
        retry_after: float | None = None,
    ) -> list[Decision]:
        for rid in rids:
            del self._held[rid]
        waited = self.phase in WAKE_PHASES
        trigger = self._trigger
        return [Reject(rid, error, message, retry_after, rid == trigger, waited) for rid in rids]

    def _no_wake(self, rid: int) -> Reject:
        return Reject(rid, NotWoken, self._no_wake_text)

    @property
    def _no_wake_text(self) -> str:
        return f"Sandbox {self.sandbox_id} is not running and this request does not wake it"

    def _paused_message(self, doing: str) -> str:
        return (
            f"Sandbox {self.sandbox_id} {doing} and auto-resume is off; "
            "Sandbox.connect() resumes it"
        )

    def _failure_error(
        self, failure: Failure, message: str, transient: type[Unavailable]
    ) -> tuple[type[ProxyError], str]:
        if failure is Failure.NOT_ALLOWED:
            return NotAllowed, self._paused_message(f"was not resumed ({message})")
        doing = "look up" if transient is Unavailable else "wake"
        return transient, f"Could not {doing} sandbox {self.sandbox_id}: {message}; retry shortly"

    def _known(self) -> SandboxInfo:
        if self.info is None:
            raise TransitionError(f"{self.phase} without sandbox info")
        return self.info

    def _cache_changes(
        self, phase: Phase, info: SandboxInfo | None, valid_until: float
    ) -> list[Decision]:
        if self.phase is RUNNING:
            if phase is not RUNNING or self.info is not info or self.valid_until != valid_until:
                return [Cache(self._known(), self.valid_until)]
            return []
        return [Uncache()] if phase is RUNNING else []
