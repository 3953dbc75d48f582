"""Starting a command and collecting it when it ends.

`launch` starts a command in its own session and process group with non-blocking
parent ends of its pipes (or of a pty). `ChildReaper` collects ended children. The
agent is the root of the sandbox's process tree, so with `reap_orphans` it collects
every child that ends, including orphans re-parented to it, which would otherwise
stay zombies for the sandbox's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wakeproxy.platform.agent.errors import SpawnError
from wakeproxy.platform.agent.messages import OutputKind, PtySize


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    argv: Sequence[str]
    cwd: str
    env: Mapping[str, str]
    stdin: bool
    pty: PtySize | None
    uid: int | None = None
    """Run as this uid (and `gid`, `groups`); None: as the agent."""
    gid: int | None = None
    groups: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Launched:
    popen: subprocess.Popen[bytes]
    outputs: Mapping[int, OutputKind]
    """Parent ends to read, non-blocking: stdout and stderr pipes, or the pty."""
    stdin_fd: int | None
    pty_fd: int | None


def launch(spec: LaunchSpec) -> Launched:
    """Start the command; raises `SpawnError` when it cannot be started."""
    if spec.pty is not None:
        return _launch_pty(spec, spec.pty)
    parent: list[int] = []
    child: list[int] = []
    try:
        out_r, out_w = _pipe(parent, child)
        err_r, err_w = _pipe(parent, child)
        in_w: int | None = None
        in_r: int = subprocess.DEVNULL
        if spec.stdin:
            in_r, in_w = _pipe(child, parent)
        popen = _popen(spec, stdin=in_r, stdout=out_w, stderr=err_w)
    except BaseException:
        _close(parent)
        raise
    finally:
        _close(child)
    for fd in parent:
        os.set_blocking(fd, False)
    return Launched(popen, {out_r: "stdout", err_r: "stderr"}, in_w, None)


def _pipe(read_side: list[int], write_side: list[int]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    read_side.append(read_fd)
    write_side.append(write_fd)
    return read_fd, write_fd


def _launch_pty(spec: LaunchSpec, size: PtySize) -> Launched:
    master, slave = os.openpty()
    try:
        set_window_size(master, size)
        popen = _popen(spec, stdin=slave, stdout=slave, stderr=slave, terminal=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Launched(popen, {master: "pty"}, None, master)


def _popen(
    spec: LaunchSpec, *, terminal: bool = False, **streams: object
) -> subprocess.Popen[bytes]:
    if terminal or spec.uid is not None:
        streams["preexec_fn"] = functools.partial(_in_child, terminal, spec)
    try:
        popen: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            start_new_session=True,
            close_fds=True,
            **streams,
        )
    except (OSError, ValueError) as exc:
        command = " ".join(spec.argv)
        raise SpawnError(f"error starting process '{command}': {exc}") from None
    return popen


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _in_child(terminal: bool, spec: LaunchSpec) -> None:
    # Runs in the child between fork and exec, so only single system calls, which take
    # none of the locks another thread might have held (the child has one thread).
    if terminal:  # make the pty its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if spec.uid is None or spec.gid is None:
        return
    # In a sandbox the agent is one process among the user's: when the sandbox runs out
    # of memory (a hog, a fork bomb), the kernel kills the user's first, and the sandbox
    # stays reachable. Done before the uid changes: /proc/self is then no longer ours.
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(fd, b"1000")
    os.close(fd)
    os.setgroups(list(spec.groups))
    os.setgid(spec.gid)
    os.setuid(spec.uid)


def set_window_size(fd: int, size: PtySize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


class ChildReaper:
    """Collects ended children and resolves the futures of the watched ones.

    A watched child is noticed through a pidfd (Linux 5.3+; polled where there is
    none), since uvloop keeps SIGCHLD to itself. With `reap_orphans`, every ended child
    is collected, at the latest on a periodic sweep; without it only watched pids are,
    so that the reaper can live in a process whose other children belong to someone
    else (a test runner).
    """

    SWEEP_INTERVAL = 1.0
    POLL_INTERVAL = 0.05

    def __init__(self, reap_orphans: bool) -> None:
        self._reap_orphans = reap_orphans
        self._watched: dict[int, asyncio.Future[int]] = {}
        self._pidfds: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule()

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for pid in list(self._pidfds):
            self._forget_pidfd(pid)
        self._loop = None

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future for `pid`'s wait status; call it before the loop runs again."""
        loop = self._loop
        assert loop is not None, "install() first"
        future: asyncio.Future[int] = loop.create_future()
        self._watched[pid] = future
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            if self._timer is not None:  # a slow orphan sweep: poll faster from now on
                self._timer.cancel()
                self._timer = None
            self._schedule()
        else:
            self._pidfds[pid] = pidfd
            loop.add_reader(pidfd, self.reap)
        loop.call_soon(self.reap)
        return future

    def reap(self) -> None:
        if self._reap_orphans:
            self._reap_any()
        else:
            self._reap_watched()

    def _tick(self) -> None:
        self._timer = None
        self.reap()
        self._schedule()

    def _schedule(self) -> None:
        """Keep a timer running for orphans, or for watched pids without a pidfd."""
        if self._loop is None or self._timer is not None:
            return
        polled = any(pid not in self._pidfds for pid in self._watched)
        if polled:
            self._timer = self._loop.call_later(self.POLL_INTERVAL, self._tick)
        elif self._reap_orphans:
            self._timer = self._loop.call_later(self.SWEEP_INTERVAL, self._tick)

    def _reap_any(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._deliver(pid, status)

    def _reap_watched(self) -> None:
        for pid in list(self._watched):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 255 << 8  # collected by someone else: status lost
            if got:
                self._deliver(pid, status)

    def _deliver(self, pid: int, status: int) -> None:
        self._forget_pidfd(pid)
        future = self._watched.pop(pid, None)
        if future is not None and not future.done():
            future.set_result(status)

    def _forget_pidfd(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            if self._loop is not None:
                self._loop.remove_reader(pidfd)
            os.close(pidfd)
