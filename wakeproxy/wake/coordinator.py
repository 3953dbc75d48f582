"""The hold-and-wake coordinator: carries out what the per-sandbox machines decide.

`acquire()` is the one entry point of the request path. A running sandbox found in the
hot-path cache is answered with one dict lookup, without awaiting anything. Otherwise the
request becomes a `RequestArrived` event for the sandbox's `SandboxMachine`, and the
coordinator carries out the decisions that come back: it answers or holds requests, and
starts the background jobs (look up, resume, watch a transition, probe a port) whose
results it feeds back as events.

Every change of state happens synchronously in `_dispatch`, between awaits, so there is
no lock and nothing is held across an await. Jobs are owned: kept in a set, deduplicated
per sandbox (one resume, one watcher, one prober per port), cancelled by `close()`. A
waiter owns only its future and its deadline timer; cancelling it (the client left)
removes it from its machine and leaves the wake running for everyone else.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

from wakeproxy.backends.base import (
    Backend,
    Invalidatable,
    SandboxInfo,
    SharedWakes,
    Upstream,
)
from wakeproxy.errors import ShuttingDown
from wakeproxy.tokens import NO_CREDENTIALS, Credentials
from wakeproxy.wake.activity import ActivityBuffer
from wakeproxy.wake.cache import Acquired, RouteCache
from wakeproxy.wake.closedports import ClosedPorts
from wakeproxy.wake.events import (
    BackendReported,
    Cache,
    ClientGone,
    Decision,
    Event,
    Forward,
    Hold,
    HoldExpired,
    Invalidated,
    Lookup,
    ProbePort,
    Reject,
    RequestArrived,
    ServeWaitingPage,
    StartResume,
    StillWaking,
    Uncache,
    WaitForTransition,
)
from wakeproxy.wake.jobs import Probe, WakeJobs
from wakeproxy.wake.machine import SandboxMachine
from wakeproxy.wake.recorder import NullRecorder, Recorder
from wakeproxy.wake.settings import WakeSettings
from wakeproxy.wake.table import WAKE_PHASES, Phase
from wakeproxy.wake.timing import FinishedWake, WakeTimes

log = logging.getLogger(__name__)

_Outcome: TypeAlias = Forward | Reject | ServeWaitingPage
_Job: TypeAlias = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class _Waiter:
    arrived: float
    future: asyncio.Future[_Outcome]
    timer: asyncio.TimerHandle | None = None
    held: bool = False


def log_failed_wake(sandbox_id: str, wake: FinishedWake) -> None:
    """One warning per wake that did not end well, with what an operator needs to act."""
    log.warning(
        "wake of sandbox %s %s in the %s phase after %.3fs: %s",
        sandbox_id,
        "timed out" if wake.result == "timeout" else "failed",
        wake.phase,
        wake.seconds,
        wake.cause,
        extra={
            "event": "wake_failed",
            "sandbox": sandbox_id,
            "result": wake.result,
            "phase": wake.phase,
            "duration": round(wake.seconds, 6),
            "cause": wake.cause,
        },
    )


class WakeCoordinator:
    """Holds requests for sleeping sandboxes and wakes each sandbox once."""

    def __init__(
        self,
        backend: Backend,
        probe: Probe,
        settings: WakeSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
    ) -> None:
        self.settings = settings or WakeSettings()
        self._backend = backend
        self._clock = clock
        self._recorder: Recorder = recorder or NullRecorder()
        self._work = WakeJobs(
            backend,
            probe,
            self.settings,
            clock,
            self._recorder,
            report=self._dispatch,
            phase=self.phase,
            upstream=self._upstream,
        )
        self._activity = ActivityBuffer(backend.touch, wall_clock, self.settings.activity_batch)
        self._machines: dict[str, SandboxMachine] = {}
        self._cache = RouteCache(clock)
        self._waiters: dict[int, _Waiter] = {}
        self._ready_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._jobs: dict[tuple[str, str | int], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._rids = itertools.count()
        self._held_total = 0
        self._wake_times = WakeTimes()
        self._closed_ports = ClosedPorts()
        # The last wake of each sandbox until its trigger request picks it up (for traces).
        self._trigger_wakes: dict[str, FinishedWake] = {}
        self._l1_hits = 0  # counted on the hot path as a plain int, reported in batches
        self._closed = False

    # -- the request path -----------------------------------------------------------------

    def cached(self, sandbox_id: str, port: int) -> Acquired | None:
        """The hot path: the answer for a running sandbox in the cache, else None."""
        hit = self._cache.get(sandbox_id, port)
        if hit is not None:
            self._l1_hits += 1
        return hit

    async def acquire(
        self,
        sandbox_id: str,
        port: int,
        *,
        navigation: bool = False,
        wake_allowed: bool = True,
        token: Credentials = NO_CREDENTIALS,
    ) -> Acquired:
        """Where to forward a request for `port` of `sandbox_id`, waking the sandbox if needed.

        Raises a `ProxyError`: `NotFound`, `NotAllowed`, `Overloaded` (held-request limit),
        `NotWoken` (`wake_allowed=False` while the sandbox is not running), `WakeTimeout` (its
        subclass `StillWaking` for a `navigation` held `navigation_hold`), `PortNotOpen`,
        `Conflict` or `Unavailable`.
        """
        hit = self._cache.get(sandbox_id, port)
        if hit is not None:
            self._l1_hits += 1
            return hit
        self._recorder.state_lookup("l1", "miss")
        if self._closed:
            raise ShuttingDown("wakeproxy is shutting down", sandbox_id=sandbox_id)
        now = self._clock()
        rid = next(self._rids)
        waiter = _Waiter(now, asyncio.get_running_loop().create_future())
        self._waiters[rid] = waiter
        deadline = now + self.settings.hold_timeout
        try:
            self._dispatch(
                sandbox_id,
                RequestArrived(rid, port, deadline, navigation, wake_allowed, token),
            )
            outcome = await waiter.future
        except asyncio.CancelledError:
            if waiter.held and self.phase(sandbox_id) in WAKE_PHASES:
                self._recorder.hold_finished(self._clock() - waiter.arrived)
            self._dispatch(sandbox_id, ClientGone(rid))
            raise
        finally:
            del self._waiters[rid]
            if waiter.timer is not None:
                waiter.timer.cancel()
        # Only a wait for a wake counts as held (metrics, wait headers, access log); a
        # wait for a lookup does not.
        held_for = self._clock() - waiter.arrived if waiter.held and outcome.waited else 0.0
        if held_for:
            self._recorder.hold_finished(held_for)
        wake = self._trigger_wakes.pop(sandbox_id, None) if outcome.triggered else None
        return await self._carry_out(sandbox_id, port, held_for, outcome, wake)

    async def _carry_out(
        self,
        sandbox_id: str,
        port: int,
        held_for: float,
        outcome: _Outcome,
        wake: FinishedWake | None,
    ) -> Acquired:
        match outcome:
            case Forward(info=info, triggered=triggered):
                upstream = await self._upstream(sandbox_id, info, port)
                return Acquired(upstream, info, held_for, triggered, wake)
            case Reject(error=error, message=message, retry_after=retry_after):
                rejection = error(message, sandbox_id=sandbox_id, retry_after=retry_after)
            case ServeWaitingPage(message=message):
                rejection = StillWaking(message, sandbox_id=sandbox_id)
        rejection.held_for = held_for
        rejection.wake_trigger = outcome.triggered
        rejection.wake = wake
        raise rejection

    async def _upstream(self, sandbox_id: str, info: SandboxInfo, port: int) -> Upstream:
        upstream = self._cache.upstream(sandbox_id, info, port)
        if upstream is None:
            upstream = await self._backend.upstream(info, port)
            self._cache.add_upstream(sandbox_id, info, port, upstream)
        return upstream

    def invalidate(self, sandbox_id: str) -> None:
        """Forget what is known: an upstream connect was refused or reset before any byte."""
        self._cache.forget(sandbox_id)
        if isinstance(self._backend, Invalidatable):  # its copies may be as wrong as ours
            self._backend.invalidate(sandbox_id)
        if sandbox_id in self._machines:
            self._dispatch(sandbox_id, Invalidated())

    def observe(self, sandbox_id: str, info: SandboxInfo | None) -> None:
        """Word from elsewhere (e.g. a state-store notification) of a sandbox's new state;
        None means it was killed. Only sandboxes this process knows about are affected."""
        if sandbox_id in self._machines:
            self._dispatch(sandbox_id, BackendReported(info))

    async def wait_ready(self, sandbox_id: str) -> None:
        """Return once no lookup or wake is under way for the sandbox (for a long poll).

        It returns whether the wake succeeded or failed: the page that waits reloads and
        its request gets the real answer. Callers bound the wait with their own timeout.
        """
        machine = self._machines.get(sandbox_id)
        if machine is None or machine.settled:
            return
        future = asyncio.get_running_loop().create_future()
        waiters = self._ready_waiters.setdefault(sandbox_id, set())
        waiters.add(future)
        try:
            await future
        finally:
            waiters.discard(future)
            if not waiters and self._ready_waiters.get(sandbox_id) is waiters:
                del self._ready_waiters[sandbox_id]

    def held(self, sandbox_id: str) -> int:
        machine = self._machines.get(sandbox_id)
        return 0 if machine is None else machine.held

    @property
    def held_total(self) -> int:
        return self._held_total

    def phase(self, sandbox_id: str) -> Phase | None:
        machine = self._machines.get(sandbox_id)
        return None if machine is None else machine.phase

    # -- activity -------------------------------------------------------------------------

    def record_activity(self, sandbox_id: str) -> None:
        """O(1); flushed to `Backend.touch` in the background, at most once a second each."""
        self._activity.record(sandbox_id)

    async def flush_activity(self) -> int:
        """Report pending activity now; return how many sandboxes were reported."""
        return await self._activity.flush()

    # -- decisions ------------------------------------------------------------------------

    def _dispatch(self, sandbox_id: str, event: Event) -> None:
        machine = self._machines.get(sandbox_id)
        if machine is None:
            machine = self._machines[sandbox_id] = SandboxMachine(sandbox_id, self.settings)
        before = machine.held_for_wake
        for decision in machine.handle(event, self._clock(), self._held_total):
            self._apply(sandbox_id, decision)
        if machine.held_for_wake != before:
            self._held_total += machine.held_for_wake - before
            self._recorder.held_changed(self._held_total)
        self._closed_ports.observe(sandbox_id, event)
        finished = self._wake_times.observe(sandbox_id, event, machine.phase, self._clock())
        if finished is not None:
            self._wake_finished(sandbox_id, finished)
        if machine.settled and sandbox_id in self._ready_waiters:
            for future in self._ready_waiters.pop(sandbox_id):
                if not future.done():
                    future.set_result(None)

    def _apply(self, sandbox_id: str, decision: Decision) -> None:
        match decision:
            case Forward() | Reject() | ServeWaitingPage():
                waiter = self._waiters.get(decision.rid)
                if waiter is not None and not waiter.future.done():
                    waiter.future.set_result(decision)
            case Hold(rid=rid, until=until, joined=joined):
                self._hold(sandbox_id, rid, until)
                if joined:
                    self._recorder.joined()
            case Lookup():
                self._spawn(None, lambda: self._work.look_up(sandbox_id))
            case StartResume():
                resume = self._work.resume
                started = self._spawn((sandbox_id, "resume"), lambda: resume(sandbox_id))
                if started and self._wake_times.start(sandbox_id, self._clock()):
                    self._recorder.wake_started()
            case WaitForTransition():
                watch = self._work.watch_transition
                self._spawn((sandbox_id, "watch"), lambda: watch(sandbox_id))
            case ProbePort(port=port, info=info):
                await_port = self._work.await_port
                budget = self.settings.readiness_budget
                if self._closed_ports.closed(sandbox_id, port):
                    budget = min(budget, self.settings.closed_port_budget)
                self._spawn((sandbox_id, port), lambda: await_port(sandbox_id, info, port, budget))
            case Cache(info=info, fresh_until=fresh_until):
                self._cache.set_running(sandbox_id, info, fresh_until)
            case Uncache():
                self._cache.set_not_running(sandbox_id)

    def _wake_finished(self, sandbox_id: str, wake: FinishedWake) -> None:
        backend = self._backend
        followed = isinstance(backend, SharedWakes) and backend.followed(sandbox_id)
        self._recorder.wake_finished(wake.seconds, wake.result, wake.phases, followed=followed)
        self._trigger_wakes[sandbox_id] = wake
        if wake.result != "ok" and not followed:  # the replica that resumed it logs it
            log_failed_wake(sandbox_id, wake)

    def _hold(self, sandbox_id: str, rid: int, until: float) -> None:
        waiter = self._waiters[rid]
        waiter.held = True
        delay = max(0.0, until - self._clock())
        loop = asyncio.get_running_loop()
        waiter.timer = loop.call_later(delay, self._dispatch, sandbox_id, HoldExpired(rid))

    # -- jobs -----------------------------------------------------------------------------

    def _spawn(self, key: tuple[str, str | int] | None, job: _Job) -> bool:
        """Run `job` as an owned task; with a `key`, not while one with that key runs.
        True when it was started."""
        if self._closed or (key is not None and key in self._jobs):
            return False
        task = asyncio.get_running_loop().create_task(job())
        self._tasks.add(task)
        if key is not None:
            self._jobs[key] = task
        task.add_done_callback(functools.partial(self._job_done, key))
        return True

    def _job_done(self, key: tuple[str, str | int] | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if key is not None and self._jobs.get(key) is task:
            del self._jobs[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("wake job %s failed", key, exc_info=exc)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background flush of activity and the sweep of idle entries."""
        self._spawn(("", "housekeeping"), self._housekeeping)  # "": no sandbox has that id

    async def close(self) -> None:
        """Stop every job, answer every held request with 503, flush the activity."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for rid, waiter in self._waiters.items():
            if not waiter.future.done():
                waiter.future.set_result(Reject(rid, ShuttingDown, "wakeproxy is shutting down"))
        for futures in self._ready_waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._machines.clear()
        self._trigger_wakes.clear()
        self._cache.clear()
        if self._held_total:
            self._held_total = 0
            self._recorder.held_changed(0)
        for sandbox_id, wake in self._wake_times.abandon(self._clock()):
            self._recorder.wake_finished(wake.seconds, wake.result, wake.phases)
            log_failed_wake(sandbox_id, wake)
        self._report_hits()
        await self._activity.flush()

    async def __aenter__(self) -> WakeCoordinator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.settings.activity_interval)
            await self._activity.flush()
            self._report_hits()
            self._sweep()

    def _report_hits(self) -> None:
        if self._l1_hits:
            self._recorder.state_lookup("l1", "hit", self._l1_hits)
            self._l1_hits = 0

    def _sweep(self) -> None:
        """Drop machines that hold nothing worth keeping (e.g. expired unknown ids)."""
        now = self._clock()
        idle = [sid for sid, machine in self._machines.items() if machine.disposable(now)]
        for sandbox_id in idle:
            del self._machines[sandbox_id]
            self._trigger_wakes.pop(sandbox_id, None)
            self._cache.forget(sandbox_id)
