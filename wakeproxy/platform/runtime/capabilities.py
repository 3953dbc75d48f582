"""What this machine lets `ProcessRuntime` do, found out once by trying, and the warnings
that follow from it.

    cgroup      a freezer hierarchy we may create groups in and move processes into
    pdeathsig   whether `setpriv` is there to tie sandboxes to this process's life
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.platform.runtime import cgroups
from wakeproxy.platform.runtime.cgroups import Hierarchy

log = logging.getLogger(__name__)


NOT_ISOLATED = (
    "not isolated: code in this sandbox runs as this platform's user on the host; sandboxes "
    "share the host's network (each agent on its own port, ports may clash between "
    "sandboxes) and /home/user is not remapped (HOME is the sandbox's real folder)"
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    hierarchy: Hierarchy | None
    no_cgroup_reason: str
    pdeathsig: bool

    def warnings(self) -> tuple[str, ...]:
        found = [NOT_ISOLATED]
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


async def detect(freezer: str, key: str) -> Capabilities:
    """`freezer`: "auto", "cgroup1", "cgroup2" or "signal"."""
    hierarchy, no_cgroup = await _find_hierarchy(freezer, key)
    found = Capabilities(
        hierarchy=hierarchy,
        no_cgroup_reason=no_cgroup,
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
    log.info(
        "sandbox runtime: plain processes, freezer=%s",
        found.hierarchy.kind if found.hierarchy else "signal",
    )
    for warning in found.warnings():
        log.warning("sandbox runtime: %s", warning)
