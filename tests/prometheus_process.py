"""A real Prometheus and promtool, from Debian's `prometheus` package (scripts/test installs it).

`tool(name)` finds `prometheus` or `promtool` (``$WAKEPROXY_TEST_PROMETHEUS`` /
``$WAKEPROXY_TEST_PROMTOOL`` if set, else PATH) or skips the test, saying why.
`PrometheusServer` runs one Prometheus on 127.0.0.1:<free port> with its own data
directory, scraping the given targets every `scrape_interval` and loading rule files;
it has nothing remote configured. `query()` asks its HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support import free_port

_ENV = {"prometheus": "WAKEPROXY_TEST_PROMETHEUS", "promtool": "WAKEPROXY_TEST_PROMTOOL"}


def tool(name: str) -> str:
    path = os.environ.get(_ENV[name]) or shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed and could not be installed here "
            "(scripts/test installs Debian's prometheus package when apt can)"
        )
    return path


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
        scrape_configs: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.port = free_port()
        self._workdir = workdir
        self._targets = list(targets)
        self._rule_files = [str(path) for path in rule_files]
        self._interval = scrape_interval
        self._scrape_configs = list(scrape_configs)
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        config = {
            "global": {"scrape_interval": self._interval, "evaluation_interval": self._interval},
            "rule_files": self._rule_files,
            "scrape_configs": [
                {
                    "job_name": "wakeproxy",
                    "scrape_timeout": self._interval,
                    "static_configs": [{"targets": self._targets}],
                },
                *self._scrape_configs,
            ],
        }
        config_path = self._workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        args = [
            tool("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self._workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            if self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {timeout}s:\n{self.log()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now (raises on a bad expression)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                document = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr!r}: {exc.read().decode()}") from None
        assert document["status"] == "success", document
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a one-element vector, None when it is empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def active_targets(self, job: str) -> list[dict[str, Any]]:
        """The targets Prometheus scrapes now for `job` (its /api/v1/targets)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=5) as r:
            targets: list[dict[str, Any]] = json.load(r)["data"]["activeTargets"]
        return [target for target in targets if target["labels"].get("job") == job]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
