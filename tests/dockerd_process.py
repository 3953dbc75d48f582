"""A Docker daemon of the tests' own, and a Debian base image made without a registry.

`Dockerd` runs Debian's `dockerd` with its own --data-root, --exec-root, --pidfile and unix
socket, so it shares nothing with a system daemon or another test's. It makes no bridge
and touches no iptables (`--bridge=none --iptables=false`): containers run with
`--network host`, which also lets builds reach a package mirror the host reaches.

`base_image_tar()` is Debian 12 (`debootstrap --variant=minbase bookworm`) as a tar for
`docker import`, kept in ~/.cache/wakeproxy-tests between runs: no image registry is
reachable from CI, and debootstrap only needs the Debian mirror apt uses.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("WAKEPROXY_TEST_CACHE", Path.home() / ".cache" / "wakeproxy-tests"))
DEBIAN_MIRROR = os.environ.get("WAKEPROXY_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
START_TIMEOUT = 60.0  # bounds the wait for a daemon that should start; measures nothing


def require_dockerd() -> str:
    """The dockerd binary; skips (saying how to get it) only when it cannot be had here."""
    binary = shutil.which("dockerd")
    if binary is None:
        pytest.skip("dockerd is not installed: scripts/test installs Debian's docker.io")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root; run the image tests as root (CI does)")
    return binary


class Dockerd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.log_path = workdir / "dockerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> Dockerd:
        args = [
            require_dockerd(),
            "--data-root", str(self.workdir / "data"),
            "--exec-root", str(self.workdir / "exec"),
            "--pidfile", str(self.workdir / "docker.pid"),
            "-H", self.host,
            "--bridge=none", "--iptables=false", "--ip6tables=false",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dockerd exited {self._process.returncode}:\n{self.log()}")
            if self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs the docker client against this daemon."""
        result = subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
        )
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(
                result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
            )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stderr}")
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        containers = self.docker("ps", "-aq", check=False).stdout.split()
        if containers:
            self.docker("rm", "-f", *containers, check=False)
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        # dockerd leaves its network namespace bind-mounted; unmount what is left under
        # the workdir, then drop the images (a gigabyte or more per run).
        for mount in reversed(_mounts_under(self.workdir)):
            subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
        shutil.rmtree(self.workdir / "data", ignore_errors=True)
        shutil.rmtree(self.workdir / "exec", ignore_errors=True)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [point for point in points if point.startswith(prefix)]


def base_image_tar() -> Path:
    """Debian 12 minbase as a tar, made once with debootstrap and cached."""
    tar = CACHE / "bookworm-minbase.tar"
    if tar.exists():
        return tar
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed: scripts/test installs it")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        root = Path(scratch) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        partial = Path(scratch) / "base.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.replace(tar)
    return tar
