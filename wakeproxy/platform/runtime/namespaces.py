"""Linux namespaces for sandboxes: what this machine allows, and the command that starts a
sandbox's first process inside new ones.

Why `unshare(1)` and not ctypes `unshare(2)` in a `preexec_fn`: a new PID namespace only
applies to children of the caller, so something must fork after unshare(2) and stay
around as the namespace's parent; util-linux's `unshare --fork --kill-child` does exactly
that, in C, and mounts a fresh /proc for the namespace. A `preexec_fn` would run Python
between fork and exec in a threaded process, which can deadlock. util-linux is an
essential package on Debian, so `unshare`, `setpriv` and `mount` are there.

Support is decided by trying: `probe()` runs `unshare ... true` once with the namespaces a
sandbox gets, with a user namespace added when this process is not root (unprivileged user
namespaces). If that fails, sandboxes share the host's network and filesystem view.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class Isolation:
    """What sandboxes get on this machine (decided once per runtime)."""

    namespaces: bool
    user_namespace: bool
    """A user namespace is added (needed when this process is not root)."""
    reason: str = ""
    """Why there are no namespaces, for the warning."""


def unshare_argv(argv: Sequence[str], *, user_namespace: bool) -> list[str]:
    """`argv` as the first process (PID 1) of new network, PID and mount namespaces.

    The `unshare` process stays in the host's PID namespace as the parent of PID 1;
    `--kill-child` makes PID 1 die with it, and when PID 1 dies the kernel kills every
    other process of the namespace. `--mount-proc` gives the namespace its own /proc
    (mount propagation is private by default, so nothing leaks back to the host)."""
    user = ["--user", "--map-root-user"] if user_namespace else []
    return [
        "unshare",
        *user,
        "--net",
        "--pid",
        "--mount",
        "--fork",
        "--kill-child=KILL",
        "--mount-proc",
        "--",
        *argv,
    ]


def pdeathsig_argv(argv: Sequence[str], signal: str = "KILL") -> list[str]:
    """`argv` with `signal` as its parent-death signal: sent when the process (really: the
    thread) that started it dies. The setting survives exec, and is set before exec so
    there is no window in which the parent could die unnoticed."""
    return ["setpriv", "--pdeathsig", signal, "--", *argv]


async def probe(*, user_namespace: bool | None = None) -> Isolation:
    """Try the namespaces a sandbox would get. `user_namespace=None`: only when not root."""
    if shutil.which("unshare") is None:
        return Isolation(False, False, "util-linux `unshare` is not installed")
    wanted = os.geteuid() != 0 if user_namespace is None else user_namespace
    options = [wanted] if user_namespace is not None or wanted else [False, True]
    reason = ""
    for with_user in options:
        reason = await _try(unshare_argv(["true"], user_namespace=with_user))
        if not reason:
            return Isolation(True, with_user)
    return Isolation(False, False, reason)


async def _try(argv: list[str]) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = await process.communicate()
    except OSError as exc:
        return str(exc)
    if process.returncode == 0:
        return ""
    return err.decode(errors="replace").strip() or f"exit status {process.returncode}"


def _libc_setns() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.setns
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_setns = _libc_setns()


def setns(fd: int, nstype: int) -> None:
    """Move the calling *thread* into the namespace `fd` refers to (Python 3.11 has no
    os.setns)."""
    if _setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def can_setns(own_netns: int) -> bool:
    """Whether this process may switch network namespaces (needs CAP_SYS_ADMIN). Tried in
    a throwaway thread by re-entering our own namespace, which changes nothing."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            setns(own_netns, CLONE_NEWNET)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="wakeproxy-setns-probe")
    thread.start()
    thread.join()
    return result == [True]


def same_namespace(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
