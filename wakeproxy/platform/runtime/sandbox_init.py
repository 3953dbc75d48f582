"""The first process of a plain-process sandbox (`ProcessRuntime`): starts the agent,
reaps orphans, and ends with the agent.

Run by the runtime as `python -I sandbox_init.py` (standard library only, so it needs no
import path and user files in the sandbox's home cannot shadow a module). Its settings
come as JSON on the file descriptor named by `WAKEPROXY_INIT_FD` (a memfd), so secrets such
as the agent's token are in neither argv nor the environment nor a file.

It makes itself a child subreaper, so that processes that daemonize stay below it, and
kills what is left when the agent ends. SIGTERM (the signal it gets when the platform
process dies) ends the whole tree too: with no PID namespace, nothing else would.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from typing import Any

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
FORWARDED = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


def make_shims(folder: str, shims: dict[str, str]) -> None:
    """Symlinks such as python -> /usr/bin/python3, replaced atomically."""
    if not shims:
        return
    os.makedirs(folder, exist_ok=True)
    for name, target in shims.items():
        temporary = os.path.join(folder, f".{name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os.symlink(target, temporary)
        os.replace(temporary, os.path.join(folder, name))


def die_with_init() -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_agent(config: dict[str, Any]) -> subprocess.Popen[bytes]:
    # Called while this process has one thread, so running `die_with_init` (one prctl)
    # between fork and exec is safe.
    return subprocess.Popen(
        config["argv"],
        env=config["env"],
        cwd=config["home"],
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_init,
    )


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = open(f"/proc/{name}/stat").read()  # noqa: SIM115
            parents[int(name)] = int(text[text.rindex(")") + 2 :].split()[1])
    found, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def end_tree() -> None:
    """SIGKILL every descendant, stopping them first so none forks out of reach."""
    stopped: set[int] = set()
    while fresh := [pid for pid in descendants(os.getpid()) if pid not in stopped]:
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped.update(fresh)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def end_tree_on_sigterm() -> None:
    def handler(signum: int, _frame: object) -> None:
        end_tree()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def reap_until_agent_exits(agent: int) -> int:
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == agent:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def forward_signals(agent: int, signals: tuple[int, ...] = FORWARDED) -> None:
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signum)

    for signum in signals:
        signal.signal(signum, forward)


def read_config() -> dict[str, Any]:
    fd = int(os.environ.pop("WAKEPROXY_INIT_FD"))
    with os.fdopen(fd, "rb") as source:
        config: dict[str, Any] = json.loads(source.read())
    return config


def main() -> int:
    config = read_config()
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    make_shims(config["shim_dir"], config["shims"])
    end_tree_on_sigterm()
    agent = start_agent(config)
    forward_signals(agent.pid)
    code = reap_until_agent_exits(agent.pid)
    end_tree()
    return code


if __name__ == "__main__":
    try:
        status = main()
    except Exception as exc:
        print(f"sandbox init: {exc}", file=sys.stderr, flush=True)
        status = 1
    sys.stdout.flush()
    os._exit(status)
