"""`wakeproxy up` as a separate process: the whole system, as a user starts it.

`PlatformProcess.env` holds the three `E2B_*` variables it printed, so tests can run the
unmodified `e2b` SDKs (in-process or as a child process) against it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from support import free_port

_ENV_NAMES = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")


class PlatformProcess:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.proxy_port = free_port()
        self.api_port = free_port()
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / f"up-{self.proxy_port}.log"
        self.out_path = workdir / f"up-{self.proxy_port}.out"
        self._args = [
            sys.executable, "-m", "wakeproxy", "up",
            "--proxy-listen", f"127.0.0.1:{self.proxy_port}",
            "--api-listen", f"127.0.0.1:{self.api_port}",
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            "--log-format", "text",
            *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def domain(self) -> str:
        return f"localhost:{self.proxy_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start(self, timeout: float = 30.0) -> PlatformProcess:
        with self.out_path.open("wb") as out, self.log_path.open("wb") as err:
            self.proc = subprocess.Popen(self._args, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wakeproxy up exited {self.proc.returncode}:\n{self.log()}")
            self.env = self._printed_env()
            if len(self.env) == len(_ENV_NAMES) and self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"wakeproxy up not ready within {timeout}s:\n{self.log()}")

    def _printed_env(self) -> dict[str, str]:
        found = {}
        for line in self.out_path.read_text(errors="replace").splitlines():
            name, _, value = line.partition("=")
            if name in _ENV_NAMES:
                found[name] = value
        return found

    def _ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.admin_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def sdk_env(self) -> dict[str, str]:
        """The environment for an SDK child process: this one's plus the three variables."""
        return {**os.environ, **self.env}

    def log(self) -> str:
        out = self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
        err = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return (out + err)[-6000:]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
