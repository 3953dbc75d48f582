"""What every scenario shares: processes pinned to cores, free ports, waiting, the machine.

Each measured thing runs in its own process, started with `taskset` so that the load
generator, the proxy and the upstream each get a core where the machine has enough.
`Procs` owns them: leaving its block ends every process it started (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Build:
    """Which wakeproxy the proxy processes run: an interpreter and the environment that
    decides what it imports.

    The checkout build puts the checkout bench/ is in first on `PYTHONPATH` (the package
    need not be installed); an installed build clears `PYTHONPATH` so that the
    interpreter's own install (e.g. a compiled build in a virtual environment) is used.
    """

    name: str  # "pure Python" or "compiled (mypyc)"
    python: str
    env: tuple[tuple[str, str], ...]

    @property
    def environ(self) -> dict[str, str]:
        return dict(self.env)

    @classmethod
    def checkout(cls, python: str = PYTHON) -> Build:
        inherited = os.environ.get("PYTHONPATH", "")
        path = os.pathsep.join(p for p in (str(REPO), inherited) if p)
        return cls("pure Python", python, (("PYTHONPATH", path),))

    @classmethod
    def installed(cls, python: str) -> Build:
        env = (("PYTHONPATH", ""),)
        probe = "import wakeproxy.proxy.exchange as m; print(m.__file__)"
        where = subprocess.run(
            [python, "-c", probe], env={**os.environ, **dict(env)},
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        compiled = not where.endswith(".py")
        return cls("compiled (mypyc)" if compiled else "pure Python", python, env)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far (nginx's worker is
    its master's child), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid → (parent, seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total, changed = {pid}, 0.0, True
    while changed:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                changed = True
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


@dataclass(frozen=True)
class Cores:
    """Which cores each role gets (as `taskset -c` lists)."""

    load: str  # wrk and the other clients
    proxy: str  # the proxy measured (nginx or wakeproxy)
    upstream: str  # what the proxy forwards to
    all: str  # `--workers 2`: both cores

    @classmethod
    def detect(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 3:
            return cls(str(cpus[0]), str(cpus[1]), str(cpus[2]), f"{cpus[1]},{cpus[2]}")
        if len(cpus) == 2:
            # Two cores: the proxy, the thing measured, gets one to itself; the load
            # generator and the upstream share the other (nginx's upstream is cheap).
            return cls(str(cpus[0]), str(cpus[1]), str(cpus[0]), f"{cpus[0]},{cpus[1]}")
        one = str(cpus[0])
        return cls(one, one, one, one)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(url, headers, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of a Prometheus metric's samples named `name` whose labels contain `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            base = head.split("{", 1)[0]
            if base == name and labels in head:
                total += float(value)
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of one process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Procs:
    """Processes started for one scenario; all are ended when the block exits."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._procs: list[subprocess.Popen[bytes]] = []
        self.named: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            stop(proc)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cores: str | None,
        env: dict[str, str] | None = None,
        stdout_file: bool = True,
    ) -> subprocess.Popen[bytes]:
        command = ["taskset", "-c", cores, *argv] if cores else list(argv)
        out = (self.logdir / f"{name}.out").open("wb") if stdout_file else subprocess.DEVNULL
        err = (self.logdir / f"{name}.err").open("wb")
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._procs.append(proc)
        self.named[name] = proc
        return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _tool_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "missing"
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cores": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "wakeproxy": _version("wakeproxy"),
        "nginx": _tool_version(["nginx", "-v"]),
        "caddy": _tool_version(["caddy", "version"]),
        "valgrind": _tool_version(["valgrind", "--version"]),
        "wrk": _tool_version(["wrk", "-v"]),
        "redis-server": _tool_version(["redis-server", "--version"]),
    }


@contextlib.contextmanager
def raised_nofile(limit: int = 65536) -> Iterator[None]:
    """Raise this process's open-file limit (children inherit it): 10,000 proxied
    WebSockets take 20,000 descriptors in the proxy. Root may raise the hard limit too."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
