"""Interfaces between the parts of the embedded platform.

    api (E2B-compatible REST) ─▶ manager (lifecycle, timers, records)
                                   ─▶ runtime (processes) ─▶ agent (envd, in the sandbox)

The manager owns sandbox records and decides; the runtime only carries out process-level
operations on one sandbox at a time and knows nothing about lifecycles or HTTP.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from wakeproxy.errors import WakeproxyError


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    sandbox_id: str
    root: Path
    """The sandbox's folder under the data dir; `root / "home"` is its /home/user."""
    envs: Mapping[str, str]
    allow_internet: bool = True
    agent_token: str | None = None
    """When set, the agent demands it in `X-Access-Token` (a `secure` sandbox)."""


class SandboxUnsupported(WakeproxyError, ValueError):
    """The spec asks for what this machine cannot give a sandbox (a 400, not a failure
    worth retrying): no internet access where sandboxes must share the host's network."""


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    pid: int
    """The root of the sandbox's process tree (the agent runs in it; with namespaces the
    root is the process that holds them, and the agent runs below it)."""
    isolated_network: bool
    """False when namespaces were unavailable and the sandbox shares host networking."""
    agent_port: int
    """Where the agent listens, seen from inside the sandbox (49983 when isolated)."""
    warnings: tuple[str, ...] = ()
    # What a restarted platform needs to recognise and take back the sandbox's processes
    # (`Runtime.adopt`); plain values so that records can store them as they are.
    start_time: int = 0
    """Start time of `pid` (clock ticks after boot): tells it from a later process that
    reuses the pid. 0: unknown."""
    init_pid: int = 0
    """With namespaces: the sandbox's PID 1 (as seen from the host); else `pid`."""
    init_start_time: int = 0
    home: str = ""
    """The sandbox's home as its processes see it: /home/user, or its real folder."""
    cgroup: str = ""
    """The sandbox's cgroup folder; empty when processes are frozen with signals."""
    freezer: str = ""
    """"cgroup1", "cgroup2" or "signal"."""
    netstack: str = ""
    """"pasta" or "slirp4netns" when attached for outbound traffic, else empty."""
    netstack_pid: int = 0
    netstack_start_time: int = 0
    isolation: str = ""
    """"runc": an isolated container; "none": plain processes of the platform's user
    (trusted code only); "": recorded before this was kept."""
    ends_with_platform: bool = False
    """Started to end with the platform process that started it (not `survive_restart`).
    A later platform that still finds it running ends it instead of taking it back: with
    the cgroup v1 freezer, a paused sandbox cannot act on its parent-death signal until
    it is thawed, so it outlives a platform killed with SIGKILL."""


ExitReason = Literal["exited", "oom", "signal"]


@dataclass(frozen=True, slots=True)
class SandboxExit:
    """A sandbox that ended by itself (not by `Runtime.kill`)."""

    sandbox_id: str
    reason: ExitReason
    """"oom": killed for lack of memory; "signal": its root (or the agent) was killed by
    a signal; "exited": it ended on its own, or how is unknown."""
    detail: str
    """For people: the exit code or the signal's name."""


ExitListener = Callable[[SandboxExit], None]


class Runtime(Protocol):
    async def start(self, spec: SandboxSpec) -> RuntimeInfo:
        """Start the sandbox's agent (and so its process tree); returns once it answers.
        Raises `SandboxUnsupported` for a spec it cannot honour here."""
        ...

    async def freeze(self, sandbox_id: str) -> None:
        """Stop every process of the sandbox from running; memory and sockets stay."""
        ...

    async def thaw(self, sandbox_id: str) -> None: ...

    async def kill(self, sandbox_id: str) -> None:
        """End every process of the sandbox; afterwards none is left."""
        ...

    async def open_socket(self, sandbox_id: str, port: int) -> socket.socket:
        """A TCP socket connected to `port` on the sandbox's loopback (inside its network
        namespace when it has one); raises ConnectionRefusedError when nothing listens."""
        ...

    async def adopt(self, spec: SandboxSpec, info: RuntimeInfo) -> bool:
        """After a platform restart: take back a still-running sandbox; False if it is gone."""
        ...

    def on_exit(self, listener: ExitListener) -> None:
        """Call `listener` once, on the event loop, for each sandbox this runtime runs
        (started or adopted) that ends by itself: noticed as it happens (no slow polling),
        its root reaped. Not called for a sandbox ended by `kill`; the runtime keeps
        whatever is left of it (cgroup, network stack) for the `kill` that the listener's
        owner is expected to make."""
        ...
