"""The first process of a sandbox: sets up its view of the machine, starts the agent,
reaps orphans, and ends with the agent.

Run by the runtime as `python -I sandbox_init.py` (standard library only, so it needs no
import path and user files in /home/user cannot shadow a module). Its settings come as
JSON on the file descriptor named by `WAKEPROXY_INIT_FD` (a memfd), so secrets such as
the agent's token are in neither argv nor the environment nor a file.

Inside namespaces it is PID 1 and, before starting the agent:
  - brings the loopback interface up (a new network namespace starts with it down);
  - covers the data dir with an empty read-only tmpfs, so a sandbox sees neither the
    platform's records nor other sandboxes (the host's userland stays visible);
  - bind-mounts the sandbox's folder at /home/user; when /home/user does not exist on
    the host it rebuilds /home as a tmpfs holding the host's entries plus `user`, so the
    host is not changed;
  - bind-mounts the resolv.conf it is given over /etc/resolv.conf (when the host's names
    resolvers on its loopback, which the sandbox's network stack forwards to);
  - serves the "socket broker": a unix socket on which the platform asks for a TCP socket
    created in this network namespace and receives it (SCM_RIGHTS). A platform that may
    not setns(2) (not root) reaches sandbox ports this way, with no process copying bytes.
Outside namespaces it makes itself a child subreaper, so that processes that daemonize
stay below it, and kills what is left when the agent ends. There SIGTERM (the signal it
gets when the platform process dies) ends the whole tree, which in a PID namespace the
kernel does when PID 1 dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
FORWARDED = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    result = _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data))
    _check(result, f"mount {source} on {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def hide(folder: str) -> None:
    mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")


def seal(folder: str) -> None:
    mount("none", folder, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


def bind(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC, None)


def make_room_for(target: str) -> None:
    """Make `target` exist in this mount namespace without creating it on the host."""
    if os.path.isdir(target):
        return
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(target)  # no parent to rebuild (a host without /home)
        return
    entries = os.listdir(parent)
    original = os.open(parent, os.O_PATH | os.O_DIRECTORY)
    hide(parent)
    for name in entries:
        source, here = f"/proc/self/fd/{original}/{name}", os.path.join(parent, name)
        if os.path.islink(source):
            os.symlink(os.readlink(source), here)
            continue
        if os.path.isdir(source):
            os.mkdir(here)
        else:
            open(here, "w").close()  # an empty mount point
        bind(source, here)
    os.mkdir(target)
    os.close(original)


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


def unix_address(path: str) -> tuple[str, int | None]:
    """A unix socket address for `path`, shortened through a folder descriptor when it is
    too long for sun_path (108 bytes)."""
    if len(path.encode()) < 100:
        return path, None
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{folder}/{os.path.basename(path)}", folder


def broker_listener(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, folder = unix_address(path)
    try:
        listener.bind(address)
        os.chmod(path, 0o600)
    finally:
        if folder is not None:
            os.close(folder)
    listener.listen(64)
    return listener


def serve_broker(listener: socket.socket) -> None:
    """Answer `<family>\\n` with a new, unconnected TCP socket of this namespace."""
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            try:
                family = socket.AF_INET6 if conn.recv(16).strip() == b"6" else socket.AF_INET
                with socket.socket(family, socket.SOCK_STREAM) as tcp:
                    socket.send_fds(conn, [b"ok"], [tcp.fileno()])
            except OSError as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(f"error {exc}".encode())


def set_up_namespaces(config: dict[str, Any]) -> socket.socket | None:
    """Everything in the module docstring; returns the broker's listening socket (bound
    here, before the data dir it lives in is covered)."""
    if config["loopback"]:
        loopback_up()
    home = os.open(config["home_source"], os.O_PATH | os.O_DIRECTORY)
    resolv = os.open(config["resolv_conf"], os.O_PATH) if config["resolv_conf"] else None
    listener = broker_listener(config["broker"]) if config["broker"] else None
    for folder in config["hide"]:
        hide(folder)
    make_shims(config["shim_dir"], config["shims"])
    for folder in config["hide"]:
        seal(folder)
    make_room_for(config["home"])
    bind(f"/proc/self/fd/{home}", config["home"])
    os.close(home)
    if resolv is not None:
        bind(f"/proc/self/fd/{resolv}", "/etc/resolv.conf")
        os.close(resolv)
    return listener


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
    listener = None
    if config["isolated"]:
        listener = set_up_namespaces(config)
    else:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        make_shims(config["shim_dir"], config["shims"])
    if not config["isolated"]:
        end_tree_on_sigterm()
    agent = start_agent(config)
    if listener is not None:
        threading.Thread(target=serve_broker, args=(listener,), daemon=True).start()
    forward_signals(agent.pid)
    if config["isolated"]:  # as PID 1, SIGTERM would otherwise be ignored
        forward_signals(agent.pid, (signal.SIGTERM,))
    code = reap_until_agent_exits(agent.pid)
    if not config["isolated"]:  # in a PID namespace the kernel does this when we exit
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
