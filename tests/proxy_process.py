"""`wakeproxy serve` as a separate process, for what only a real process shows:
memory use, signals, graceful shutdown and `--workers`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from support import free_port


class ProxyProcess:
    def __init__(self, *args: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.log_path = log_dir / f"proxy-{self.port}.log"
        self._args = [
            sys.executable, "-m", "wakeproxy", "serve",
            "--proxy-listen", f"127.0.0.1:{self.port}",
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--backend", "static",
            *args,
        ]  # fmt: skip
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self._args, stdout=log, stderr=subprocess.STDOUT, env=self._env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"proxy not ready within {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1
            ) as r:
                return bool(r.status == 200) and self.accepts()
        except OSError:
            return False

    def accepts(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exited(self, within: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy still running after {within}s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
