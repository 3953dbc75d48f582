"""`ProcessRuntime`: sandboxes as plain process trees on this machine, with no namespaces
(`platform.isolation = "none"`, for trusted code; `RuncRuntime` in `containers` is the
isolated default).

A sandbox's processes, from the host's point of view (see `launch` for the root's layers):

    this process
     └─ root: sandbox_init.py (a child subreaper)
         └─ agent (envd-compatible)  ─▶ whatever the user runs

All of them are in the sandbox's cgroup, created before the root starts. The agent
listens on a free host port (the E2B agent port maps to it) and HOME is the sandbox's real
folder; sandboxes share the host's network.

Lifetime: by default every sandbox dies with this process (the root carries
PR_SET_PDEATHSIG, and the init then ends its tree). With `survive_restart=True` they
outlive it, and a restarted platform takes them back with `adopt` (or ends them with
`kill`, which also finds processes it has no handle on, by cgroup and by a marker in
their environment). Processes are started on the event loop's thread: the parent-death
signal follows the thread that started a process, so that thread must live as long as
the platform.

Errors (all `WakeproxyError`s):
    SandboxStartError       the agent died or did not answer /health in time (its output)
    SandboxUnsupported      no internet access asked for (sandboxes share the host's
                            network, so there is nothing to take away)
    SandboxNotRunning       freeze/thaw of a sandbox this runtime does not run
    FreezeError             processes would not stop, or end, in time
`open_socket` raises ConnectionRefusedError when nothing listens or the sandbox is not
running here, and TimeoutError when the connection is not made in `connect_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from wakeproxy.backends.base import AGENT_PORT
from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.contracts import (
    ExitListener,
    RuntimeInfo,
    SandboxExit,
    SandboxSpec,
    SandboxUnsupported,
)
from wakeproxy.platform.runtime import capabilities, cgroups, exitwatch, launch, sockets, starting
from wakeproxy.platform.runtime.capabilities import Capabilities
from wakeproxy.platform.runtime.freezer import FreezeError
from wakeproxy.platform.runtime.health import agent_is_healthy
from wakeproxy.platform.runtime.sandbox import Sandbox, end_leftovers, reattach
from wakeproxy.platform.runtime.starting import SandboxStartError, Settings

log = logging.getLogger(__name__)

__all__ = ["FreezeError", "ProcessRuntime", "SandboxNotRunning", "SandboxStartError"]

_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class SandboxNotRunning(WakeproxyError, LookupError):
    """This runtime does not run that sandbox (never started, killed, or not adopted)."""


class ProcessRuntime:
    """Runs each sandbox as a process tree on this machine; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        agent_command: Sequence[str] | None = None,
        *,
        freezer: str = "auto",
        survive_restart: bool = False,
        start_timeout: float = 20.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """`agent_command`: the agent, to which `--port P --home H` is added (default:
        `python -m wakeproxy.platform.agent`). `freezer`: "auto", "cgroup1", "cgroup2" or
        "signal"."""
        self._freezer = freezer
        key = capabilities.runtime_key(Path(data_dir))
        self._settings = Settings(
            data_dir=Path(data_dir),
            agent_command=tuple(agent_command or launch.AGENT_COMMAND),
            marker_prefix=f"{key}/",
            die_with_platform=not survive_restart,
            start_timeout=start_timeout,
        )
        self._key = key
        self._connect_timeout = connect_timeout
        self._caps: Capabilities | None = None
        self._detecting = asyncio.Lock()
        self._sandboxes: dict[str, Sandbox] = {}
        self._starting: set[str] = set()
        self._watches: dict[str, exitwatch.ExitWatch] = {}
        self._exit_listeners: list[ExitListener] = []

    async def capabilities(self) -> Capabilities:
        """What this machine allows, found out on first use by trying, then remembered
        (and its warnings logged once)."""
        async with self._detecting:
            if self._caps is None:
                self._caps = await capabilities.detect(self._freezer, self._key)
            return self._caps

    # -- Runtime protocol -------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> RuntimeInfo:
        """Start the sandbox; returns once its agent answers GET /health."""
        caps = await self.capabilities()
        sandbox_id = checked_id(spec.sandbox_id)
        if not spec.allow_internet:
            # Sharing the host's network would grant what the sandbox was to be denied.
            raise SandboxUnsupported(
                "allow_internet_access=false needs a network namespace for the sandbox, "
                "and plain-process sandboxes (isolation none) have none: they share the "
                "host's network"
            )
        if sandbox_id in self._sandboxes or sandbox_id in self._starting:
            raise WakeproxyError(f"sandbox {sandbox_id} is already running")
        self._starting.add(sandbox_id)
        try:
            await self._end_leftovers(sandbox_id)
            (spec.root / "home").mkdir(parents=True, exist_ok=True)
            sandbox = starting.launch_root(spec, caps, self._settings)
            try:
                await self._wait_healthy(sandbox, spec.agent_token)
            except BaseException:
                await sandbox.end()
                raise
        finally:
            self._starting.discard(sandbox_id)
        self._hold(sandbox_id, sandbox)
        return sandbox.info

    async def freeze(self, sandbox_id: str) -> None:
        await self._get(sandbox_id).group.freeze()

    async def thaw(self, sandbox_id: str) -> None:
        await self._get(sandbox_id).group.thaw()

    async def kill(self, sandbox_id: str) -> None:
        """End every process of the sandbox and remove its cgroup; afterwards none is left.
        Also ends what is left of a sandbox this runtime has no handle on (a start that
        never finished, a platform that crashed). Killing twice is fine."""
        sandbox = self._sandboxes.pop(checked_id(sandbox_id), None)
        if (watch := self._watches.pop(sandbox_id, None)) is not None:
            watch.cancel()
        if sandbox is not None:
            await sandbox.end()
        await self._end_leftovers(sandbox_id)

    async def open_socket(self, sandbox_id: str, port: int) -> socket.socket:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise ConnectionRefusedError(f"sandbox {sandbox_id} is not running")
        if port == AGENT_PORT:
            port = sandbox.info.agent_port
        async with asyncio.timeout(self._connect_timeout):
            return await sockets.connect(sockets.host_socket(), port)

    async def probe_port(self, sandbox_id: str, port: int) -> bool:
        """Whether something accepts connections on `port` in the sandbox (connects and
        closes at once, for readiness checks)."""
        try:
            sock = await self.open_socket(sandbox_id, port)
        except (OSError, TimeoutError):
            return False
        sock.close()
        return True

    async def adopt(self, spec: SandboxSpec, info: RuntimeInfo) -> bool:
        """Take back a sandbox started by an earlier platform process (its root still runs
        and carries this data dir's marker for this sandbox). When it is gone, whatever
        is left of it is ended and the answer is False."""
        caps = await self.capabilities()
        sandbox_id = checked_id(spec.sandbox_id)
        if sandbox_id in self._sandboxes:
            return True
        marker = self._settings.marker(sandbox_id)
        sandbox = reattach(info, marker, caps.hierarchy)
        if sandbox is None:
            await self._end_leftovers(sandbox_id)
            return False
        self._hold(sandbox_id, sandbox)
        return True

    def on_exit(self, listener: ExitListener) -> None:
        """`listener` hears of every sandbox whose root ends by itself (its init with the
        agent, or the whole tree killed from outside); see `Runtime.on_exit`."""
        self._exit_listeners.append(listener)

    # -- beyond the protocol ----------------------------------------------------------------

    def running(self, sandbox_id: str) -> bool:
        """Whether the sandbox's root process is still there (it may be frozen)."""
        sandbox = self._sandboxes.get(sandbox_id)
        return sandbox is not None and sandbox.root.alive()

    async def close(self) -> None:
        """Kill every sandbox this runtime started or adopted, then release its resources
        (platform shutdown when sandboxes are not to be adopted later)."""
        results = await asyncio.gather(
            *(self.kill(sandbox_id) for sandbox_id in list(self._sandboxes)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("ending a sandbox at shutdown failed: %s", result)
        self.detach()

    def detach(self) -> None:
        """Forget every sandbox and release this runtime's resources, leaving the processes
        as they are (for a restarted platform to adopt; see `survive_restart`)."""
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        self._sandboxes.clear()
        if self._caps is not None and self._caps.hierarchy is not None:
            cgroups.remove_base(self._caps.hierarchy)

    # -- helpers ----------------------------------------------------------------------------

    def _hold(self, sandbox_id: str, sandbox: Sandbox) -> None:
        self._sandboxes[sandbox_id] = sandbox
        root = sandbox.root
        self._watches[sandbox_id] = exitwatch.ExitWatch(
            root.pid, root.start_time, lambda status: self._exited(sandbox_id, sandbox, status)
        )

    def _exited(self, sandbox_id: str, sandbox: Sandbox, status: exitwatch.Status) -> None:
        # The sandbox stays held until the listener's owner kills it: that ends what its
        # root leaves behind (processes that escaped the init's tree) and removes its
        # cgroup.
        if self._sandboxes.get(sandbox_id) is not sandbox:
            return
        self._watches.pop(sandbox_id, None)
        reason, detail = exitwatch.describe(status, exitwatch.oom_kills(sandbox.info.cgroup))
        ended = SandboxExit(sandbox_id, reason, detail)
        for listener in list(self._exit_listeners):
            try:
                listener(ended)
            except Exception:
                log.exception("a sandbox exit listener failed")

    async def _wait_healthy(self, sandbox: Sandbox, token: str | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.start_timeout
        while True:
            if not sandbox.root.alive():
                raise SandboxStartError(starting.failure("exited", sandbox))
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    sock = await sockets.connect(sockets.host_socket(), sandbox.info.agent_port)
                if await agent_is_healthy(sock, token):
                    return
            if loop.time() >= deadline:
                what = f"did not answer GET /health within {self._settings.start_timeout:g} s"
                raise SandboxStartError(starting.failure(what, sandbox))
            await asyncio.sleep(0.01)

    async def _end_leftovers(self, sandbox_id: str) -> None:
        caps = await self.capabilities()
        hierarchy = caps.hierarchy
        group = None if hierarchy is None else hierarchy.group(sandbox_id)
        kind = "" if hierarchy is None else hierarchy.kind
        await end_leftovers(self._settings.marker(sandbox_id), group, kind)

    def _get(self, sandbox_id: str) -> Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotRunning(f"sandbox {sandbox_id} is not running in this runtime")
        return sandbox


def checked_id(sandbox_id: str) -> str:
    # The id names a cgroup folder: nothing that could climb out of it.
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise ValueError(f"sandbox id {sandbox_id!r} is not usable as a folder name")
    return sandbox_id
