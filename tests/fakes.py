"""Test doubles shared by the test tiers: a backend, a readiness probe and a clock.

``FakeBackend`` implements the `Backend` protocol over an in-memory table that tests set
up and change (``add``, ``set_state``, ``kill``); it counts calls, and its latency and
failures are controlled with events and queued errors rather than sleeps. It is also
`Watchable`, so a proxy built on it hears of the state changes a test makes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Literal

from wakeproxy.backends.base import (
    Lifecycle,
    SandboxInfo,
    SandboxState,
    StateListener,
    Upstream,
)
from wakeproxy.errors import BackendError, NotFound


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend:
    """An in-memory `Backend`.

    Controls:
      ``resume_gate`` / ``get_gate``: when set to an `asyncio.Event`, `resume` / `get`
        wait for it before answering (a slow backend without sleeping).
      ``resume_errors`` / ``get_errors`` / ``upstream_errors`` / ``touch_errors``: raised,
        first to last, by the next calls.
      ``on_resume``: when set, awaited by a `resume` that is about to succeed, before the
        sandbox is marked running (e.g. ``upstream.accept_connections``, so the port
        comes back the way a thawed process's does).
    Observations: ``get_calls``, ``resume_calls``, ``upstream_calls`` (Counters by id),
    ``states_at_resume`` (the state each `resume` found), ``touched`` (the batches),
    ``resume_started`` (set when a `resume` begins), ``touch_seen`` (set on each `touch`).
    `resume` waits out `pausing`, as the `Backend` contract asks. Listeners registered with
    `watch` hear of every `set_state` and `kill` (None for a kill) unless ``notify=False``.
    """

    def __init__(self) -> None:
        self.sandboxes: dict[str, SandboxInfo] = {}
        self.upstreams: dict[tuple[str, int], Upstream] = {}
        self.get_calls: Counter[str] = Counter()
        self.resume_calls: Counter[str] = Counter()
        self.upstream_calls: Counter[str] = Counter()
        self.states_at_resume: list[SandboxState | None] = []
        self.touched: list[dict[str, float]] = []
        self.resume_gate: asyncio.Event | None = None
        self.get_gate: asyncio.Event | None = None
        self.resume_errors: list[BackendError] = []
        self.get_errors: list[BackendError] = []
        self.upstream_errors: list[BackendError] = []
        self.touch_errors: list[Exception] = []
        self.on_resume: Callable[[str], Awaitable[None]] | None = None
        self.resume_started = asyncio.Event()
        self.touch_seen = asyncio.Event()
        self._changed = asyncio.Event()
        self._listeners: list[StateListener] = []

    # -- set-up -----------------------------------------------------------------------------

    def add(
        self,
        sandbox_id: str,
        state: SandboxState = SandboxState.RUNNING,
        *,
        auto_resume: bool = True,
        on_timeout: Literal["pause", "kill"] = "pause",
    ) -> SandboxInfo:
        info = SandboxInfo(sandbox_id, state, Lifecycle(on_timeout, auto_resume), version=1)
        self.sandboxes[sandbox_id] = info
        return info

    def set_state(
        self, sandbox_id: str, state: SandboxState, *, notify: bool = True
    ) -> SandboxInfo:
        """Move a sandbox to `state`, bumping its version as every transition does.

        `notify=False` keeps the change from the `watch` listeners: a change the proxy
        has not heard of yet.
        """
        old = self.sandboxes[sandbox_id]
        info = self.sandboxes[sandbox_id] = replace(old, state=state, version=old.version + 1)
        self._changed.set()
        self._changed = asyncio.Event()
        if notify:
            for listener in list(self._listeners):
                listener(sandbox_id, None if state is SandboxState.KILLED else info)
        return info

    def kill(self, sandbox_id: str, *, notify: bool = True) -> None:
        self.set_state(sandbox_id, SandboxState.KILLED, notify=notify)

    def address(self, sandbox_id: str, port: int) -> Upstream:
        """Where `port` of the sandbox is reached (by default loopback, same port)."""
        return self.upstreams.get((sandbox_id, port), Upstream("127.0.0.1", port))

    @property
    def total_resumes(self) -> int:
        return sum(self.resume_calls.values())

    # -- the Backend protocol ---------------------------------------------------------------

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        self.get_calls[sandbox_id] += 1
        if self.get_gate is not None:
            await self.get_gate.wait()
        if self.get_errors:
            raise self.get_errors.pop(0)
        info = self.sandboxes.get(sandbox_id)
        return None if info is None or info.state is SandboxState.KILLED else info

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        self.resume_calls[sandbox_id] += 1
        found = self.sandboxes.get(sandbox_id)
        self.states_at_resume.append(None if found is None else found.state)
        self.resume_started.set()
        if self.resume_gate is not None:
            await self.resume_gate.wait()
        if self.resume_errors:
            raise self.resume_errors.pop(0)
        while (info := self.sandboxes.get(sandbox_id)) and info.state is SandboxState.PAUSING:
            await self._changed.wait()
        if info is None or info.state is SandboxState.KILLED:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        if info.state is SandboxState.RUNNING:
            return info
        if self.on_resume is not None:
            await self.on_resume(sandbox_id)
        return self.set_state(sandbox_id, SandboxState.RUNNING)

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        self.upstream_calls[info.sandbox_id] += 1
        if self.upstream_errors:
            raise self.upstream_errors.pop(0)
        return self.address(info.sandbox_id, port)

    async def touch(self, activity: Mapping[str, float]) -> None:
        self.touch_seen.set()
        if self.touch_errors:
            raise self.touch_errors.pop(0)
        self.touched.append(dict(activity))

    # -- Watchable --------------------------------------------------------------------------

    def watch(self, listener: StateListener) -> None:
        self._listeners.append(listener)


class FakeProbe:
    """A readiness probe: refuses the first `refusals` connects, then accepts.

    ``refusals=None`` refuses forever. With a `clock`, each connect advances it by `step`
    seconds, so a readiness budget runs out without waiting for it.
    """

    def __init__(
        self, refusals: int | None = 0, *, clock: FakeClock | None = None, step: float = 0.0
    ) -> None:
        self.refusals = refusals
        self.clock = clock
        self.step = step
        self.calls: list[Upstream] = []

    async def __call__(self, upstream: Upstream) -> bool:
        self.calls.append(upstream)
        if self.clock is not None:
            self.clock.advance(self.step)
        return self.refusals is not None and len(self.calls) > self.refusals
