"""What this machine lets the runtime do, found out once by trying, and the warnings that
follow from it.

    isolation   network + PID + mount namespaces (with a user namespace when not root)
    cgroup      a freezer hierarchy we may create groups in and move processes into
    netstack    pasta or slirp4netns for outbound traffic from a network namespace
    setns       whether this process may enter a sandbox's network namespace (else the
                sandbox's init hands out sockets)
    pdeathsig   whether `setpriv` is there to tie sandboxes to this process's life
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.platform.runtime import cgroups, namespaces, netstack
from wakeproxy.platform.runtime.cgroups import Hierarchy
from wakeproxy.platform.runtime.namespaces import Isolation
from wakeproxy.platform.runtime.netstack import NetStack

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Choices:
    """What the runtime was asked for ("auto": the best this machine allows)."""

    isolate: bool = True
    freezer: str = "auto"
    """"auto", "cgroup1", "cgroup2" or "signal"."""
    netstack: str = "auto"
    """"auto", "pasta", "slirp4netns" or "none"."""
    user_namespace: bool | None = None
    """None: only when not root."""
    socket_broker: bool | None = None
    """None: only when this process may not setns(2)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    isolation: Isolation
    hierarchy: Hierarchy | None
    no_cgroup_reason: str
    netstack: NetStack | None
    setns: bool
    pdeathsig: bool

    def warnings(self, *, allow_internet: bool) -> tuple[str, ...]:
        found = []
        if not self.isolation.namespaces:
            found.append(
                "not isolated: code in this sandbox runs as this platform's user on the host "
                f"({self.isolation.reason or 'disabled'}); sandboxes share the host's "
                "network (each agent on its own port, ports may clash between sandboxes) "
                "and /home/user is not remapped (HOME is the sandbox's real folder)"
            )
        elif allow_internet and self.netstack is None:
            found.append(netstack.MISSING_WARNING)
        if self.hierarchy is None:
            found.append(
                f"no usable cgroup freezer ({self.no_cgroup_reason}): pausing stops "
                "processes with SIGSTOP, which they can observe"
            )
        if not self.pdeathsig:
            found.append(
                "setpriv (util-linux) is missing: sandboxes are not ended if the "
                "platform process dies without killing them"
            )
        return tuple(found)


def runtime_key(data_dir: Path) -> str:
    """Names this runtime's cgroup folder and marks its processes; stable per data dir."""
    return hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:12]


async def detect(choices: Choices, key: str, own_netns: int) -> Capabilities:
    if choices.isolate:
        isolation = await namespaces.probe(user_namespace=choices.user_namespace)
    else:
        isolation = Isolation(False, False, "isolation turned off")
    hierarchy, no_cgroup = await _find_hierarchy(choices.freezer, key)
    stack = netstack.find(choices.netstack) if isolation.namespaces else None
    if choices.socket_broker is None:
        setns = namespaces.can_setns(own_netns)
    else:
        setns = not choices.socket_broker
    found = Capabilities(
        isolation=isolation,
        hierarchy=hierarchy,
        no_cgroup_reason=no_cgroup,
        netstack=stack,
        setns=setns,
        pdeathsig=shutil.which("setpriv") is not None,
    )
    _log(found)
    return found


async def _find_hierarchy(prefer: str, key: str) -> tuple[Hierarchy | None, str]:
    if prefer == "signal":
        return None, "signals were asked for"
    reasons = []
    for hierarchy in cgroups.discover(f"wakeproxy-{key}", prefer):
        reason = await cgroups.usable(hierarchy)
        if reason is None:
            return hierarchy, ""
        reasons.append(reason)
    return None, "; ".join(reasons) or "no cgroup freezer is mounted"


def _log(found: Capabilities) -> None:
    isolation = found.isolation
    log.info(
        "sandbox runtime: namespaces=%s user_namespace=%s freezer=%s netstack=%s sockets=%s",
        isolation.namespaces,
        isolation.user_namespace,
        found.hierarchy.kind if found.hierarchy else "signal",
        found.netstack.name if found.netstack else "none",
        "setns" if found.setns else "broker",
    )
    for warning in found.warnings(allow_internet=True):
        log.warning("sandbox runtime: %s", warning)
