"""E2B's control-plane JSON: request bodies in, `Sandbox` / `SandboxDetail` /
`ListedSandbox` out, as the generated OpenAPI clients of the `e2b` SDKs read them.

Create bodies (`NewSandbox`, `NewSandboxV2`) carry the lifecycle as flat fields:
`autoPause: bool` (the SDKs' `on_timeout="pause"`) and `autoResume: {"enabled": bool}`
(some 2.x releases sent `{"policy": "any" | "off"}`, also accepted). A nested
`lifecycle: {"onTimeout", "autoResume"}`, the shape `GET /sandboxes/{id}` answers with,
is accepted too. Beyond E2B, `activityExtendsTimeout: bool` in the body, or the metadata
key `wakeproxy.activityExtendsTimeout` = `"true"`/`"false"`, opts a sandbox in or out of
"activity through the proxy extends the timeout".

Responses carry every field the SDKs' models require: `templateID`, `sandboxID`,
`clientID`, `envdVersion` (all), plus `startedAt`, `endAt`, `cpuCount`, `memoryMB`,
`diskSizeMB`, `state` (detail and list). `state` is only ever `running` or `paused`
(the SDKs reject anything else): a pausing sandbox shows `paused`, a resuming one
`running`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from wakeproxy.backends.base import SandboxState
from wakeproxy.discovery import metrics_endpoint
from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.agent import ENVD_VERSION
from wakeproxy.platform.control.lifecycle import OnTimeout, Policy, check_timeout
from wakeproxy.platform.control.records import CreateRequest, SandboxRecord

ACTIVITY_EXTENDS_KEY: Final = "wakeproxy.activityExtendsTimeout"
NETWORK_KEY: Final = "wakeproxy.network"  # in metadata when a sandbox shares host networking
ISOLATION_KEY: Final = "wakeproxy.isolation"  # in metadata: "none" for an unisolated sandbox
CLIENT_ID: Final = "wakeproxy"

_UNSUPPORTED_NETWORK = ("allowOut", "denyOut", "rules", "egressProxy")


class BadRequest(WakeproxyError, ValueError):
    """A request body or query the API cannot accept (400)."""


def _memory_mb() -> int:
    try:
        return max(128, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError):
        return 1024


def _disk_mb(path: Path) -> int:
    try:
        return shutil.disk_usage(path).total // 2**20
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What the API says about the platform. `domain` is what the SDKs build preview
    hosts from (`<port>-<id>.<domain>`); `api_key` None accepts any key."""

    domain: str = "localhost:8080"
    api_key: str | None = None
    envd_version: str = ENVD_VERSION
    templates: frozenset[str] = frozenset({"base"})
    max_timeout: float = 86_400.0
    activity_extends_timeout: bool = False
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_mb: int = field(default_factory=_memory_mb)
    disk_size_mb: int = field(default_factory=lambda: _disk_mb(Path.cwd()))


# -- requests --------------------------------------------------------------------------------


def parse_create(body: Any, settings: ApiSettings, default_timeout: float) -> CreateRequest:
    data = _object(body, "request body")
    template = data.get("templateID")
    if not isinstance(template, str) or not template:
        raise BadRequest("templateID is required")
    if template not in settings.templates:
        offered = ", ".join(sorted(settings.templates))
        raise BadRequest(f"template {template!r} is not available here (offered: {offered})")
    for name in ("mcp", "iam", "volumeMounts"):
        if data.get(name):
            raise BadRequest(f"{name} is not supported by the embedded platform")
    network = _object(data.get("network") or {}, "network")
    for name in _UNSUPPORTED_NETWORK:
        if network.get(name):
            raise BadRequest(f"network.{name} is not supported by the embedded platform")
    metadata = _strings(data.get("metadata"), "metadata")
    try:
        metrics_endpoint(metadata)  # a declared exporter must be one Prometheus can scrape
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    timeout = data.get("timeout")
    timeout = default_timeout if timeout is None else check_timeout(timeout, settings.max_timeout)
    on_timeout, auto_resume = _lifecycle(data)
    extends = _activity_extends(data, metadata, settings.activity_extends_timeout)
    allow_public = network.get("allowPublicTraffic")
    return CreateRequest(
        template_id=template,
        policy=Policy(timeout, on_timeout, auto_resume, extends),
        metadata=metadata,
        envs=_strings(data.get("envVars"), "envVars"),
        allow_internet=_optional_bool(data, "allow_internet_access"),
        secure=_optional_bool(data, "secure") is not False,
        allow_public_traffic=allow_public is not False,
    )


