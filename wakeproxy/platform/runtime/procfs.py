"""Reading /proc: process identity, parentage, environment and cgroup mounts.

The parsers take text and return values, so they are tested without processes; the
`read_*` helpers add the file access and turn a vanished process into `None`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    state: str
    """One letter: R running, S sleeping, T stopped, Z zombie, D uninterruptible, ..."""
    start_time: int
    """Clock ticks after boot; with the pid it names one process even across pid reuse."""

    @property
    def dead(self) -> bool:
        return self.state in ("Z", "X")


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat. The command name (field 2) is in parentheses and may itself
    hold spaces and parentheses, so fields are counted from the last ')'."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    pid = int(text[:open_paren])
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field 4 is ppid and field 22 is starttime.
    return ProcStat(pid=pid, ppid=int(rest[1]), state=rest[0], start_time=int(rest[19]))


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def is_running(pid: int, start_time: int = 0) -> bool:
    """The process exists, is not a zombie, and (when `start_time` is given) is the same
    process that had this pid before."""
    stat = read_stat(pid)
    if stat is None or stat.dead:
        return False
    return start_time == 0 or stat.start_time == start_time


def process_table() -> dict[int, ProcStat]:
    """Every process visible in /proc, by pid."""
    table = {}
    for name in os.listdir(PROC):
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            table[stat.pid] = stat
    return table


def descendants(root: int, table: Mapping[int, ProcStat]) -> list[int]:
    """Pids below `root` in the parent tree (not `root` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[int] = []
    frontier = [root]
    while frontier:
        kids = [kid for pid in frontier for kid in sorted(children.get(pid, ())) if kid != root]
        found.extend(kids)
        frontier = kids
    return found


def parse_environ(data: bytes) -> dict[str, str]:
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def read_environ(pid: int) -> dict[str, str] | None:
    """The environment the process was started with (readable for our own uid or root)."""
    try:
        return parse_environ((PROC / str(pid) / "environ").read_bytes())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fs_type: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/<pid>/mountinfo: `id parent major:minor root mount-point options
    [optional fields...] - fs-type source super-options`."""
    mounts = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), tail[0], frozenset(tail[2].split(","))))
    return mounts


def parse_cgroup_membership(text: str) -> dict[str, str]:
    """Parse /proc/<pid>/cgroup into {controller: path}; the cgroup v2 entry (`0::/path`)
    is keyed by the empty string, named v1 hierarchies by `name=...`."""
    membership = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            membership[controller] = path
    return membership


def pids_in(paths: Iterable[Path]) -> Iterator[int]:
    """Pids listed in cgroup.procs files (missing files list nothing)."""
    for path in paths:
        try:
            text = path.read_text()
        except (FileNotFoundError, OSError):
            continue
        yield from (int(line) for line in text.split())


def find_by_environ(key: str, value: str) -> list[int]:
    """Pids whose start-up environment has `key=value` (only our own processes, or every
    process for root, are readable)."""
    wanted = f"{key}={value}".encode()
    found = []
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        try:
            data = (PROC / name / "environ").read_bytes()
        except OSError:
            continue
        if wanted in data.split(b"\0"):
            found.append(int(name))
    return found
