"""Passwordless `sudo` for the sandbox's `user`, brokered by the agent.

Every process of a sandbox runs with no_new_privs, so a setuid program (the userland's
own `sudo`) cannot raise anyone's privileges. The agent is root inside the sandbox, so it
does it instead: a `sudo` on the sandbox's PATH (ahead of the userland's) hands the
command, its environment and its three standard descriptors (SCM_RIGHTS) to the agent
over a unix socket only `user` and root may open; the agent runs it as root with those
very descriptors (a pipe or a terminal, as the caller had them) and answers its exit
status. That is what `sudo` with `NOPASSWD: ALL` grants `user` in E2B's sandboxes: root
inside the sandbox, never outside it (root here is an unprivileged id on the host).

Understood options: `-u root` (or `-u 0`), `-E` (keep the environment), `-n`, `-H`, `-S`,
`-k` (no-ops without passwords) and `--`; `-i`/`-s` run a (login) shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

from wakeproxy.platform.agent.spawn import ChildReaper

log = logging.getLogger(__name__)

SOCKET = Path("/run/sudo-agent.sock")
MAX_REQUEST = 256 * 1024
"""A request (argv, cwd, environment) larger than this is refused."""

USER_UID = 1000

SHIM = '''#!/usr/bin/env -S python3 -I
"""sudo for `user`: the sandbox's agent runs the command as root (see the agent's
wakeproxy.platform.agent.elevate)."""
import json, os, socket, struct, sys
args, keep_env, shell = sys.argv[1:], False, None
while args and args[0].startswith("-") and args[0] != "-":
    flag = args.pop(0)
    if flag == "--":
        break
    if flag in ("-u", "--user"):
        if not args or args.pop(0) not in ("root", "0", "#0"):
            sys.exit("sudo: only root is available in this sandbox")
    elif flag in ("-E", "--preserve-env"):
        keep_env = True
    elif flag in ("-i", "--login", "-s", "--shell"):
        shell = flag
    elif flag not in ("-n", "-H", "-S", "-k", "--non-interactive", "--set-home", "--stdin"):
        sys.exit("sudo: option %s is not supported in this sandbox" % flag)
if shell in ("-i", "--login"):
    args = ["/bin/bash", "-l"] + (["-c", " ".join(args)] if args else [])
elif shell:
    args = ["/bin/sh"] + (["-c", " ".join(args)] if args else [])
if not args:
    sys.exit("usage: sudo [-E] [-u root] command [args...]")
cwd = "/root" if shell in ("-i", "--login") else os.getcwd()
request = {{"argv": args, "cwd": cwd, "env": dict(os.environ), "keep_env": keep_env}}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    sock.connect({socket!r})
    socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
    answer = sock.recv(4)
except OSError as error:
    sys.exit("sudo: the sandbox agent cannot be reached: %s" % error)
if len(answer) != 4:
    sys.exit("sudo: the sandbox agent did not answer")
sys.exit(struct.unpack("!i", answer)[0])
'''


def root_env(env: Mapping[str, str], keep: bool) -> dict[str, str]:
    """The command's environment: the caller's with -E, else sudo's reset one (PATH, the
    terminal and locale kept), with root's identity and sudo's SUDO_* variables."""
    kept = ("PATH", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "COLORTERM", "DISPLAY")
    base = dict(env) if keep else {k: v for k, v in env.items() if k in kept}
    user = env.get("USER", "user")
    return {
        **base,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "SUDO_USER": user,
        "SUDO_UID": str(USER_UID),
        "SUDO_GID": str(USER_UID),
    }


def parse_request(data: bytes) -> tuple[list[str], str, dict[str, str]]:
    """argv, cwd and environment of a request; ValueError when it is not one."""
    request = json.loads(data)
    argv, cwd, env = request["argv"], request["cwd"], request["env"]
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not isinstance(cwd, str) or not isinstance(env, dict):
        raise ValueError("cwd must be a string and env an object")
    clean = {str(k): str(v) for k, v in env.items()}
    return argv, cwd, root_env(clean, bool(request.get("keep_env")))


class Elevator:
    """Serves the socket `sudo` talks to; one task per request, each owned here."""

    def __init__(self, reaper: ChildReaper, socket_path: Path = SOCKET) -> None:
        self._reaper = reaper
        self._path = socket_path
        self._server: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    def start(self, shim_dir: Path) -> None:
        """Listen and put `sudo` on the PATH; a sandbox where either fails has no sudo
        (logged), and everything else of the agent works as before."""
        try:
            self._server = self._listen()
            install_shim(shim_dir, self._path)
        except OSError as error:
            log.warning("sudo is not available in this sandbox: %s", error)
            self.close()
            return
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    def close(self) -> None:
        for task in [*self._tasks, *filter(None, [self._accepting])]:
            task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None

    def _listen(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            server.bind(str(self._path))
            os.chown(self._path, USER_UID, USER_UID)
            os.chmod(self._path, 0o600)  # user (and root): the sudoers of E2B's sandboxes
            server.listen(16)
            server.setblocking(False)
        except OSError:
            server.close()
            raise
        return server

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._server is not None
        while True:
            conn, _ = await loop.sock_accept(self._server)
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        with conn:
            fds: list[int] = []
            try:
                data, fds = await _receive(conn)
                argv, cwd, env = parse_request(data)
                status = await self._run(argv, cwd, env, fds)
            except (OSError, ValueError, KeyError) as error:
                if len(fds) == 3:
                    with contextlib.suppress(OSError):
                        os.write(fds[2], f"sudo: {error}\n".encode())
                status = 1
            finally:
                for fd in fds:
                    os.close(fd)
            with contextlib.suppress(OSError):
                conn.send(struct.pack("!i", status))

    async def _run(self, argv: list[str], cwd: str, env: dict[str, str], fds: list[int]) -> int:
        if len(fds) != 3:
            raise ValueError("expected the three standard descriptors")
        try:
            child = subprocess.Popen(  # noqa: ASYNC220 (started here, waited for below)
                argv, cwd=cwd, env=env, stdin=fds[0], stdout=fds[1], stderr=fds[2]
            )
        except FileNotFoundError:
            os.write(fds[2], f"sudo: {argv[0]}: command not found\n".encode())
            return 1
        status = await self._reaper.watch(child.pid)
        child.returncode = 0  # reaped by the reaper; keeps Popen from waiting again
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)


async def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        async with asyncio.timeout(10):
            await readable
    finally:
        loop.remove_reader(conn.fileno())
    data, fds, _flags, _address = socket.recv_fds(conn, MAX_REQUEST, 3)
    return data, fds


def install_shim(shim_dir: Path, socket_path: Path) -> None:
    shim_dir.mkdir(parents=True, exist_ok=True)
    target = shim_dir / "sudo"
    temporary = shim_dir / ".sudo.tmp"
    temporary.write_text(SHIM.format(socket=str(socket_path)))
    temporary.chmod(0o755)
    temporary.replace(target)
