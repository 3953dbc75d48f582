"""What the state store keeps and sends: versioned sandbox records, notices and leases.

A `Record` is one sandbox's state as some replica (or the control plane) last learned it
from the backend, with the backend's version. A store keeps the record with the highest
version and refuses older ones, so a slow writer can never put back a state that a
newer one replaced. A tombstone (`info` None: unknown or killed) carries
`KILLED_VERSION`, above every real version, because a kill is final.

Notices go to every replica over the store's channel: `StateChanged` when a record got
newer, `WakeFailed` when the replica that held a sandbox's wake lease could not resume
it (so the replicas waiting for that wake answer at once instead of waiting it out).
Both are JSON on the wire; `encode_notice` and `decode_notice` are the one codec.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from wakeproxy.backends.base import Lifecycle, SandboxInfo, SandboxState
from wakeproxy.errors import (
    BackendError,
    Conflict,
    LimitExceeded,
    NotAllowed,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

KILLED_VERSION: Final = 2**53  # the largest integer a JSON number or a Lua number holds exactly
ACTIVITY_KEPT: Final = 86_400.0  # seconds the last-activity set remembers an idle sandbox

_SETTLED: Final = frozenset({SandboxState.RUNNING, SandboxState.PAUSED})
_ERRORS: Final[dict[str, type[BackendError]]] = {
    kind.__name__: kind for kind in (NotFound, NotAllowed, Conflict, Unavailable, LimitExceeded)
}


@dataclass(frozen=True, slots=True)
class Record:
    sandbox_id: str
    version: int
    info: SandboxInfo | None  # None: unknown or killed

    @classmethod
    def of(cls, sandbox_id: str, info: SandboxInfo | None) -> Record:
        if info is None or info.state is SandboxState.KILLED:
            return cls(sandbox_id, KILLED_VERSION, None)
        return cls(sandbox_id, info.version, info)

    @property
    def settled(self) -> bool:
        """Running, paused or gone: a state that lasts. Pausing and resuming do not, so a
        reader asks the backend instead of trusting a copy of them."""
        return self.info is None or self.info.state in _SETTLED

    @property
    def running(self) -> bool:
        return self.info is not None and self.info.state is SandboxState.RUNNING


@dataclass(frozen=True, slots=True)
class StateChanged:
    origin: str  # the replica that wrote it, so it can skip its own notices
    record: Record


@dataclass(frozen=True, slots=True)
class WakeFailed:
    origin: str
    sandbox_id: str
    error: type[BackendError]
    message: str


Notice: TypeAlias = StateChanged | WakeFailed


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: only the holder of `token` may renew or release `name`."""

    name: str
    token: str


# -- the wire format --------------------------------------------------------------------------


def info_to_json(info: SandboxInfo | None) -> Any:
    if info is None:
        return None
    return {
        "state": info.state.value,
        "onTimeout": info.lifecycle.on_timeout,
        "autoResume": info.lifecycle.auto_resume,
        "version": info.version,
        "endAt": info.end_at,
        "trafficToken": info.traffic_token,
        "agentPort": info.agent_port,
        "agentToken": info.agent_token,
    }


def info_from_json(sandbox_id: str, data: Any) -> SandboxInfo | None:
    """The inverse of `info_to_json`; ValueError (or KeyError, TypeError) when malformed."""
    if data is None:
        return None
    on_timeout: Literal["pause", "kill"] = "pause" if data["onTimeout"] == "pause" else "kill"
    end_at = data.get("endAt")
    return SandboxInfo(
        sandbox_id=sandbox_id,
        state=SandboxState(data["state"]),
        lifecycle=Lifecycle(on_timeout, bool(data["autoResume"])),
        version=int(data["version"]),
        end_at=None if end_at is None else float(end_at),
        traffic_token=data.get("trafficToken"),
        agent_port=int(data["agentPort"]),
        agent_token=data.get("agentToken"),
    )


def record_to_json(record: Record) -> str:
    return json.dumps(info_to_json(record.info), separators=(",", ":"))


def record_from_json(sandbox_id: str, version: int, text: str | bytes) -> Record:
    return Record(sandbox_id, version, info_from_json(sandbox_id, json.loads(text)))


def encode_notice(notice: Notice) -> str:
    data: dict[str, Any]
    match notice:
        case StateChanged(origin=origin, record=record):
            data = {
                "o": origin,
                "t": "state",
                "id": record.sandbox_id,
                "v": record.version,
                "info": info_to_json(record.info),
            }
        case WakeFailed(origin=origin, sandbox_id=sandbox_id, error=error, message=message):
            data = {
                "o": origin,
                "t": "wake_failed",
                "id": sandbox_id,
                "error": error.__name__,
                "message": message,
            }
    return json.dumps(data, separators=(",", ":"))


def decode_notice(text: str | bytes) -> Notice | None:
    """The notice in `text`, or None (logged) when it is not one this version understands."""
    try:
        data = json.loads(text)
        sandbox_id = str(data["id"])
        if data["t"] == "state":
            info = info_from_json(sandbox_id, data["info"])
            return StateChanged(str(data["o"]), Record(sandbox_id, int(data["v"]), info))
        if data["t"] == "wake_failed":
            error = _ERRORS.get(data["error"], Unavailable)
            return WakeFailed(str(data["o"]), sandbox_id, error, str(data["message"]))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring a malformed state notice: %s", exc)
        return None
    log.warning("ignoring a state notice of unknown type %r", data.get("t"))
    return None
