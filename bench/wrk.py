"""wrk runs, read through a Lua `done` hook that prints exact numbers as JSON.

Two modes:
  * saturating: `connections` keep-alive connections each send the next request as soon
    as the answer arrives (wrk's normal closed loop); req/s is the capacity.
  * paced: each connection waits `delay_ms` after every answer before its next request
    (wrk's `delay()` hook), which caps the offered load near connections / delay. wrk2,
    which offers a constant rate and corrects for coordinated omission, is not packaged
    for Debian; pacing is the closest plain wrk gets. Both paths see the same pacing, and
    the load each one actually got is reported next to its latencies.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"requests": %d, "duration_us": %d, "socket_errors": %d, '
    .. '"status_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""

_DELAY = "delay = function() return {ms} end\n"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _script(delay_ms: int) -> Path:
    text = _DONE + (_DELAY.format(ms=delay_ms) if delay_ms else "")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(text)
    return Path(handle.name)


def run_wrk(
    url: str,
    host: str,
    *,
    cores: str,
    seconds: float,
    connections: int = 50,
    delay_ms: int = 0,
) -> WrkResult:
    script = _script(delay_ms)
    try:
        argv = [
            "taskset", "-c", cores, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
            "--timeout", "5s", "-H", f"Host: {host}", "-s", str(script), url,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        script.unlink()
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            secs = raw["duration_us"] / 1e6
            return WrkResult(
                requests=raw["requests"],
                seconds=secs,
                rps=raw["requests"] / secs,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                errors=raw["socket_errors"] + raw["status_errors"],
            )
    raise RuntimeError(f"wrk printed no result: {done.stdout}\n{done.stderr}")
