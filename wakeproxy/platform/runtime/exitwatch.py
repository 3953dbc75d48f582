"""Noticing, as it happens, that a sandbox's root process has ended, and why.

A pidfd (pidfd_open(2)) becomes readable when its process exits, whether or not it is
our child, so the event loop learns of the exit at once without polling and without a
SIGCHLD handler that would race the runtime's own `waitpid` calls. When the process is
our child, `waitid(P_PIDFD)` reaps it through the same descriptor (never another process
that took its pid) and gives the exit status. A kernel without pidfds (before 5.3) gets
a half-second check of /proc instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.platform.contracts import ExitReason
from wakeproxy.platform.runtime import procfs

_FALLBACK_CHECK = 0.5  # seconds between checks of /proc where pidfds are missing


@dataclass(frozen=True, slots=True)
class Status:
    """How a process ended: `code` when it exited, `signum` when a signal killed it;
    neither when that is unknown (not our child, or reaped elsewhere)."""

    code: int | None = None
    signum: int | None = None


def describe(status: Status, oom_kills: int = 0) -> tuple[ExitReason, str]:
    """The reason and detail of a sandbox exit. The sandbox's init exits with 128 + N
    when its agent is killed by signal N (as a shell does), so such codes are signals."""
    if oom_kills > 0:
        return "oom", f"out of memory ({oom_kills} process(es) killed by the kernel)"
    signum = status.signum
    if signum is None and status.code is not None and 128 < status.code <= 128 + 64:
        signum = status.code - 128
    if signum is not None:
        return "signal", f"killed by {_signal_name(signum)}"
    if status.code is not None:
        return "exited", f"exited with code {status.code}"
    return "exited", "ended (exit status unknown)"


class ExitWatch:
    """Calls `ended(status)` once, on the event loop, when process `pid` (started at
    `start_time`, 0: unknown) ends; reaps it when it is our child. `cancel` stops the
    report, not the reaping: a process ended on purpose (`Runtime.kill`) is reaped too."""

    def __init__(self, pid: int, start_time: int, ended: Callable[[Status], None]) -> None:
        self._pid = pid
        self._ended = ended
        self._loop = asyncio.get_running_loop()
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._fire, Status())
            return
        except OSError:  # no pidfds on this kernel
            self._timer = self._loop.call_later(_FALLBACK_CHECK, self._check, start_time)
            return
        stat = procfs.read_stat(pid)
        if stat is None or (start_time and stat.start_time != start_time):
            # The pid is already someone else's: ours ended and was reaped elsewhere.
            self._loop.call_soon(self._fire, Status())
            return
        # Readable at once if it is already a zombie; then reaped in `_readable`.
        self._loop.add_reader(self._pidfd, self._readable)

    def cancel(self) -> None:
        """Say nothing of the exit; still reap the process when it ends (a killed child
        left unreaped stays a zombie, holding its credentials and keyring)."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()

    def _readable(self) -> None:
        assert self._pidfd is not None
        status = _reap(self._pidfd)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._fire(status)

    def _check(self, start_time: int) -> None:
        if procfs.is_running(self._pid, start_time):
            self._timer = self._loop.call_later(_FALLBACK_CHECK, self._check, start_time)
            return
        status = Status()
        with contextlib.suppress(ChildProcessError):
            pid, raw = os.waitpid(self._pid, os.WNOHANG)
            if pid == self._pid:
                code = os.waitstatus_to_exitcode(raw)
                status = Status(code=code) if code >= 0 else Status(signum=-code)
        self._fire(status)

    def _fire(self, status: Status) -> None:
        if self._done:
            return
        self.cancel()
        self._ended(status)


def oom_kills(cgroup: str) -> int:
    """How many of the cgroup's processes the kernel killed for lack of memory, as far as
    a cgroup v2 group says (`memory.events`); 0 when it does not say."""
    if not cgroup:
        return 0
    try:
        text = (Path(cgroup) / "memory.events").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def _reap(pidfd: int) -> Status:
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:  # not our child (adopted), or already reaped
        return Status()
    if result is None:  # readable yet not waitable: should not happen, report unknown
        return Status()
    if result.si_code == os.CLD_EXITED:
        return Status(code=result.si_status)
    return Status(signum=result.si_status)


def _signal_name(signum: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(signum).name
    return f"signal {signum}"
