"""A stand-in for the real process runtime of the embedded platform.

``FakeRuntime`` implements the `wakeproxy.platform.contracts.Runtime` protocol without
starting any process: it keeps a table of "alive" sandboxes and of frozen ones, records
every call, and lets a test slow down or fail any operation. It exists so that the
manager, the `LocalBackend` and the control-plane API can be tested on their own; the
real runtime is tested against real processes elsewhere.

Controls:
  ``gates[op]``    an `asyncio.Event` the operation (`start`, `freeze`, `thaw`, `kill`)
                   waits for before it completes: a slow runtime without sleeping
  ``errors[op]``   exceptions raised, first to last, by the next calls of `op`
  ``ports``        (sandbox id, in-sandbox port) → a real (host, port) that
                   `open_socket` connects to; anything else is refused
  ``survivors``    after a simulated platform restart (`forget`), the sandboxes that
                   `adopt` finds still alive (None: all that were alive)
Sandboxes can end by themselves: ``end_by_itself(sandbox_id, reason)`` tells the
`on_exit` listeners, as a real runtime does when a sandbox's root process ends.
Observations: ``calls`` ((operation, sandbox id), in order), ``entered[op]`` (set when an
operation begins), ``alive``, ``frozen``, ``specs`` (what `start` was given).
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.platform.contracts import (
    ExitListener,
    ExitReason,
    RuntimeInfo,
    SandboxExit,
    SandboxSpec,
)

AGENT_PORT_WHEN_SHARED = 40_001


class FakeRuntime:
    def __init__(self, *, isolated: bool = True) -> None:
        self.isolated = isolated
        self.calls: list[tuple[str, str]] = []
        self.alive: dict[str, RuntimeInfo] = {}
        self.frozen: set[str] = set()
        self.specs: dict[str, SandboxSpec] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.errors: defaultdict[str, list[Exception]] = defaultdict(list)
        self.entered: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.ports: dict[tuple[str, int], tuple[str, int]] = {}
        self.survivors: set[str] | None = None
        self.exit_listeners: list[ExitListener] = []
        self._pid = 1000

    def count(self, operation: str, sandbox_id: str | None = None) -> int:
        return sum(1 for op, sid in self.calls if op == operation and sandbox_id in (None, sid))

    def forget(self) -> None:
        """The platform restarts: this runtime object stands for the new process, which
        knows nothing until `adopt` is called. Alive sandboxes not in `survivors` die."""
        if self.survivors is not None:
            for sandbox_id in set(self.alive) - self.survivors:
                del self.alive[sandbox_id]
                self.frozen.discard(sandbox_id)
        self.calls.clear()

    async def _step(self, operation: str, sandbox_id: str) -> None:
        self.calls.append((operation, sandbox_id))
        self.entered[operation].set()
        gate = self.gates.get(operation)
        if gate is not None:
            await gate.wait()
        if self.errors[operation]:
            raise self.errors[operation].pop(0)

    # -- the Runtime protocol ------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> RuntimeInfo:
        await self._step("start", spec.sandbox_id)
        self._pid += 1
        agent_port = 49983 if self.isolated else AGENT_PORT_WHEN_SHARED
        warnings = () if self.isolated else ("no network namespace: sharing host networking",)
        info = RuntimeInfo(self._pid, self.isolated, agent_port, warnings)
        self.specs[spec.sandbox_id] = spec
        self.alive[spec.sandbox_id] = info
        return info

    async def freeze(self, sandbox_id: str) -> None:
        await self._step("freeze", sandbox_id)
        if sandbox_id not in self.alive:
            raise ProcessLookupError(f"no sandbox {sandbox_id}")
        self.frozen.add(sandbox_id)

    async def thaw(self, sandbox_id: str) -> None:
        await self._step("thaw", sandbox_id)
        if sandbox_id not in self.alive:
            raise ProcessLookupError(f"no sandbox {sandbox_id}")
        self.frozen.discard(sandbox_id)

    async def kill(self, sandbox_id: str) -> None:
        await self._step("kill", sandbox_id)
        self.alive.pop(sandbox_id, None)
        self.frozen.discard(sandbox_id)

    async def open_socket(self, sandbox_id: str, port: int) -> socket.socket:
        self.calls.append(("open_socket", f"{sandbox_id}:{port}"))
        address = self.ports.get((sandbox_id, port))
        if address is None or sandbox_id not in self.alive:
            raise ConnectionRefusedError(f"nothing listens on port {port} of {sandbox_id}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def adopt(self, spec: SandboxSpec, info: RuntimeInfo) -> bool:
        await self._step("adopt", spec.sandbox_id)
        known = self.alive.get(spec.sandbox_id)
        return known is not None and known.pid == info.pid

    def on_exit(self, listener: ExitListener) -> None:
        self.exit_listeners.append(listener)

    def end_by_itself(self, sandbox_id: str, reason: ExitReason = "signal") -> None:
        """The sandbox's processes end on their own (its kill is still expected)."""
        self.alive.pop(sandbox_id, None)
        self.frozen.discard(sandbox_id)
        for listener in list(self.exit_listeners):
            listener(SandboxExit(sandbox_id, reason, f"ended ({reason})"))


class StateLog:
    """Subscribes to a manager (or anything calling it with `SandboxInfo`) and lets a
    test wait for a sandbox to reach a state, without sleeping."""

    def __init__(self) -> None:
        self.seen: list[SandboxInfo] = []
        self._changed = asyncio.Event()

    def __call__(self, info: SandboxInfo) -> None:
        self.seen.append(info)
        self._changed.set()
        self._changed = asyncio.Event()

    def states(self, sandbox_id: str) -> list[SandboxState]:
        return [info.state for info in self.seen if info.sandbox_id == sandbox_id]

    async def wait_for(self, sandbox_id: str, state: SandboxState, count: int = 1) -> None:
        """Until `sandbox_id` has been reported in `state` `count` times in all."""
        async with asyncio.timeout(5):
            while self.states(sandbox_id).count(state) < count:
                await self._changed.wait()
