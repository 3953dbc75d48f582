"""Freezing, thawing and killing every process of one sandbox.

Three ways, one interface (`ProcessGroup`):

- `CgroupV1Group`: the v1 `freezer` controller (`freezer.state`: FROZEN / THAWED). A task
  frozen there does not act on SIGKILL until thawed, so a kill thaws after signalling.
- `CgroupV2Group`: `cgroup.freeze` and `cgroup.events`; `cgroup.kill` where the kernel has it.
- `SignalGroup`: no usable cgroup; SIGSTOP / SIGCONT to every process below the sandbox's
  init, found by walking /proc (in a PID namespace every process of the namespace is below
  its init, and outside one the init is a child subreaper, so orphans stay below it too).
  The walk repeats until it finds nothing new, so a process forked meanwhile is caught.

Cgroup members inherit their group on fork, so nothing escapes a freeze by forking.
Memory, files and sockets are untouched by all three: a frozen process just does not run.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.runtime import cgroups, procfs
from wakeproxy.platform.runtime.polling import poll_until

FREEZE_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0


class FreezeError(WakeproxyError):
    """The sandbox's processes could not all be stopped (or ended) in time."""


class ProcessGroup(Protocol):
    kind: str

    def members(self) -> list[int]:
        """Pids of the sandbox's processes, as seen from this process."""
        ...

    async def freeze(self) -> None: ...

    async def thaw(self) -> None: ...

    async def kill(self) -> None:
        """SIGKILL every member and wait until none is left (and the cgroup is gone)."""
        ...


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


class _CgroupGroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    def members(self) -> list[int]:
        return list(procfs.pids_in([self.path / "cgroup.procs"]))

    def _gone(self) -> bool:
        return not self.path.exists() or (not self.members() and cgroups.remove_group(self.path))

    async def _kill_until_gone(self, after_signal: Callable[[], None]) -> None:
        def attempt() -> bool:
            if self._gone():
                return True
            _signal_all(self.members(), signal.SIGKILL)
            after_signal()
            return self._gone()

        if not await poll_until(attempt, KILL_TIMEOUT):
            raise FreezeError(f"processes {self.members()} of {self.path} did not end")


class CgroupV1Group(_CgroupGroup):
    kind = "cgroup1"

    def _state(self) -> str:
        return _read(self.path / "freezer.state").strip()

    def _write_state(self, state: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "freezer.state").write_text(state)

    async def freeze(self) -> None:
        self._write_state("FROZEN")
        if not await poll_until(lambda: self._state() == "FROZEN", FREEZE_TIMEOUT):
            self._write_state("THAWED")
            raise FreezeError(f"{self.path} stayed {self._state()} (a process would not stop)")

    async def thaw(self) -> None:
        self._write_state("THAWED")
        if not await poll_until(lambda: self._state() in ("THAWED", ""), FREEZE_TIMEOUT):
            raise FreezeError(f"{self.path} stayed {self._state()}")

    async def kill(self) -> None:
        await self._kill_until_gone(lambda: self._write_state("THAWED"))


class CgroupV2Group(_CgroupGroup):
    kind = "cgroup2"

    def _frozen(self) -> bool | None:
        for line in _read(self.path / "cgroup.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "frozen":
                return value.strip() == "1"
        return None

    def _write(self, name: str, value: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).write_text(value)

    async def freeze(self) -> None:
        self._write("cgroup.freeze", "1")
        if not await poll_until(lambda: self._frozen() is not False, FREEZE_TIMEOUT):
            self._write("cgroup.freeze", "0")
            raise FreezeError(f"{self.path} did not report frozen (a process would not stop)")

    async def thaw(self) -> None:
        self._write("cgroup.freeze", "0")
        if not await poll_until(lambda: self._frozen() is not True, FREEZE_TIMEOUT):
            raise FreezeError(f"{self.path} stayed frozen")

    async def kill(self) -> None:
        def also_kill_group() -> None:
            # cgroup.kill (Linux 5.14+) also catches a process forked while signals go out.
            if (self.path / "cgroup.kill").exists():
                self._write("cgroup.kill", "1")

        await self._kill_until_gone(also_kill_group)


class SignalGroup:
    """The processes below `init` (a pid of ours), identified by its start time."""

    kind = "signal"

    def __init__(self, init: int, start_time: int) -> None:
        self.init = init
        self.start_time = start_time

    def _below(self) -> list[int]:
        if not procfs.is_running(self.init, self.start_time):
            return []
        return procfs.descendants(self.init, procfs.process_table())

    def members(self) -> list[int]:
        alive = procfs.is_running(self.init, self.start_time)
        return ([self.init] if alive else []) + self._below()

    def _stop_all_below(self) -> set[int]:
        """SIGSTOP until a walk finds no process that was not already signalled."""
        stopped: set[int] = set()
        while fresh := [pid for pid in self._below() if pid not in stopped]:
            _signal_all(fresh, signal.SIGSTOP)
            stopped.update(fresh)
        return stopped

    async def freeze(self) -> None:
        # The init itself stays running: it only reaps and hands out sockets.
        stopped = self._stop_all_below()

        def all_stopped() -> bool:
            states = (procfs.read_stat(pid) for pid in stopped)
            return all(s is None or s.state in ("T", "t", "Z", "X") for s in states)

        if not await poll_until(all_stopped, FREEZE_TIMEOUT):
            await self.thaw()
            raise FreezeError(f"processes below {self.init} did not stop")

    async def thaw(self) -> None:
        _signal_all(self._below(), signal.SIGCONT)

    async def kill(self) -> None:
        # Stop first so that nothing forks between the walk and the kill.
        doomed = self._stop_all_below()
        if procfs.is_running(self.init, self.start_time):
            doomed.add(self.init)
        _signal_all(doomed, signal.SIGKILL)
        if not await poll_until(lambda: not any(map(procfs.is_running, doomed)), KILL_TIMEOUT):
            raise FreezeError(f"processes of {self.init} did not end")
