"""Sandbox records and where they are kept: one JSON file per sandbox in the data dir.

A record holds everything needed to describe a sandbox through the API and to take it
back after a restart (its `SandboxSpec` inputs and the runtime's `RuntimeInfo`, every
field of it). Files are
written whole to a temporary name and renamed over the old one, so a reader (or a
restarted platform) sees either the previous record or the new one, never a mix. They
are not fsync'ed: records survive a restart of the process, not a power cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from wakeproxy.backends.base import AGENT_PORT, Lifecycle, SandboxInfo, SandboxState
from wakeproxy.platform.contracts import RuntimeInfo, SandboxSpec
from wakeproxy.platform.control import lifecycle
from wakeproxy.platform.control.lifecycle import Life, Policy

log = logging.getLogger(__name__)

_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """What a create request asks for, already validated."""

    template_id: str
    policy: Policy
    metadata: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, str] = field(default_factory=dict)
    allow_internet: bool | None = None
    secure: bool = True
    allow_public_traffic: bool = True


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    sandbox_id: str
    template_id: str
    started_at: float
    life: Life
    root: Path
    metadata: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, str] = field(default_factory=dict)
    allow_internet: bool | None = None  # None: not chosen explicitly (on by default)
    envd_token: str | None = None  # a `secure` sandbox's agent demands it
    traffic_token: str | None = None  # set when public traffic is not allowed
    runtime: RuntimeInfo | None = None  # None until the runtime has started it

    @property
    def state(self) -> SandboxState:
        return self.life.state

    def spec(self) -> SandboxSpec:
        return SandboxSpec(
            sandbox_id=self.sandbox_id,
            root=self.root,
            envs=dict(self.envs),
            allow_internet=self.allow_internet is not False,
            agent_token=self.envd_token,
        )

    def info(self) -> SandboxInfo:
        """The proxy's view of this sandbox."""
        policy = self.life.policy
        return SandboxInfo(
            sandbox_id=self.sandbox_id,
            state=self.life.state,
            lifecycle=Lifecycle(policy.on_timeout, policy.auto_resume),
            version=self.life.version,
            end_at=self.life.end_at,
            traffic_token=self.traffic_token,
            agent_port=AGENT_PORT,
        )


def new_record(request: CreateRequest, sandbox_id: str, root: Path, now: float) -> SandboxRecord:
    """The record of a sandbox about to start, with fresh access tokens as asked."""
    return SandboxRecord(
        sandbox_id=sandbox_id,
        template_id=request.template_id,
        started_at=now,
        life=lifecycle.start(request.policy, now),
        root=root,
        metadata=dict(request.metadata),
        envs=dict(request.envs),
        allow_internet=request.allow_internet,
        envd_token=secrets.token_urlsafe(24) if request.secure else None,
        traffic_token=None if request.allow_public_traffic else secrets.token_urlsafe(24),
    )


def to_json(record: SandboxRecord) -> dict[str, Any]:
    life, policy, runtime = record.life, record.life.policy, record.runtime
    return {
        "format": _FORMAT,
        "sandboxId": record.sandbox_id,
        "templateId": record.template_id,
        "startedAt": record.started_at,
        "root": str(record.root),
        "state": life.state.value,
        "version": life.version,
        "endAt": life.end_at,
        "policy": {
            "timeout": policy.timeout,
            "onTimeout": policy.on_timeout,
            "autoResume": policy.auto_resume,
            "activityExtends": policy.activity_extends,
        },
        "metadata": dict(record.metadata),
        "envs": dict(record.envs),
        "allowInternet": record.allow_internet,
        "envdToken": record.envd_token,
        "trafficToken": record.traffic_token,
        "runtime": None
        if runtime is None
        else {**asdict(runtime), "warnings": list(runtime.warnings)},
    }


def from_json(data: Mapping[str, Any]) -> SandboxRecord:
    if data.get("format") != _FORMAT:
        raise ValueError(f"unknown record format {data.get('format')!r}")
    p = data["policy"]
    policy = Policy(float(p["timeout"]), p["onTimeout"], p["autoResume"], p["activityExtends"])
    life = Life(SandboxState(data["state"]), int(data["version"]), float(data["endAt"]), policy)
    runtime = None if data["runtime"] is None else _runtime_info(data["runtime"])
    return SandboxRecord(
        sandbox_id=str(data["sandboxId"]),
        template_id=str(data["templateId"]),
        started_at=float(data["startedAt"]),
        life=life,
        root=Path(data["root"]),
        metadata=dict(data["metadata"]),
        envs=dict(data["envs"]),
        allow_internet=data["allowInternet"],
        envd_token=data["envdToken"],
        traffic_token=data["trafficToken"],
        runtime=runtime,
    )


# Records written before every field was kept named these fields in camelCase.
_OLD_NAMES: Final = {"isolatedNetwork": "isolated_network", "agentPort": "agent_port"}


def _runtime_info(data: Mapping[str, Any]) -> RuntimeInfo:
    # Every field the runtime reports is kept as is; fields a newer or older runtime
    # does not know are left out, so records outlive changes to `RuntimeInfo`.
    known = {f.name for f in fields(RuntimeInfo)}
    renamed = {_OLD_NAMES.get(name, name): value for name, value in data.items()}
    values = {name: value for name, value in renamed.items() if name in known}
    values["warnings"] = tuple(values.get("warnings", ()))
    return RuntimeInfo(**values)


class RecordStore:
    """The records folder: `<data dir>/records/<sandbox id>.json`, readable only by us
    (records hold access tokens and environment variables)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.unreadable: list[str] = []
        """Ids (file names) of the records the last `load_all` set aside."""

    def save(self, record: SandboxRecord) -> None:
        path = self._path(record.sandbox_id)
        tmp = path.with_suffix(".tmp")
        data = json.dumps(to_json(record), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def delete(self, sandbox_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(sandbox_id).unlink()

    def load_all(self) -> list[SandboxRecord]:
        """Every readable record; an unreadable file is set aside as `*.broken` (and its
        name listed in `unreadable`)."""
        records = []
        self.unreadable = []
        for path in sorted(self._folder.glob("*.json")):
            try:
                records.append(from_json(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("sandbox record %s is unreadable (%s); set aside", path, exc)
                self.unreadable.append(path.stem)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".broken"))
        return records

    def _path(self, sandbox_id: str) -> Path:
        return self._folder / f"{sandbox_id}.json"