def parse_timeout(body: Any, name: str, default: float | None, limit: float) -> float:
    """`body[name]` in seconds; `default` when absent (None: it is required)."""
    value = _object(body or {}, "request body").get(name)
    if value is None:
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    return check_timeout(value, limit)


def _lifecycle(data: Mapping[str, Any]) -> tuple[OnTimeout, bool]:
    nested = _object(data.get("lifecycle") or {}, "lifecycle")
    on_timeout = nested.get("onTimeout")
    if on_timeout is None:
        on_timeout = "pause" if _optional_bool(data, "autoPause") else "kill"
    if on_timeout not in ("pause", "kill"):
        raise BadRequest(f"lifecycle.onTimeout must be 'pause' or 'kill', not {on_timeout!r}")
    auto_resume = nested.get("autoResume", data.get("autoResume"))
    if isinstance(auto_resume, Mapping):
        enabled = auto_resume.get("enabled")
        policy = auto_resume.get("policy")
        auto_resume = enabled if enabled is not None else (policy == "any" if policy else None)
    if auto_resume is not None and not isinstance(auto_resume, bool):
        raise BadRequest(f"autoResume must be {{'enabled': true|false}}, not {auto_resume!r}")
    return ("pause" if on_timeout == "pause" else "kill"), bool(auto_resume)


def _activity_extends(data: Mapping[str, Any], metadata: Mapping[str, str], default: bool) -> bool:
    chosen = _optional_bool(data, "activityExtendsTimeout")
    if chosen is None and ACTIVITY_EXTENDS_KEY in metadata:
        text = metadata[ACTIVITY_EXTENDS_KEY].strip().lower()
        if text not in ("true", "false"):
            raise BadRequest(f"metadata {ACTIVITY_EXTENDS_KEY} must be 'true' or 'false'")
        chosen = text == "true"
    return default if chosen is None else chosen


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _strings(value: Any, what: str) -> dict[str, str]:
    items = _object(value or {}, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()):
        raise BadRequest(f"{what} must map strings to strings")
    return dict(items)


def _optional_bool(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, not {value!r}")
    return value


# -- responses -------------------------------------------------------------------------------


def api_state(state: SandboxState) -> str:
    running = state in (SandboxState.RUNNING, SandboxState.RESUMING)
    return "running" if running else "paused"


def timestamp(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def sandbox_json(record: SandboxRecord, settings: ApiSettings) -> dict[str, Any]:
    """E2B's `Sandbox`: what create, connect and resume answer with."""
    data: dict[str, Any] = {
        "templateID": record.template_id,
        "sandboxID": record.sandbox_id,
        "alias": record.template_id,
        "clientID": CLIENT_ID,
        "envdVersion": settings.envd_version,
        "trafficAccessToken": record.traffic_token,
        "domain": settings.domain,
    }
    if record.envd_token is not None:
        data["envdAccessToken"] = record.envd_token
    return data


def listed_json(record: SandboxRecord, settings: ApiSettings) -> dict[str, Any]:
    """E2B's `ListedSandbox`."""
    metadata = dict(record.metadata)
    if record.runtime is not None and not record.runtime.isolated_network:
        metadata[NETWORK_KEY] = "shared-host"
    if record.runtime is not None and record.runtime.isolation == "none":
        metadata[ISOLATION_KEY] = "none"
    return {
        "templateID": record.template_id,
        "alias": record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": timestamp(record.started_at),
        "endAt": timestamp(record.life.end_at),
        "cpuCount": settings.cpu_count,
        "memoryMB": settings.memory_mb,
        "diskSizeMB": settings.disk_size_mb,
        "state": api_state(record.state),
        "envdVersion": settings.envd_version,
        "metadata": metadata,
    }


def detail_json(record: SandboxRecord, settings: ApiSettings) -> dict[str, Any]:
    """E2B's `SandboxDetail`: what `GET /sandboxes/{id}` answers with."""
    policy = record.life.policy
    data = listed_json(record, settings)
    data.update(
        domain=settings.domain,
        allowInternetAccess=record.allow_internet,
        network={"allowPublicTraffic": record.traffic_token is None},
        lifecycle={"autoResume": policy.auto_resume, "onTimeout": policy.on_timeout},
    )
    if record.envd_token is not None:
        data["envdAccessToken"] = record.envd_token
    return data


def error_json(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message}
