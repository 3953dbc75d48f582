"""Calls to the `runc` binary, each one bounded by a timeout.

runc keeps its containers' state under `--root` (in the platform's data dir): a
restarted platform asks it what still runs (`state`) and takes those back. Errors of
runc come back as `RuncError` with what runc wrote (its log is JSON lines; the message
of the last error is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wakeproxy.errors import WakeproxyError

TIMEOUT = 20.0


class RuncError(WakeproxyError):
    """runc failed (or did not answer in time); the message holds what it said."""


class ContainerNotFound(RuncError, LookupError):
    """runc does not know that container."""


@dataclass(frozen=True, slots=True)
class ContainerState:
    status: str
    """"created", "running", "paused" or "stopped"."""
    pid: int


@dataclass(frozen=True, slots=True)
class Runc:
    binary: str
    root: Path
    """runc's state folder."""

    @classmethod
    def find(cls, root: Path) -> Runc | None:
        binary = shutil.which("runc")
        return None if binary is None else cls(binary, root)

    async def create(self, container: str, bundle: Path, pid_file: Path, log: Path) -> None:
        """Create the container: its namespaces, mounts and cgroup, and its first process
        waiting to be started. That process's output goes to `log` (so do runc's own
        messages: a pipe would be inherited by the container and never close)."""
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            offset = os.lseek(fd, 0, os.SEEK_END)
            try:
                # No session keyring per sandbox: the kernel charges each to the sandbox's
                # root (one host uid for every sandbox) and frees it only minutes after the
                # sandbox ends, so a few hundred creates exhaust the quota ("disk quota
                # exceeded"). The seccomp profile denies the keyring calls anyway.
                await self._run("create", "--no-new-keyring", "--bundle", str(bundle),
                                "--pid-file", str(pid_file), container,
                                stdout=fd, stderr=fd)  # fmt: skip
            except RuncError as exc:
                raise RuncError(f"runc create: {_message(_read_from(log, offset))}") from exc
        finally:
            os.close(fd)

    async def start(self, container: str) -> None:
        await self._run("start", container)

    async def pause(self, container: str) -> None:
        await self._run("pause", container)

    async def resume(self, container: str) -> None:
        await self._run("resume", container)

    async def kill(self, container: str, signal: str = "KILL") -> None:
        await self._run("kill", "--all", container, signal)

    async def delete(self, container: str) -> None:
        """Kill and remove it; a container runc does not know is fine."""
        with contextlib.suppress(ContainerNotFound):
            await self._run("delete", "--force", container)

    async def state(self, container: str) -> ContainerState:
        out = await self._run("state", container)
        document = json.loads(out)
        return ContainerState(str(document["status"]), int(document.get("pid") or 0))

    async def _run(self, *args: str, stdout: Any = PIPE, stderr: Any = PIPE) -> bytes:
        argv = [self.binary, "--root", str(self.root), "--log-format", "json", *args]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuncError(f"runc {args[0]} did not finish within {TIMEOUT:g} s") from None
        if process.returncode != 0:
            message = _message(err or b"")
            error = ContainerNotFound if "does not exist" in message else RuncError
            raise error(f"runc {args[0]}: {message}")
        return out or b""


def _message(stderr: bytes) -> str:
    """The last error runc logged (JSON lines on stderr), or its raw output."""
    message = ""
    for line in stderr.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            message = line.strip() or message
            continue
        if isinstance(entry, dict):
            message = str(entry.get("msg", line))
    return message or "failed with no message"


def _read_from(path: Path, offset: int, limit: int = 8000) -> bytes:
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(offset, size - limit))
        return file.read()
