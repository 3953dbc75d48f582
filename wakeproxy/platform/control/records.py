"""Sandbox records and where they are kept: one JSON file per sandbox in the data dir.

A record holds everything needed to describe a sandbox through the API and to take it
back after a restart (its `SandboxSpec` inputs and the runtime's `RuntimeInfo`, every
field of it). Files are written whole to a temporary name and renamed over the old one,
so a reader (or a restarted platform) sees either the previous record or the new one,
never a mix. They are not fsync'ed: records survive a restart of the process, not a
power cut.

A full disk must not stop the sandboxes that exist from pausing, resuming and ending:
the store keeps a reserve (`records.reserve` beside the records folder, space allocated
up front) and, when a record of an existing sandbox meets ENOSPC, gives back a slice of
it and writes again. A new sandbox's first record never draws on it (a create on a full
disk is refused). The reserve is refilled as soon as space is back. A record that still
cannot be written raises `RecordNotWritten` (`NoSpace` for a full disk), and the
temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from wakeproxy.backends.base import AGENT_PORT, Lifecycle, SandboxInfo, SandboxState
from wakeproxy.errors import Unavailable
from wakeproxy.platform.contracts import RuntimeInfo, SandboxSpec
from wakeproxy.platform.control import lifecycle
from wakeproxy.platform.control.lifecycle import Life, Policy

log = logging.getLogger(__name__)

_FORMAT: Final = 1
RESERVE_BYTES: Final = 256 * 1024
"""Room for a few hundred record writes on a full disk (a record is 1-2 KiB)."""
_RESERVE_SLICE: Final = 32 * 1024
_NO_SPACE_ERRNOS: Final = (errno.ENOSPC, errno.EDQUOT)


class RecordNotWritten(Unavailable):
    """A sandbox record could not be written: the transition that needed it is not done
    (the API answers 503, the proxy as for any unavailable backend)."""


class NoSpace(RecordNotWritten):
    """The data dir is full (the API answers 507, as E2B does for a full disk)."""


def no_space(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a full disk or an exhausted quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
            agent_token=self.envd_token,
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

    def __init__(self, folder: Path, reserve: int = RESERVE_BYTES) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.unreadable: list[str] = []
        """Ids (file names) of the records the last `load_all` set aside."""
        self._reserve = _Reserve(folder.parent / "records.reserve", reserve)
        self._reserve.refill()

    def save(self, record: SandboxRecord, *, reserve: bool = True) -> None:
        """Write `record` whole; on a full disk draw on the reserve when `reserve`.
        Raises `NoSpace` or `RecordNotWritten`."""
        path = self._path(record.sandbox_id)
        data = json.dumps(to_json(record), separators=(",", ":")).encode()
        try:
            _write_whole(path, data)
        except OSError as exc:
            if not (reserve and no_space(exc) and self._reserve.release()):
                raise _not_written(record.sandbox_id, exc) from exc
            log.warning(
                "the data dir is full: the record of sandbox %s is written from the "
                "platform's reserve (%d KiB left); free space in %s",
                record.sandbox_id,
                self._reserve.size // 1024,
                self._folder.parent,
            )
            try:
                _write_whole(path, data)
            except OSError as again:
                raise _not_written(record.sandbox_id, again) from again
        else:
            self._reserve.refill()

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


def _write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _not_written(sandbox_id: str, exc: OSError) -> RecordNotWritten:
    if no_space(exc):
        return NoSpace(
            f"not enough disk space: the platform's data dir is full and the record of "
            f"sandbox {sandbox_id} cannot be written ({exc.strerror}); free space and retry",
            sandbox_id=sandbox_id,
        )
    return RecordNotWritten(
        f"the record of sandbox {sandbox_id} cannot be written: {exc}", sandbox_id=sandbox_id
    )


class _Reserve:
    """Space held back in a file so that records can still be written on a full disk."""

    def __init__(self, path: Path, target: int) -> None:
        self._path = path
        self._target = target
        try:
            self.size = path.stat().st_blocks * 512
        except FileNotFoundError:
            self.size = 0

    def refill(self) -> None:
        if self.size >= self._target:
            return
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self._target)
            finally:
                os.close(fd)
        except OSError as exc:
            if not no_space(exc):
                log.warning("cannot set space aside for records in %s: %s", self._path, exc)
            with contextlib.suppress(OSError):  # a failed fallocate may have kept some
                self.size = self._path.stat().st_blocks * 512
            return
        if self.size == 0 or self._target - self.size > _RESERVE_SLICE:
            log.info("records: %d KiB set aside for a full disk", self._target // 1024)
        self.size = self._target

    def release(self) -> bool:
        """Give back a slice; False when nothing is left."""
        if self.size <= 0:
            return False
        self.size = max(0, self.size - _RESERVE_SLICE)
        try:
            os.truncate(self._path, self.size)
        except OSError as exc:
            log.warning("cannot give back reserved space in %s: %s", self._path, exc)
            return False
        return True
