"""One running plain-process sandbox as `ProcessRuntime` holds it, and ending it for good."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from wakeproxy.platform.contracts import RuntimeInfo
from wakeproxy.platform.runtime import launch, procfs
from wakeproxy.platform.runtime.cgroups import Hierarchy
from wakeproxy.platform.runtime.freezer import (
    CgroupV1Group,
    CgroupV2Group,
    FreezeError,
    ProcessGroup,
    SignalGroup,
)
from wakeproxy.platform.runtime.launch import Child
from wakeproxy.platform.runtime.polling import poll_until

END_TIMEOUT = 5.0


@dataclass(slots=True)
class Sandbox:
    info: RuntimeInfo
    root: Child
    group: ProcessGroup
    log: Path = Path(os.devnull)
    log_offset: int = 0
    """Where this start's output begins in `log`."""

    async def end(self) -> None:
        """SIGKILL the whole tree and the root; wait until all are gone and the cgroup is
        removed."""
        try:
            await self.group.kill()
        finally:
            self.root.signal(signal.SIGKILL)
        if not await poll_until(lambda: not self.root.alive(), END_TIMEOUT):
            raise FreezeError(f"process {self.root.pid} did not end")


def group_for(info: RuntimeInfo, root: Child) -> ProcessGroup:
    """The freezer that `info` records; signals go to the tree below the root (the init)."""
    if info.cgroup:
        return cgroup_group(info.freezer, Path(info.cgroup))
    return SignalGroup(root.pid, root.start_time)


def cgroup_group(kind: str, path: Path) -> ProcessGroup:
    return CgroupV1Group(path) if kind == "cgroup1" else CgroupV2Group(path)


async def end_leftovers(marker: str, group: Path | None, kind: str) -> None:
    """End processes of a sandbox that no `Sandbox` holds (a start that never finished, a
    platform that crashed): those in its cgroup, and those carrying its marker."""
    if group is not None:
        await cgroup_group(kind, group).kill()  # nothing to do when there is no such group
    # The marked process is the root; with it goes the tree below it (orphans stay below
    # the init, a subreaper).
    for pid in procfs.find_by_environ(launch.MARKER, marker):
        root = Child.of(pid)
        await SignalGroup(root.pid, root.start_time).kill()
        root.alive()  # reaps it, if it is our child


def reattach(info: RuntimeInfo, marker: str, hierarchy: Hierarchy | None) -> Sandbox | None:
    """Take back the sandbox `info` describes, if its root is still running and carries
    `marker`; None when it is gone, or when it was to end with a platform process that
    is gone (`RuntimeInfo.ends_with_platform`). Fields that older records lack (start
    times, the cgroup) are found again from /proc and the cgroup tree."""
    if info.isolated_network:
        return None  # a container's record (`RuncRuntime`); plain processes have none
    root = Child(info.pid, info.start_time)
    environ = procfs.read_environ(info.pid) if root.alive() else None
    if environ is None or environ.get(launch.MARKER) != marker:
        return None
    stat = procfs.read_stat(info.pid)
    if info.ends_with_platform and (stat is None or stat.ppid != os.getpid()):
        return None  # its platform (its parent) died; only this process may take it back
    info = _complete(info, root, hierarchy, marker.rsplit("/", 1)[1])
    return Sandbox(info=info, root=root, group=group_for(info, root))


def _complete(
    info: RuntimeInfo, root: Child, hierarchy: Hierarchy | None, sandbox_id: str
) -> RuntimeInfo:
    stat = procfs.read_stat(root.pid)
    if not info.start_time and stat is not None:
        info = replace(info, start_time=stat.start_time)
    if not info.init_pid:
        info = replace(info, init_pid=root.pid, init_start_time=info.start_time)
    if not info.freezer and hierarchy is not None:
        group = hierarchy.group(sandbox_id)
        if root.pid in procfs.pids_in([group / "cgroup.procs"]):
            info = replace(info, cgroup=str(group), freezer=hierarchy.kind)
    return info
