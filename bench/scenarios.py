"""The six scenarios of issue 7. Each takes a `Run` and returns (markdown table, raw data).

Every path in a scenario is measured in the same run, interleaved round by round (path A,
path B, ..., then the next round), so drift on the machine hits all paths alike; tables
quote the median of the rounds.

Scenario 1 also has a reference row that is not a proxy: "byte relay (Python + uvloop, no
HTTP)" (`byte_relay.py`), the floor of what any Python proxy on uvloop can do here; see
`hot_path` for every row.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import instructions
from common import (
    BENCH_DIR,
    PYTHON,
    Build,
    Cores,
    Procs,
    cpu_seconds,
    free_port,
    http_get,
    median,
    metric,
    rss_kib,
    stop,
    wait_port,
)
from peers import (
    bench_host,
    start_byte_relay,
    start_caddy,
    start_nginx_proxy,
    start_origin,
    start_redis,
    start_wakeproxy,
)
from sandboxes import sdk_env, serving_sandbox, start_platform
from wrk import WrkResult, run_wrk

Table = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Run:
    workdir: Path
    cores: Cores
    rounds: int  # measured runs per path
    seconds: float  # one wrk run
    connections: int
    storm: int  # scenario 3 clients
    held: int  # scenarios 4 and 5: requests held, WebSockets open
    body_mib: int
    build: Build  # the wakeproxy measured
    pure: Build | None  # with a compiled `build`: the pure-Python build, measured beside it
    counted: int  # requests per proxy under callgrind (0: no instruction counts)


@dataclass(frozen=True)
class Path_:
    name: str
    port: int
    host: str
    pid: int | None = None  # the proxy process (its CPU time is read from /proc), if any


@dataclass(frozen=True)
class Measured:
    """One wrk run on one path, and the CPU time its proxy process tree spent in it."""

    wrk: WrkResult
    cpu_s: float | None

    @property
    def cpu_us_per_request(self) -> float:
        if self.cpu_s is None or not self.wrk.requests:
            return float("nan")
        return self.cpu_s / self.wrk.requests * 1e6

    @property
    def busy(self) -> float:
        """The share of one core the proxy used during the run."""
        return float("nan") if self.cpu_s is None else self.cpu_s / self.wrk.seconds


def _wrk_table(rows: dict[str, list[Measured]], peer: str) -> tuple[str, dict[str, Any]]:
    """req/s and latency, and the proxy's CPU per request from /proc: on a loaded machine a
    peer may not saturate its core, and then the req/s ratio alone flatters the slower
    proxy; the CPU-time ratio does not."""
    lines = [
        f"| path | req/s | p50 ms | p99 ms | ratio to {peer} | CPU µs/request "
        f"| CPU ratio to {peer} | proxy core busy | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    data: dict[str, Any] = {}
    peer_rps = median([r.wrk.rps for r in rows[peer]]) if peer in rows else float("nan")
    peer_cpu = median([r.cpu_us_per_request for r in rows[peer]]) if peer in rows else float("nan")
    for name, results in rows.items():
        rps = median([r.wrk.rps for r in results])
        p50 = median([r.wrk.p50_ms for r in results])
        p99 = median([r.wrk.p99_ms for r in results])
        cpu = median([r.cpu_us_per_request for r in results])
        busy = median([r.busy for r in results])
        errors = sum(r.wrk.errors for r in results)
        ratio, cpu_ratio = rps / peer_rps, peer_cpu / cpu
        lines.append(
            f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio:.3f} | {cpu:.1f} "
            f"| {cpu_ratio:.3f} | {busy:.0%} | {errors} |"
        )
        data[name] = {
            "rps": rps,
            "p50_ms": p50,
            "p99_ms": p99,
            "ratio_to_peer": ratio,
            "cpu_us_per_request": cpu,
            "cpu_ratio_to_peer": cpu_ratio,
            "busy": busy,
            "errors": errors,
            "runs": [{**r.wrk.as_dict(), "cpu_s": r.cpu_s} for r in results],
        }
    return "\n".join(lines), data


def _measure(paths: list[Path_], run: Run, **wrk: Any) -> dict[str, list[Measured]]:
    rows: dict[str, list[Measured]] = {p.name: [] for p in paths}
    for path in paths:  # warm-up: pools filled, code paths hot
        run_wrk(f"http://127.0.0.1:{path.port}/", path.host, cores=run.cores.load, seconds=2)
    for _ in range(run.rounds):
        for path in paths:
            url = f"http://127.0.0.1:{path.port}/"
            before = None if path.pid is None else cpu_seconds(path.pid)
            result = run_wrk(url, path.host, cores=run.cores.load, seconds=run.seconds, **wrk)
            spent = None if path.pid is None else cpu_seconds(path.pid) - before  # type: ignore[operator]
            rows[path.name].append(Measured(result, spent))
    return rows


def hot_path(run: Run, procs: Procs) -> tuple[Table, Table, Table, Table]:
    """Scenarios 1 and 6: saturating load, the same paced load, instructions per request
    under callgrind, and Redis enabled.

    Rows of scenario 1 (saturated; ratios are to "nginx proxy, 1 worker"):
    - direct: the nginx origin alone on the proxy core, no proxy in between;
    - nginx proxy, 1 worker: the peer;
    - Caddy, GOMAXPROCS=1: the second peer, for the Go reverse proxies;
    - byte relay (Python + uvloop, no HTTP): a reference, not a proxy (`byte_relay.py`):
      one upstream connection per client connection, bytes copied both ways, nothing
      parsed; the floor of what any Python proxy on uvloop can do here;
    - wakeproxy serve with 1 worker (the build measured, and the pure-Python build next to
      a compiled one) and with `--workers 2`, and `wakeproxy up` in front of a sandbox.
    The paced table has direct, nginx proxy and wakeproxy serve (1 worker) only; scenario
    6 compares wakeproxy serve (1 worker) with the same and a Redis store.
    """
    c = run.cores
    origin, _ = start_origin(procs, run.workdir, c.upstream)
    direct_dir = run.workdir / "direct"
    direct_dir.mkdir(exist_ok=True)
    direct, _ = start_origin(procs, direct_dir, c.proxy)  # the origin alone on the proxy core
    nginx = start_nginx_proxy(procs, run.workdir, c.proxy, origin)
    caddy = start_caddy(procs, run.workdir, c.proxy, origin)
    relay = start_byte_relay(procs, c.proxy, origin)  # on the proxy core, as wakeproxy-w1
    wp1, _ = start_wakeproxy(procs, c.proxy, run.build, name="wakeproxy-w1")
    wp2, _ = start_wakeproxy(procs, c.all, run.build, name="wakeproxy-w2", workers=2)
    redis_url = start_redis(procs, run.workdir, c.upstream)
    wpr, _ = start_wakeproxy(procs, c.proxy, run.build, name="wakeproxy-redis", redis_url=redis_url)
    platform = start_platform(procs, run.workdir, c.proxy, run.build)
    sandbox, sandbox_host, server = serving_sandbox(platform)
    host = bench_host(origin)

    def pid(name: str) -> int:
        return procs.named[name].pid

    direct_path = Path_("direct (nginx origin, own core)", direct, host)
    nginx_path = Path_("nginx proxy, 1 worker", nginx, host, pid("nginx-proxy"))
    wp1_path = Path_("wakeproxy serve, 1 worker", wp1, host, pid("wakeproxy-w1"))
    builds = [wp1_path]
    if run.pure is not None:
        wpp, _ = start_wakeproxy(procs, c.proxy, run.pure, name="wakeproxy-pure")
        builds.append(
            Path_("wakeproxy serve, 1 worker, pure Python", wpp, host, pid("wakeproxy-pure"))
        )
    paths = [
        direct_path,
        nginx_path,
        Path_("Caddy, GOMAXPROCS=1", caddy, host, pid("caddy")),
        Path_("byte relay (Python + uvloop, no HTTP)", relay, host, pid("byte-relay")),
        *builds,
        Path_("wakeproxy serve, --workers 2 (both cores)", wp2, host, pid("wakeproxy-w2")),
        Path_(f"wakeproxy up → sandbox ({server})", platform.proxy_port, sandbox_host),
    ]
    redis_path = Path_("wakeproxy serve, 1 worker, Redis store", wpr, host, pid("wakeproxy-redis"))
    redis_paths = [wp1_path, redis_path]
    try:
        saturated = _measure([*paths, redis_path], run, connections=run.connections)
        text, data = _wrk_table({p.name: saturated[p.name] for p in paths}, nginx_path.name)
        data["sandbox_server"] = server
        data["build"] = run.build.name
        paced = _paced(
            run,
            [direct_path, nginx_path, wp1_path],
            median([r.wrk.rps for r in saturated[wp1_path.name]]),
            nginx_path.name,
        )
        redis = _wrk_table({p.name: saturated[p.name] for p in redis_paths}, wp1_path.name)
    finally:
        with sdk_env(platform):
            sandbox.kill()
    counted = _instructions(run, procs, origin, data)
    return (text, data), paced, counted, redis


def _instructions(run: Run, procs: Procs, origin: int, saturated: dict[str, Any]) -> Table:
    """Each proxy once more, under callgrind: user-space instructions per request."""
    if not run.counted or not instructions.available():
        return "Not measured (valgrind missing, or `--instructions 0`).", {}
    c, workdir, host = run.cores, run.workdir, bench_host(origin)
    starts: dict[str, tuple[str, instructions.Start]] = {
        "nginx proxy, 1 worker": (
            "cg-nginx",
            lambda w: start_nginx_proxy(
                procs, workdir, c.proxy, origin, name="cg-nginx", wrapper=w
            ),
        ),
        "Caddy, GOMAXPROCS=1": (
            "cg-caddy",
            lambda w: start_caddy(procs, workdir, c.proxy, origin, name="cg-caddy", wrapper=w),
        ),
        "wakeproxy serve, 1 worker": (
            "cg-wakeproxy",
            lambda w: start_wakeproxy(procs, c.proxy, run.build, name="cg-wakeproxy", wrapper=w)[0],
        ),
    }
    if run.pure is not None:
        pure = run.pure
        starts["wakeproxy serve, 1 worker, pure Python"] = (
            "cg-wakeproxy-pure",
            lambda w: start_wakeproxy(procs, c.proxy, pure, name="cg-wakeproxy-pure", wrapper=w)[0],
        )
    counts: dict[str, float] = {}
    for path, (name, start) in starts.items():
        try:
            counts[path] = instructions.per_request(procs, name, start, host, c.load, run.counted)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            counts[path] = float("nan")
            print(f"callgrind: {path}: {error}", flush=True)
        stop(procs.named[name])
    peer = counts.get("nginx proxy, 1 worker", float("nan"))
    lines = [
        f"{run.counted:,} keep-alive requests per proxy (after {instructions.WARMUP} to warm "
        f"up), {instructions.CONNECTIONS} connections, each proxy alone under "
        "`valgrind --tool=callgrind` on the proxy core.",
        "",
        "| path | instructions per request | ratio to nginx proxy | req/s ratio | CPU-time ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for path, count in counts.items():
        row = saturated.get(path, {})
        lines.append(
            f"| {path} | {count:,.0f} | {count / peer:.2f} "
            f"| {row.get('ratio_to_peer', float('nan')):.3f} "
            f"| {row.get('cpu_ratio_to_peer', float('nan')):.3f} |"
        )
    return "\n".join(lines), {"requests": run.counted, "per_request": counts}


def _paced(run: Run, paths: list[Path_], wakeproxy_rps: float, peer: str) -> Table:
    """Every path at the same offered load: half of what wakeproxy sustains at most.
    The last column compares each p99 with `peer`'s (one of `paths`, the nginx proxy)."""
    delay_ms = 10
    target = wakeproxy_rps / 2
    connections = max(1, round(target * delay_ms / 1000))
    rows = _measure(paths, run, connections=connections, delay_ms=delay_ms)
    lines = [
        f"Offered load: {connections} connections, each waiting {delay_ms} ms after every "
        f"answer (at most ≈{connections * 1000 / delay_ms:,.0f} req/s).",
        "",
        "| path | achieved req/s | p50 ms | p90 ms | p99 ms | p99 - nginx proxy's p99, ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    data: dict[str, Any] = {"connections": connections, "delay_ms": delay_ms}
    peer_p99 = median([r.wrk.p99_ms for r in rows[peer]])
    for name, results in rows.items():
        rps = median([r.wrk.rps for r in results])
        p50, p90, p99 = (
            median([getattr(r.wrk, f) for r in results]) for f in ("p50_ms", "p90_ms", "p99_ms")
        )
        lines.append(
            f"| {name} | {rps:,.0f} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {p99 - peer_p99:+.2f} |"
        )
        data[name] = {"rps": rps, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}
    return "\n".join(lines), data


def _curl_speed(argv: list[str], cores: str) -> float:
    done = subprocess.run(
        ["taskset", "-c", cores, "curl", "-sS", "-o", "/dev/null", *argv],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    code, speed = done.stdout.split()
    if code != "200":
        raise RuntimeError(f"curl got {code}: {argv}")
    return float(speed) / 1e6


def bodies(run: Run, procs: Procs) -> Table:
    """Scenario 2: one large upload and one large download per path, MB/s (10^6 bytes)."""
    c = run.cores
    origin, files = start_origin(procs, run.workdir / "bodies", c.upstream)
    # "direct" gets its own nginx on the proxy core, as in scenario 1: the client and
    # the server it measures never share a core.
    direct, direct_files = start_origin(procs, run.workdir / "bodies-direct", c.proxy)
    big = files / "big"
    for where in (big, direct_files / "big"):
        with where.open("wb") as handle:
            handle.truncate(run.body_mib * 1024 * 1024)
    sink = free_port()
    procs.start("upload-sink", [PYTHON, str(BENCH_DIR / "servers.py"), str(sink)], c.upstream)
    wait_port(sink)
    nginx = start_nginx_proxy(procs, run.workdir / "bodies", c.proxy, origin, uploads=sink)
    wakeproxy, _ = start_wakeproxy(procs, c.proxy, run.build, name="wakeproxy-bodies")
    paths = {
        "direct": (direct, sink),
        "nginx proxy": (nginx, nginx),
        "wakeproxy serve": (wakeproxy, wakeproxy),
    }
    speeds: dict[str, dict[str, list[float]]] = {n: {"up": [], "down": []} for n in paths}
    for _ in range(run.rounds):
        for name, (down_port, up_port) in paths.items():
            speeds[name]["down"].append(_curl_speed(
                ["-H", f"Host: {bench_host(origin)}", "-w", "%{http_code} %{speed_download}",
                 f"http://127.0.0.1:{down_port}/files/big"], c.load))  # fmt: skip
            speeds[name]["up"].append(_curl_speed(
                ["-H", f"Host: {bench_host(sink)}", "-H", "Expect:", "-X", "POST", "-T", str(big),
                 "-w", "%{http_code} %{speed_upload}", f"http://127.0.0.1:{up_port}/upload"],
                c.load))  # fmt: skip
    lines = [
        f"| path | download {run.body_mib} MiB, MB/s | upload {run.body_mib} MiB, MB/s |",
        "| --- | ---: | ---: |",
    ]
    data: dict[str, Any] = {}
    for name, got in speeds.items():
        down, up = median(got["down"]), median(got["up"])
        lines.append(f"| {name} | {down:,.0f} | {up:,.0f} |")
        data[name] = {"download_mb_s": down, "upload_mb_s": up, "runs": got}
    return "\n".join(lines), data


def _client(procs: Procs, name: str, argv: list[str], cores: str) -> subprocess.Popen[bytes]:
    return procs.start(name, [PYTHON, str(BENCH_DIR / "clients.py"), *argv], cores)


def _first_line(procs: Procs, name: str, proc: subprocess.Popen[bytes], timeout: float) -> Any:
    out = procs.logdir / f"{name}.out"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text() if out.exists() else ""
        if text.strip():
            return json.loads(text.splitlines()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(procs.logdir / f'{name}.err').read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} said nothing within {timeout}s")


def wake_storm(run: Run, procs: Procs) -> Table:
    """Scenario 3: `storm` clients at once to one paused sandbox of `wakeproxy up`.

    Each cold storm (the sandbox paused) is followed by a warm one (the same clients, the
    sandbox now running), so the wake's own cost can be told from the cost of 1,000
    requests on 1,000 new connections, which a running sandbox pays too.
    """
    c = run.cores
    platform = start_platform(procs, run.workdir, c.proxy, run.build, name="up-storm")
    sandbox, host, server = serving_sandbox(platform)
    rounds: list[dict[str, Any]] = []

    def one_storm(name: str) -> dict[str, Any]:
        client = _client(
            procs, name, ["storm", str(platform.proxy_port), host, str(run.storm)], c.load
        )
        client.wait(timeout=120)
        got: dict[str, Any] = _first_line(procs, name, client, 5)
        return got

    try:
        for i in range(run.rounds):
            with sdk_env(platform):
                sandbox.pause()
            before = platform.metrics()
            cold = one_storm(f"storm-{i}")
            after = platform.metrics()
            warm = one_storm(f"storm-warm-{i}")
            resume = _delta(before, after, "wakeproxy_sandbox_resume_seconds_sum")
            count = _delta(before, after, "wakeproxy_sandbox_resume_seconds_count")
            wakes = _delta(before, after, "wakeproxy_wakes_total")
            rounds.append({
                "first_to_last_s": cold["first_to_last"],
                "warm_first_to_last_s": warm["first_to_last"],
                "resume_s": resume / count if count else float("nan"),
                "resumes": count,
                "wakes": wakes,
                "ok": cold["ok"],
                "warm_ok": warm["ok"],
                "statuses": cold["statuses"],
                "p50_latency_s": _at(cold["latencies"], 0.5),
                "p99_latency_s": _at(cold["latencies"], 0.99),
                "warm_p99_latency_s": _at(warm["latencies"], 0.99),
                "p99_held_s": _at(cold["waits"], 0.99),
            })  # fmt: skip
    finally:
        with sdk_env(platform):
            sandbox.kill()

    def med(key: str) -> float:
        return median([r[key] for r in rounds])

    over_total = median(
        [r["first_to_last_s"] - r["warm_first_to_last_s"] - r["resume_s"] for r in rounds]
    )
    over_p99 = median(
        [r["p99_latency_s"] - r["warm_p99_latency_s"] - r["resume_s"] for r in rounds]
    )
    held_p99 = median([r["p99_held_s"] - r["resume_s"] for r in rounds])
    lines = [
        "| clients | paused: first request → last response, ms | running: the same, ms "
        "| backend resume, ms | wake overhead (paused - running - resume), ms "
        "| p99: paused - running - resume, ms | p99 held - resume, ms "
        "| resumes (platform) | wakes (proxy) | 200s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {run.storm} | {med('first_to_last_s') * 1000:.1f} "
        f"| {med('warm_first_to_last_s') * 1000:.1f} | {med('resume_s') * 1000:.1f} "
        f"| {over_total * 1000:.1f} | {over_p99 * 1000:.1f} | {held_p99 * 1000:.1f} | "
        f"{_joined(rounds, 'resumes')} | {_joined(rounds, 'wakes')} | {_joined(rounds, 'ok')} |",
    ]
    data = {
        "server": server,
        "rounds": rounds,
        "overhead_ms": over_total * 1000,
        "p99_overhead_ms": over_p99 * 1000,
        "p99_held_minus_resume_ms": held_p99 * 1000,
    }
    return "\n".join(lines), data


def _at(values: list[float], quantile: float) -> float:
    """The `quantile` of sorted `values` (nearest rank)."""
    return values[max(0, math.ceil(len(values) * quantile) - 1)]


def _joined(rounds: list[dict[str, Any]], key: str) -> str:
    return ", ".join(f"{r[key]:g}" for r in rounds)


def _delta(before: str, after: str, name: str) -> float:
    return metric(after, name) - metric(before, name)


def _memory_per(
    pid: int, ready: Callable[[], bool], count: int, timeout: float = 120
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the proxy never reached the count")
        time.sleep(0.2)
    time.sleep(1.0)  # let allocations settle
    return {"rss_after_kib": rss_kib(pid)}


def held(run: Run, procs: Procs) -> Table:
    """Scenario 4: resident memory per request held for a wake that does not end."""
    c = run.cores
    port, admin = free_port(), free_port()
    argv = [run.build.python, str(BENCH_DIR / "held_proxy.py"), str(port), str(admin)]
    proxy = procs.start("held-proxy", argv, c.proxy, env=run.build.environ)
    wait_port(admin)
    wait_port(port)
    time.sleep(0.5)
    base = rss_kib(proxy.pid)
    host = bench_host(3000, "paused")
    client = _client(procs, "held-client", ["hold", str(port), host, str(run.held)], c.load)
    _first_line(procs, "held-client", client, 180)

    def all_held() -> bool:
        text = http_get(f"http://127.0.0.1:{admin}/metrics").decode()
        return metric(text, "wakeproxy_held_requests") >= run.held

    after = _memory_per(proxy.pid, all_held, run.held)["rss_after_kib"]
    per = (after - base) * 1024 / run.held
    lines = [
        "| held requests | proxy RSS before, MiB | with all held, MiB | per held request, KiB |",
        "| ---: | ---: | ---: | ---: |",
        f"| {run.held:,} | {base / 1024:.1f} | {after / 1024:.1f} | {per / 1024:.1f} |",
    ]
    return "\n".join(lines), {
        "held": run.held,
        "rss_before_kib": base,
        "rss_after_kib": after,
        "per_request_kib": per / 1024,
    }


def websockets(run: Run, procs: Procs) -> Table:
    """Scenario 5: memory per idle proxied WebSocket, and echo round trips per second."""
    c = run.cores
    # Each proxied WebSocket takes two descriptors in the proxy (client and upstream); a
    # hard open-file limit that cannot be raised (containers) caps how many fit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    count = run.held if hard == resource.RLIM_INFINITY else min(run.held, (hard - 1000) // 2)
    echo = free_port()
    procs.start("ws-echo-server", [PYTHON, str(BENCH_DIR / "servers.py"), str(echo)], c.upstream)
    wait_port(echo)
    # Default settings: WebSocket sessions do not use the bounded plain-HTTP pool.
    port, admin = start_wakeproxy(procs, c.proxy, run.build, name="wakeproxy-ws")
    host = bench_host(echo)
    rates: dict[str, list[float]] = {"direct": [], "wakeproxy serve": []}
    for i in range(run.rounds):
        for name, target in (("direct", echo), ("wakeproxy serve", port)):
            label = f"ws-echo-{i}-{name.split()[0]}"
            proc = _client(
                procs, label, ["ws-echo", str(target), host, "50", f"{run.seconds:.1f}"], c.load
            )
            proc.wait(timeout=run.seconds + 60)
            rates[name].append(_first_line(procs, label, proc, 5)["round_trips_per_s"])
    wakeproxy = procs.named["wakeproxy-ws"]
    base = rss_kib(wakeproxy.pid)
    client = _client(procs, "ws-idle", ["ws-idle", str(port), host, str(count)], c.load)
    _first_line(procs, "ws-idle", client, 240)

    def all_open() -> bool:
        text = http_get(f"http://127.0.0.1:{admin}/metrics").decode()
        return metric(text, "wakeproxy_websockets_open") >= count

    after = _memory_per(wakeproxy.pid, all_open, count)["rss_after_kib"]
    per = (after - base) / count
    direct, proxied = median(rates["direct"]), median(rates["wakeproxy serve"])
    lines = [
        "| idle WebSockets | proxy RSS before, MiB | with all open, MiB | per WebSocket, KiB "
        "| echo round trips/s direct | through wakeproxy | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {count:,} | {base / 1024:.1f} | {after / 1024:.1f} | {per:.1f} | {direct:,.0f} "
        f"| {proxied:,.0f} | {proxied / direct:.3f} |",
    ]
    data = {
        "open": count,
        "rss_before_kib": base,
        "rss_after_kib": after,
        "per_websocket_kib": per,
        "echo_direct": rates["direct"],
        "echo_wakeproxy": rates["wakeproxy serve"],
        "echo_ratio": proxied / direct,
    }
    return "\n".join(lines), data


def tracing(run: Run, procs: Procs) -> Table:
    """Scenario 7: the hot path of `wakeproxy serve` (1 worker) with tracing off, on with
    every request sampled, and on with 1 in 100. Spans go with OTLP/HTTP to the nginx
    origin's `/`, which answers 200 to anything, so the exporter's thread does its whole
    job (encode, POST) on the proxy's core, as it would next to a collector."""
    c = run.cores
    origin, _ = start_origin(procs, run.workdir, c.upstream)
    host = bench_host(origin)
    sink = {
        "WAKEPROXY_TRACING_ENABLED": "true",
        "WAKEPROXY_TRACING_ENDPOINT": f"http://127.0.0.1:{origin}/",
    }
    variants = {
        "tracing off": {},
        "tracing on, every request sampled": sink,
        "tracing on, 1 in 100 sampled": {**sink, "WAKEPROXY_TRACING_SAMPLE_RATIO": "0.01"},
    }
    paths = []
    for index, (label, env) in enumerate(variants.items()):
        name = f"wakeproxy-tracing-{index}"
        port, _ = start_wakeproxy(procs, c.proxy, run.build, name=name, env=env)
        paths.append(
            Path_(f"wakeproxy serve, 1 worker, {label}", port, host, procs.named[name].pid)
        )
    rows = _measure(paths, run, connections=run.connections)
    return _wrk_table(rows, paths[0].name)
