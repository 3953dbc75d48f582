"""The `Backend` contract: the proxy's one view of the platform that runs sandboxes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

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
    agent_token: str | None = None  # a secure sandbox's envd access token (X-Access-Token)


@dataclass(frozen=True, slots=True)
class SignedFile:
    """A signed `/files` URL's grant: what the SDKs sign with a sandbox's envd token."""

    path: str
    operation: str
    """`read` (GET) or `write` (POST)."""
    username: str
    signature: str
    expiration: str | None

    def signed_with(self, token: str) -> bool:
        """Whether `token` made the signature (E2B's v1 scheme; constant-time compare)."""
        parts = [self.path, self.operation, self.username, token]
        if self.expiration is not None:
            parts.append(self.expiration)
        digest = hashlib.sha256(":".join(parts).encode()).digest()
        expected = "v1_" + base64.b64encode(digest).decode("ascii").rstrip("=")
        return hmac.compare_digest(expected.encode(), self.signature.encode())


@runtime_checkable
class SignedFileLookup(Protocol):
    """Offered by a backend that knows its sandboxes' envd access tokens (the embedded
    platform): the sandbox whose token signed a file URL, or None."""

    def sandbox_for_signed_file(self, grant: SignedFile) -> str | None: ...


# Connects to one port of one sandbox and hands over the connected socket.
SocketOpener = Callable[[], Awaitable[socket.socket]]


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one port of one sandbox is reached: TCP host and port, a unix socket, or
    an `opener` that returns an already connected socket.

    When `opener` is set, it is the only way in: `host` and `port` then only name the
    target in logs (a sandbox with its own network namespace has no address the proxy
    could dial). The opener raises `ConnectionRefusedError` (an `OSError`) when nothing
    accepts on the port. It takes no part in equality or hashing.
    """

    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None
    opener: SocketOpener | None = field(default=None, compare=False, repr=False)
    _hash: int = field(init=False, default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The pool looks its links up by upstream twice per request: the hash of the
        # compared fields is computed once, not from a new tuple each time.
        object.__setattr__(self, "_hash", hash((self.host, self.port, self.unix_path)))

    def __hash__(self) -> int:
        return self._hash

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


StateListener = Callable[[str, SandboxInfo | None], None]


@runtime_checkable
class Watchable(Protocol):
    """A backend that tells its listeners about every state change (None: gone)."""

    def watch(self, listener: StateListener) -> None: ...


@runtime_checkable
class Invalidatable(Protocol):
    """A backend that keeps copies of state (e.g. shared with other replicas) and must
    be told when the proxy found its view of a sandbox wrong (a refused connect)."""

    def invalidate(self, sandbox_id: str) -> None: ...


class Observer(Protocol):
    def observe(self, sandbox_id: str, info: SandboxInfo | None) -> None: ...


def watch_backend(backend: Backend, observer: Observer) -> None:
    """Feed a watchable backend's state changes to `observer`, so cached state follows
    pauses and kills made elsewhere (a WebSocket left open across a pause relies on it)."""
    if isinstance(backend, Watchable):
        backend.watch(observer.observe)


@runtime_checkable
class SharedWakes(Protocol):
    """A backend shared by replicas, where one replica's resume serves all of them."""

    def followed(self, sandbox_id: str) -> bool:
        """True when this replica's last wake of the sandbox waited for another's resume
        (so this replica must not count it as a resume it started)."""
        ...


class TurnStore(Protocol):
    """What a backend that enforces timeouts itself needs of the replicas' shared state
    (a `wakeproxy.state.shared.StateStore` has it): whose turn it is, and when the cluster
    last served a sandbox."""

    @property
    def shared(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    async def acquire(self, name: str, ttl: float) -> object | None:
        """A lease on `name` for `ttl` seconds, or None when another replica holds it."""
        ...

    async def last_activity(self, sandbox_id: str) -> float | None: ...


@runtime_checkable
class KeepsTimeouts(Protocol):
    """A backend with no control plane of its own to time sandboxes out (the docker
    backend): the proxies do it, taking turns through the store they share."""

    def keep_timeouts(self, store: TurnStore) -> None: ...
