"""The relay's own CPU time per request: its Python code alone, no sockets, no kernel.

    python bench/relay_cost.py [N] [--profile] [--installed]

A client connection and a kept-alive upstream link of the real relay (`ClientConnection`,
`Exchange`, `Link`, the real router, gateway, header rules and metrics) are fed a small GET
and a small response N times, in process; their transports are stand-ins that only
collect what is written. What it prints is the cost of the HTTP work itself — parsing,
routing, admission, the header rewrite both ways, framing, recording — which the
byte-relay row of scenario 1 does not pay. The median of 5 runs is quoted; `--profile`
adds a cProfile table sorted by own time. Every request must be written upstream and
answered on the hot path, or the run stops with an error instead of a figure. It measures
the checkout it is in; `--installed` measures the wakeproxy the interpreter has installed
(e.g. a compiled build in a virtual environment).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# The checkout this file is in, unless `--installed`: then the wakeproxy this interpreter
# has installed (how a compiled build is measured).
if "--installed" not in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wakeproxy.backends.base import Upstream
from wakeproxy.backends.static import StaticBackend
from wakeproxy.gateway import Gateway
from wakeproxy.metrics import Metrics
from wakeproxy.proxy.connection import Listener
from wakeproxy.proxy.exchange import Services
from wakeproxy.proxy.headers import ForwardedRules
from wakeproxy.proxy.upstream_pool import Link, UpstreamPool
from wakeproxy.routing import Router
from wakeproxy.wake import WakeCoordinator, WakeSettings, connect_probe

HOST = "18082-bench.localhost"
REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n".encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 20:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
    + b"x"
    * 100
)


class _Collecting:
    """Stands in for a socket transport: keeps the last write and counts writes, never
    blocks."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


async def _measure(n: int, profile: bool) -> list[float]:
    # The L1 entry must stay fresh for the whole measurement: once it passes `state_ttl`
    # a request takes the long way (a task, a lookup) and is no longer forwarded inside
    # the callback that parsed it, so it would measure something else (or nothing).
    settings = WakeSettings(state_ttl=24 * 3600.0)
    coordinator = WakeCoordinator(StaticBackend("127.0.0.1"), connect_probe, settings)
    async with coordinator:
        gateway = Gateway(coordinator)
        pool = UpstreamPool(256, 5.0, 60.0)
        router = Router(["localhost"], "[a-z0-9]{1,64}")
        services = Services(
            router, gateway, pool, ForwardedRules([]), Metrics(), None, 75.0, 1 << 20
        )
        await gateway.resolve(router.route(HOST, {}), "GET", "/", {})  # now in the L1
        upstream = Upstream("127.0.0.1", 18082)
        link = Link(pool, upstream)
        upstream_side = _Collecting()
        link.connection_made(upstream_side)  # type: ignore[arg-type]
        pool.release(link)
        client = Listener(services)()
        client_side = _Collecting()
        client.connection_made(client_side)  # type: ignore[arg-type]

        def requests() -> None:
            for _ in range(n):
                client.data_received(REQUEST)
                link.data_received(RESPONSE)

        timings = []
        for _ in range(5):
            sent, answered = upstream_side.writes, client_side.writes
            started = time.perf_counter()
            requests()
            timings.append((time.perf_counter() - started) / n)
            _check(upstream_side.writes - sent, client_side.writes - answered, n)
        assert client_side.last.endswith(b"x" * 100), client_side.last
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(requests)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return timings


def _check(forwarded: int, answered: int, n: int) -> None:
    """Every request must have been forwarded on the hot path and answered, each with one
    write: anything else means the figure is not the relay's cost per request."""
    if forwarded != n or answered != n:
        raise SystemExit(
            f"relay_cost: of {n} requests {forwarded} were written upstream and {answered} "
            "answered; the measurement is void"
        )


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20_000
    timings = asyncio.run(_measure(n, "--profile" in sys.argv))
    runs = ", ".join(f"{t * 1e6:.1f}" for t in timings)
    print(f"relay CPU per request: {statistics.median(timings) * 1e6:.1f} µs (runs: {runs})")


if __name__ == "__main__":
    main()
