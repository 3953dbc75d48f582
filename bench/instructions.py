"""Instructions per request, counted by valgrind's callgrind: this machine has no hardware
performance counters, and an instruction count does not move with the load of a shared
machine as CPU time does.

Each proxy is started once more under `valgrind --tool=callgrind` on the proxy core.
`WARMUP` requests fill its pools and caches; then its counters are zeroed
(`callgrind_control -z`), exactly N requests are sent over a few keep-alive connections
(`clients.py count`, every answer checked to be a 200) and the counters are dumped
(`callgrind_control -d`). What is counted is every user-space instruction of the proxy
process (its libraries and event loop included, the kernel not), divided by N.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from common import BENCH_DIR, PYTHON, Procs

WARMUP = 300
CONNECTIONS = 4

Start = Callable[[tuple[str, ...]], int]  # starts a proxy under `wrapper`; returns its port


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def per_request(procs: Procs, name: str, start: Start, host: str, cores: str, n: int) -> float:
    """User-space instructions the proxy `start` starts spends per request, over `n`."""
    out = procs.logdir / f"callgrind-{name}"
    out.mkdir(exist_ok=True)
    port = start(("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/out.%p"))
    proc = procs.named[name]
    _send(port, host, WARMUP, cores)
    _control("-z", proc.pid)
    _send(port, host, n, cores)
    _control("-d", proc.pid)
    dumps = sorted(out.glob(f"out.{proc.pid}.*"), key=lambda p: int(p.suffix[1:]))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {name} in {out}")
    return _totals(dumps[-1]) / n


def _send(port: int, host: str, n: int, cores: str) -> None:
    argv = [PYTHON, str(BENCH_DIR / "clients.py"), "count", str(port), host, str(n),
            str(CONNECTIONS)]  # fmt: skip
    done = subprocess.run(
        ["taskset", "-c", cores, *argv], capture_output=True, text=True, timeout=900, check=True
    )
    got = json.loads(done.stdout.splitlines()[0])
    if got["ok"] != n:
        raise RuntimeError(f"{got['ok']} of {n} requests were answered 200: {got}")


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, check=True)


def _totals(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")
