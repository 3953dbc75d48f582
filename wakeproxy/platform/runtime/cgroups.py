"""Finding a cgroup hierarchy this process may use to freeze and kill sandboxes.

Each runtime keeps its sandboxes under one folder of its own, next to (below) the cgroup
this process is in, so that delegation works and two platforms on one machine never touch
each other's groups:

    <mount>/<our cgroup>/wakeproxy-<key>/<sandbox id>

`key` is derived from the data dir, so a restarted platform finds its groups again.
Preference: the cgroup v1 `freezer` controller, then cgroup v2 (`cgroup.freeze`, which
needs no controller). Whether a hierarchy is usable is decided by trying: create the
folder, move a short-lived process into a child group, remove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wakeproxy.platform.runtime import procfs
from wakeproxy.platform.runtime.polling import poll_until

log = logging.getLogger(__name__)

CgroupKind = Literal["cgroup1", "cgroup2"]


@dataclass(frozen=True, slots=True)
class Hierarchy:
    kind: CgroupKind
    base: Path
    """This runtime's folder: one child group per sandbox."""

    def group(self, sandbox_id: str) -> Path:
        return self.base / sandbox_id


def candidates(mountinfo: str, membership: str, folder: str) -> list[Hierarchy]:
    """Usable-looking hierarchies in order of preference (pure: takes the text of
    /proc/self/mountinfo and /proc/self/cgroup)."""
    mounts = procfs.parse_mountinfo(mountinfo)
    member = procfs.parse_cgroup_membership(membership)
    found: list[Hierarchy] = []
    for mount in mounts:
        if mount.fs_type == "cgroup" and "freezer" in mount.super_options and "freezer" in member:
            found.append(Hierarchy("cgroup1", _below(mount.mount_point, member["freezer"], folder)))
    for mount in mounts:
        if mount.fs_type == "cgroup2" and "" in member:
            found.append(Hierarchy("cgroup2", _below(mount.mount_point, member[""], folder)))
    return found


def _below(mount_point: str, own: str, folder: str) -> Path:
    return Path(mount_point) / own.lstrip("/") / folder


def discover(folder: str, prefer: str = "auto") -> list[Hierarchy]:
    """Candidates on this machine, `prefer` ("cgroup1"/"cgroup2") restricting the choice."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        return []
    found = candidates(mountinfo, membership, folder)
    return [h for h in found if prefer in ("auto", h.kind)]


async def usable(hierarchy: Hierarchy) -> str | None:
    """None when a process can be put into (and frozen in) a group of `hierarchy`;
    otherwise why not."""
    probe = hierarchy.base / ".probe"
    try:
        hierarchy.base.mkdir(parents=True, exist_ok=True)
        remove_group(probe)
        probe.mkdir()
        if not (probe / control_file(hierarchy.kind)).exists():
            return f"{probe} has no {control_file(hierarchy.kind)}"
        await _move_a_process_into(probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{hierarchy.base}: {exc}"
    finally:
        await _remove_when_empty(probe)
    return None


def control_file(kind: CgroupKind) -> str:
    return "freezer.state" if kind == "cgroup1" else "cgroup.freeze"


async def _move_a_process_into(group: Path) -> None:
    # The same shell line that starts every sandbox (see `join_argv`), so the probe
    # proves exactly what start relies on.
    process = await asyncio.create_subprocess_exec(
        *join_argv(group, ["true"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise OSError(f"cannot move a process into it: {err.decode(errors='replace').strip()}")


def join_argv(group: Path, argv: list[str]) -> list[str]:
    """`argv`, run as a process that first moves itself into `group`. The shell writes its
    own pid and then execs, so the command starts inside the group before it can fork;
    no Python code runs between fork and exec (which is not safe in a threaded process)."""
    script = 'echo $$ > "$0" && exec "$@"'
    return ["sh", "-c", script, str(group / "cgroup.procs"), *argv]


def create_group(hierarchy: Hierarchy, sandbox_id: str) -> Path:
    group = hierarchy.group(sandbox_id)
    group.mkdir(parents=True)
    return group


def remove_group(group: Path) -> bool:
    """Remove an empty group; False while processes are still in it."""
    try:
        group.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


async def _remove_when_empty(group: Path) -> None:
    await poll_until(lambda: remove_group(group), 2.0)


def remove_base(hierarchy: Hierarchy) -> None:
    """Remove this runtime's folder when no sandbox group is left in it."""
    with contextlib.suppress(OSError):
        hierarchy.base.rmdir()
