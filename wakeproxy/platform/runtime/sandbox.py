"""One running sandbox as the runtime holds it, and ending it for good."""

from __future__ import annotations

import contextlib
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
    stack: Child | None = None
    """The network stack (pasta or slirp4netns), when one is attached."""
    netns: int | None = None
    """An open descriptor of its network namespace, None when it shares the host's. Held
    open, it cannot be mistaken for a later namespace whose PID 1 reuses the pid."""
    broker: Path | None = None
    """The init's socket broker (for a platform that may not setns)."""
    log: Path = Path(os.devnull)
    log_offset: int = 0
    """Where this start's output begins in `log`."""

    def close(self) -> None:
        """Let go of the namespace descriptor (the processes are not touched)."""
        if self.netns is not None:
            with contextlib.suppress(OSError):
                os.close(self.netns)
            self.netns = None

    async def end(self) -> None:
        """SIGKILL the whole tree, the root and the network stack; wait until all are gone
        and the cgroup is removed."""
        try:
            await self.group.kill()
        finally:
            children = [child for child in (self.root, self.stack) if child is not None]
            for child in children:
                child.signal(signal.SIGKILL)
            self.close()
        if not await poll_until(lambda: not any(c.alive() for c in children), END_TIMEOUT):
            raise FreezeError(f"processes {[c.pid for c in children]} did not end")


def group_for(info: RuntimeInfo, root: Child) -> ProcessGroup:
    """The freezer that `info` records; signals go to the tree below its init."""
    if info.cgroup:
        return cgroup_group(info.freezer, Path(info.cgroup))
    if info.init_pid and info.init_pid != root.pid:
        return SignalGroup(info.init_pid, info.init_start_time)
    return SignalGroup(root.pid, root.start_time)


def cgroup_group(kind: str, path: Path) -> ProcessGroup:
    return CgroupV1Group(path) if kind == "cgroup1" else CgroupV2Group(path)


async def end_leftovers(marker: str, group: Path | None, kind: str) -> None:
    """End processes of a sandbox that no `Sandbox` holds (a start that never finished, a
    platform that crashed): those in its cgroup, and those carrying its marker."""
    if group is not None:
        await cgroup_group(kind, group).kill()  # nothing to do when there is no such group
    # The marked processes are the root and the network stack; with the root goes the
    # tree below it (without a PID namespace, orphans stay below the init, a subreaper).
    for pid in procfs.find_by_environ(launch.MARKER, marker):
        root = Child.of(pid)
        await SignalGroup(root.pid, root.start_time).kill()
        root.alive()  # reaps it, if it is our child


def reattach(
    info: RuntimeInfo, marker: str, hierarchy: Hierarchy | None, broker: Path
) -> Sandbox | None:
    """Take back the sandbox `info` describes, if its root is still running and carries
    `marker`; None when it is gone, or when it was to end with a platform process that
    is gone (`RuntimeInfo.ends_with_platform`). Fields that older records lack (start
    times, PID 1, the cgroup) are found again from /proc and the cgroup tree."""
    root = Child(info.pid, info.start_time)
    environ = procfs.read_environ(info.pid) if root.alive() else None
    if environ is None or environ.get(launch.MARKER) != marker:
        return None
    stat = procfs.read_stat(info.pid)
    if info.ends_with_platform and (stat is None or stat.ppid != os.getpid()):
        return None  # its platform (its parent) died; only this process may take it back
    info = _complete(info, root, hierarchy, marker.rsplit("/", 1)[1])
    sandbox = Sandbox(info=info, root=root, group=group_for(info, root))
    if info.isolated_network:
        if not Child(info.init_pid, info.init_start_time).alive():
            return None
        sandbox.netns = os.open(f"/proc/{info.init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        sandbox.broker = broker
    if info.netstack_pid:
        sandbox.stack = Child(info.netstack_pid, info.netstack_start_time)
    return sandbox


def _complete(
    info: RuntimeInfo, root: Child, hierarchy: Hierarchy | None, sandbox_id: str
) -> RuntimeInfo:
    stat = procfs.read_stat(root.pid)
    if not info.start_time and stat is not None:
        info = replace(info, start_time=stat.start_time)
    if not info.init_pid:
        children = procfs.children_of(root.pid) if info.isolated_network else [root.pid]
        if children:
            init = Child.of(children[0])
            info = replace(info, init_pid=init.pid, init_start_time=init.start_time)
    if not info.freezer and hierarchy is not None:
        group = hierarchy.group(sandbox_id)
        if root.pid in procfs.pids_in([group / "cgroup.procs"]):
            info = replace(info, cgroup=str(group), freezer=hierarchy.kind)
    return info
