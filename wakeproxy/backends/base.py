"""The `Backend` contract: the proxy's one view of the platform that runs sandboxes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

# E2B's in-sandbox agent (envd) listens here; the traffic token never guards it.
AGENT_PORT = 49983


class SandboxState(StrEnum):
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class Lifecycle:
    on_timeout: Literal["pause", "kill"] = "kill"
    auto_resume: bool = False


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """What the proxy needs to know about one sandbox.

    `version` changes on every state transition, so a cache can tell a stale record
    from a newer one without comparing clocks.
    """

    sandbox_id: str
    state: SandboxState
    lifecycle: Lifecycle = Lifecycle()
    version: int = 0
    end_at: float | None = None
    traffic_token: str | None = None  # None: public traffic allowed
    agent_port: int = AGENT_PORT


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one port of one sandbox is reached: TCP host and port, or a unix socket."""

    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


class Backend(Protocol):
    """The platform that runs sandboxes, as the proxy sees it.

    Implementations raise only `wakeproxy.errors.BackendError` subclasses.
    """

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        """Current state, or None when the sandbox is unknown or killed."""
        ...

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        """Resume a paused sandbox; idempotent, and waits out a pause in progress."""
        ...

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        """Where `port` of a running sandbox is reached."""
        ...

    async def touch(self, activity: Mapping[str, float]) -> None:
        """Record last-activity times (sandbox id → epoch seconds), batched."""
        ...
