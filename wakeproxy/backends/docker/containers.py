"""What a labelled container means to wakeproxy (pure: the engine's JSON in, values out).

A container takes part when it carries `wakeproxy.sandbox=<id>`; its other labels say how
it sleeps and when (all optional):

| label | values | default |
| --- | --- | --- |
| `wakeproxy.sandbox` | the sandbox id of `<port>-<id>.<domain>` | (required) |
| `wakeproxy.mode` | `pause` (the freezer: memory kept) or `stop` (memory released) | `pause` |
| `wakeproxy.timeout` | seconds of life after each wake; 0: never put to sleep | `0` |
| `wakeproxy.on_timeout` | `pause` (sleep as `mode` says) or `kill` | `pause` |
| `wakeproxy.activity_extends_timeout` | `true`: counted from the last request | `false` |
| `wakeproxy.auto_resume` | `false`: requests get 409 instead of waking it | `true` |
| `wakeproxy.traffic_token` | requests must carry it in `e2b-traffic-access-token` | none |
| `wakeproxy.network` | the network whose address the proxy dials | the first |

The engine's state becomes a `SandboxState`: running; paused; restarting is resuming; an
exited (or never started) container is asleep only when it sleeps by stopping and its
timeout does not kill it, and is otherwise gone (killed, in E2B's terms), as is one being
removed or dead.

Versions are the engine's clock in microseconds (below 2^53 until the year 2255): an
event's `timeNano`, or for a lookup the container's last start or exit. A pause leaves no
time in the container's record, so a version seen in a lookup is raised past the one
this process last knew whenever the state differs from it: versions never go back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from wakeproxy.backends.base import Lifecycle, SandboxInfo, SandboxState, Upstream

LABEL: Final = "wakeproxy.sandbox"
_PREFIX: Final = "wakeproxy."
_TRUE: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_ASLEEP_IF_STOPPED: Final = frozenset({"exited", "created"})
_STATES: Final = {
    "running": SandboxState.RUNNING,
    "paused": SandboxState.PAUSED,
    "restarting": SandboxState.RESUMING,
}
# What an event says the container now is; "die" depends on how the container sleeps.
EVENTS: Final = ("start", "unpause", "pause", "die", "destroy")
_AFTER_EVENT: Final = {
    "start": SandboxState.RUNNING,
    "unpause": SandboxState.RUNNING,
    "pause": SandboxState.PAUSED,
}
_RFC3339: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")
_PREFERRED: Final = {"running": 0, "paused": 0, "restarting": 1, "created": 2, "exited": 2}


class BadLabel(ValueError):
    """A wakeproxy label with a value that means nothing; the message says what to write."""


@dataclass(frozen=True, slots=True)
class Spec:
    """A container's wakeproxy labels, checked."""

    sandbox_id: str
    mode: Literal["pause", "stop"] = "pause"
    timeout: float = 0.0
    on_timeout: Literal["pause", "kill"] = "pause"
    idle: bool = False  # activity_extends_timeout
    auto_resume: bool = True
    traffic_token: str | None = None
    network: str = ""

    @property
    def sleeps_stopped(self) -> bool:
        """An exited container is asleep (started again on a request), not gone."""
        return self.mode == "stop" and self.on_timeout == "pause"

    @property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.on_timeout, self.auto_resume)


def spec_of(labels: Mapping[str, str]) -> Spec:
    """The container's `Spec` from its labels; `BadLabel` names the first bad one."""
    sandbox_id = labels.get(LABEL, "").strip()
    if not sandbox_id:
        raise BadLabel(f"{LABEL} is empty: set it to the sandbox id the container answers as")
    mode = _choice(labels, "mode", ("pause", "stop"), "pause")
    on_timeout = _choice(labels, "on_timeout", ("pause", "kill"), "pause")
    timeout = _seconds(labels)
    return Spec(
        sandbox_id=sandbox_id,
        mode="stop" if mode == "stop" else "pause",
        timeout=timeout,
        on_timeout="kill" if on_timeout == "kill" else "pause",
        idle=_flag(labels, "activity_extends_timeout", False),
        auto_resume=_flag(labels, "auto_resume", True),
        traffic_token=labels.get(_PREFIX + "traffic_token") or None,
        network=labels.get(_PREFIX + "network", ""),
    )


