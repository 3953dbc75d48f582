"""Starting processes: command lines, the plain-process init's settings, our children.

A `ProcessRuntime` sandbox's first process is built from layers, outermost first; each
layer execs the next, so they are all one process (the "root", our child):

    setpriv --pdeathsig TERM --          dies with this process (unless it should survive;
                                         on TERM the init ends its tree, see `sandbox_init`)
    sh -c 'echo $$ > cgroup.procs' ...   joins the sandbox's cgroup before anything forks
    python -I sandbox_init.py            the init: starts the agent, reaps, ends the tree

Children are spawned with posix_spawn and reaped with waitpid by us (not `Popen`), so a
runtime can forget a sandbox it leaves running for a restarted platform to adopt.
`RuncRuntime` uses `wrap`, `spawn` and `Child` for its network stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wakeproxy.platform.runtime import cgroups, procfs

AGENT_COMMAND = (
    sys.executable,
    "-P",
    "-s",
    "-c",
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('wakeproxy.platform.agent', run_name='__main__', alter_sys=True)",
    str(Path(__file__).resolve().parents[3]),
)
"""`python -m wakeproxy.platform.agent`, importing the very copy of wakeproxy this platform
runs (whatever else is installed, and without relying on PYTHONPATH, which the sandbox
does not get). -P and -s: files and packages a user puts in /home/user never shadow the
agent's modules."""
TOKEN_ENV = "WAKEPROXY_AGENT_TOKEN"
"""The agent reads its token from here (and removes it from what it runs): a `--token`
argument would show in every host user's process list."""
INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")
MARKER = "WAKEPROXY_SANDBOX"
"""Environment variable naming `<runtime key>/<sandbox id>` in the root and the network
stack: how a restarted platform recognises its processes."""


def agent_argv(command: Sequence[str], port: int, home: str) -> list[str]:
    return [*command, "--port", str(port), "--home", home]


def root_argv(*, group: Path | None, pdeathsig: bool) -> list[str]:
    # Without a PID namespace nothing ends the init's descendants with it: on SIGTERM the
    # init ends them first (SIGKILL would give it no chance).
    argv = [sys.executable, "-I", str(INIT_SCRIPT)]
    return wrap(argv, group=group, pdeathsig=pdeathsig, signal="TERM")


def wrap(
    argv: list[str], *, group: Path | None, pdeathsig: bool, signal: str = "KILL"
) -> list[str]:
    """`argv` started inside `group` and, with `pdeathsig`, sent `signal` when this
    process dies."""
    if group is not None:
        argv = cgroups.join_argv(group, argv)
    return pdeathsig_argv(argv, signal) if pdeathsig else argv


def pdeathsig_argv(argv: Sequence[str], signal: str = "KILL") -> list[str]:
    """`argv` with `signal` as its parent-death signal: sent when the process (really: the
    thread) that started it dies. The setting survives exec, and is set before exec so
    there is no window in which the parent could die unnoticed."""
    return ["setpriv", "--pdeathsig", signal, "--", *argv]


@dataclass(frozen=True, slots=True)
class InitConfig:
    """What `sandbox_init` reads (see its docstring)."""

    home: str
    shim_dir: str
    shims: Mapping[str, str]
    env: Mapping[str, str]
    argv: Sequence[str]

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "home": self.home,
            "shim_dir": self.shim_dir,
            "shims": dict(self.shims),
            "env": dict(self.env),
            "argv": list(self.argv),
        }
        return json.dumps(document).encode()


@dataclass(frozen=True, slots=True)
class Child:
    """A process we started (or adopted), named by pid and start time."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Child:
        stat = procfs.read_stat(pid)
        return cls(pid, 0 if stat is None else stat.start_time)

    def alive(self) -> bool:
        """False once it has exited; reaps it when it is our child. Only a process with
        the recorded start time is waited for, never another one that took the pid."""
        stat = procfs.read_stat(self.pid)
        if stat is None or (self.start_time and stat.start_time != self.start_time):
            return False
        if stat.dead:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            return False
        return True

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log: Path,
    payload: bytes | None = None,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start `argv` in a new session, stdin from /dev/null, output appended to `log`,
    with `pass_fds` open. `payload` is readable on the descriptor named by
    `WAKEPROXY_INIT_FD`."""
    program = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    env = dict(env)
    opened: list[int] = []
    try:
        if payload is not None:
            opened.append(_readable(payload))
            env["WAKEPROXY_INIT_FD"] = str(opened[-1])
        opened.append(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        pid = os.posix_spawn(
            program,
            list(argv),
            env,
            file_actions=_file_actions(out=opened[-1], keep=[*pass_fds, *opened[:-1]]),
            setsid=True,
            # As `Popen(restore_signals=True)`: Python ignores these, and an ignored
            # SIGPIPE is inherited (pasta, for one, refuses to start with it).
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    finally:
        for fd in opened:
            os.close(fd)
    return Child.of(pid)


def _readable(payload: bytes) -> int:
    """A memory-backed file holding `payload`, positioned at its start."""
    fd = os.memfd_create("wakeproxy-init")
    os.write(fd, payload)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _file_actions(*, out: int, keep: Sequence[int]) -> list[tuple[Any, ...]]:
    # Our descriptors are close-on-exec; dup2 of a descriptor onto itself clears that
    # flag in the child (POSIX; glibc 2.29+, musl), so exactly `keep` reaches it.
    return [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, out, 2),
        *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep),
    ]


def log_tail(path: Path, offset: int, limit: int = 4000) -> str:
    """What was appended to `path` after `offset` (its last `limit` bytes)."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(offset, size - limit))
            return file.read().decode(errors="replace").strip()
    except OSError:
        return ""


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
