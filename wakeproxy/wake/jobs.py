"""The I/O that wake decisions start: look up, resume, watch a transition, await a port.

A job calls the backend or the probe, possibly many times, and reports what happened as
events through `report(sandbox_id, event)`; it changes no state itself. The coordinator
runs each job as an owned task and feeds the events to the sandbox's machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeAlias, TypeVar

from wakeproxy.backends.base import Backend, SandboxInfo, Upstream
from wakeproxy.errors import NotAllowed, NotFound, ProxyError, Unavailable
from wakeproxy.wake.events import (
    BackendReported,
    Event,
    Failure,
    LookupFailed,
    PortFailed,
    PortReady,
    ReadinessExhausted,
    ResumeFailed,
    ResumeSucceeded,
    TransitionTimedOut,
)
from wakeproxy.wake.recorder import Recorder
from wakeproxy.wake.settings import WakeSettings
from wakeproxy.wake.table import READYING, WATCHED, Phase

log = logging.getLogger(__name__)

T = TypeVar("T")
Probe: TypeAlias = Callable[[Upstream], Awaitable[bool]]
"""Try one connect to an upstream; True when it was accepted."""
# A listener on loopback answers a connect in microseconds; a connect that takes this long
# counts as refused and is retried by the readiness loop.
_CONNECT_TIMEOUT = 1.0


async def connect_probe(upstream: Upstream) -> bool:
    """The real `Probe`: open one connection (TCP, unix socket or the upstream's own
    opener) and close it again."""
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            if upstream.opener is not None:
                (await upstream.opener()).close()
                return True
            if upstream.unix_path:
                _, writer = await asyncio.open_unix_connection(upstream.unix_path)
            else:
                _, writer = await asyncio.open_connection(upstream.host, upstream.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):  # it accepted; how the close goes does not matter
        await writer.wait_closed()
    return True


class WakeJobs:
    """The jobs, with what they need: the backend, the probe, the clock and the settings."""

    def __init__(
        self,
        backend: Backend,
        probe: Probe,
        settings: WakeSettings,
        clock: Callable[[], float],
        recorder: Recorder,
        *,
        report: Callable[[str, Event], None],
        phase: Callable[[str], Phase | None],
        upstream: Callable[[str, SandboxInfo, int], Awaitable[Upstream]],
    ) -> None:
        self._backend = backend
        self._probe = probe
        self._settings = settings
        self._clock = clock
        self._recorder = recorder
        self._report = report
        self._phase = phase
        self._upstream = upstream

    async def look_up(self, sandbox_id: str) -> None:
        self._report(sandbox_id, await self._get(sandbox_id))

    async def _get(self, sandbox_id: str) -> BackendReported | LookupFailed:
        event = _lookup_event(await _guarded("backend.get", self._backend.get(sandbox_id)))
        if isinstance(event, LookupFailed):
            result = "error"
        else:
            result = "not_found" if event.info is None else event.info.state.value
        self._recorder.state_lookup("backend", result)
        return event

    async def resume(self, sandbox_id: str) -> None:
        result = await _guarded("backend.resume", self._backend.resume(sandbox_id))
        event: Event
        if isinstance(result, ProxyError):
            event = ResumeFailed(_failure(result), result.message)
        else:
            event = ResumeSucceeded(result)
        self._report(sandbox_id, event)

    async def watch_transition(self, sandbox_id: str) -> None:
        """Poll the backend while a pause, or a resume started elsewhere, runs."""
        settings = self._settings
        deadline = self._clock() + settings.transition_budget
        delays = _backoff(settings.poll_initial_delay, settings.poll_max_delay)
        while self._phase(sandbox_id) in WATCHED:
            if self._clock() >= deadline:
                self._report(sandbox_id, TransitionTimedOut())
                return
            await asyncio.sleep(next(delays))
            event = await self._get(sandbox_id)
            if isinstance(event, BackendReported):  # a failed poll: try again until the budget
                self._report(sandbox_id, event)

    async def await_port(
        self, sandbox_id: str, info: SandboxInfo, port: int, budget: float
    ) -> None:
        """Connect to `port` with fast, backing-off retries until it accepts or `budget`
        seconds are up."""
        upstream = await _guarded("backend.upstream", self._upstream(sandbox_id, info, port))
        if isinstance(upstream, ProxyError):
            self._report(sandbox_id, PortFailed(port, _failure(upstream), upstream.message))
            return
        settings = self._settings
        deadline = self._clock() + budget
        delays = _backoff(settings.readiness_initial_delay, settings.readiness_max_delay)
        while not await self._probe_once(upstream):
            if self._phase(sandbox_id) is not READYING:
                return  # the wake failed or the sandbox went away meanwhile
            if self._clock() >= deadline:
                self._report(sandbox_id, ReadinessExhausted(port))
                return
            await asyncio.sleep(next(delays))
        self._report(sandbox_id, PortReady(port))

    async def _probe_once(self, upstream: Upstream) -> bool:
        try:
            return await self._probe(upstream)
        except Exception:  # a broken probe must not strand the held requests
            log.exception("readiness probe of %s failed", upstream)
            return False


async def _guarded(what: str, call: Awaitable[T]) -> T | ProxyError:
    """The result of a backend call, or the `ProxyError` it raised (a bug becomes a 503)."""
    try:
        return await call
    except ProxyError as exc:
        return exc
    except Exception:
        log.exception("%s failed unexpectedly", what)
        return Unavailable(f"{what} failed")


def _lookup_event(result: SandboxInfo | ProxyError | None) -> BackendReported | LookupFailed:
    if isinstance(result, NotFound):
        return BackendReported(None)
    if isinstance(result, ProxyError):
        return LookupFailed(_failure(result), result.message)
    return BackendReported(result)


def _failure(exc: ProxyError) -> Failure:
    if isinstance(exc, NotFound):
        return Failure.NOT_FOUND
    if isinstance(exc, NotAllowed):
        return Failure.NOT_ALLOWED
    return Failure.TRANSIENT


def _backoff(first: float, most: float) -> Iterator[float]:
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)