def _choice(labels: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = labels.get(_PREFIX + name, default).strip().lower()
    if value not in allowed:
        raise BadLabel(f"{_PREFIX}{name}={value!r}: expected {' or '.join(allowed)}")
    return value


def _flag(labels: Mapping[str, str], name: str, default: bool) -> bool:
    value = labels.get(_PREFIX + name)
    if value is None:
        return default
    flag = _TRUE.get(value.strip().lower())
    if flag is None:
        raise BadLabel(f"{_PREFIX}{name}={value!r}: expected true or false")
    return flag


def _seconds(labels: Mapping[str, str]) -> float:
    value = labels.get(_PREFIX + "timeout", "0")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise BadLabel(f"{_PREFIX}timeout={value!r}: expected seconds (0: no timeout)")
    return seconds


# -- state ------------------------------------------------------------------------------------


def state_of(status: str, spec: Spec) -> SandboxState | None:
    """The engine's `State.Status` as a sandbox state; None: gone."""
    if status in _ASLEEP_IF_STOPPED:
        return SandboxState.PAUSED if spec.sleeps_stopped else None
    return _STATES.get(status)


def state_after(action: str, spec: Spec) -> SandboxState | None:
    """The state an event of `EVENTS` leaves the container in; None: gone."""
    if action == "die":
        return SandboxState.PAUSED if spec.sleeps_stopped else None
    return _AFTER_EVENT.get(action)


def inspected_version(container: Mapping[str, Any]) -> int:
    """The engine's time of the container's last start or exit, in microseconds."""
    state = container.get("State") or {}
    times = [_micros(str(state.get(key) or "")) for key in ("StartedAt", "FinishedAt")]
    return max(times)


def event_version(event: Mapping[str, Any]) -> int:
    return int(event.get("timeNano") or 0) // 1000 or int(event.get("time") or 0) * 1_000_000


def next_version(known: SandboxInfo | None, state: SandboxState | None, seen: int) -> int:
    """The version of a newly observed state: the engine's `seen`, never below what was
    known, and above it when the state changed (a pause leaves no time to read back)."""
    if known is None:
        return seen
    if state is known.state:
        return max(seen, known.version)
    return max(seen, known.version + 1)


def info_of(spec: Spec, state: SandboxState, version: int) -> SandboxInfo:
    return SandboxInfo(
        sandbox_id=spec.sandbox_id,
        state=state,
        lifecycle=spec.lifecycle,
        version=version,
        traffic_token=spec.traffic_token,
        agent_port=0,  # no in-sandbox agent: the traffic token guards every port
    )


def _micros(stamp: str) -> int:
    """RFC 3339 with nanoseconds (Go's format) → microseconds; 0 for Go's zero time or
    anything else."""
    match = _RFC3339.fullmatch(stamp)
    if match is None or stamp.startswith("0001-"):
        return 0
    seconds, fraction, zone = match.groups()
    when = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    return int(when.timestamp()) * 1_000_000 + int(((fraction or "") + "000000")[:6])


def preferred(containers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of several containers with one sandbox id, the one that is up (else the newest)."""
    if not containers:
        return None
    return min(
        containers,
        key=lambda c: (_PREFERRED.get(str(c.get("State", "")), 3), -int(c.get("Created") or 0)),
    )


# -- where a port is reached ------------------------------------------------------------------


def address_of(
    container: Mapping[str, Any], port: int, *, network: str, published: bool, engine_host: str
) -> Upstream | str:
    """Where `port` of an inspected container is reached: its address on `network` (or,
    when empty, on its only or first network), or with `published` the host port the
    engine publishes it on. A string says why there is none."""
    settings = container.get("NetworkSettings") or {}
    if published:
        return _published(settings, port, engine_host)
    networks: Mapping[str, Any] = settings.get("Networks") or {}
    if network:
        address = str((networks.get(network) or {}).get("IPAddress") or "")
        if not address:
            return f"it is not on network {network!r}: connect it (docker network connect)"
        return Upstream(host=address, port=port)
    for name in sorted(networks):
        address = str((networks[name] or {}).get("IPAddress") or "")
        if address:
            return Upstream(host=address, port=port)
    reached = _published(settings, port, engine_host)
    if isinstance(reached, Upstream):
        return reached
    return "it has no network address and does not publish the port"


def _published(settings: Mapping[str, Any], port: int, engine_host: str) -> Upstream | str:
    bindings = (settings.get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        host_port = int(binding.get("HostPort") or 0)
        if host_port:
            host = str(binding.get("HostIp") or "")
            if host in ("", "0.0.0.0", "::"):
                host = engine_host
            return Upstream(host=host, port=host_port)
    return f"port {port} is not published (docker run -p)"
