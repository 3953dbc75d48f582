"""A proxy whose backend never finishes waking: every request to it is held.

Run as its own process (`python bench/held_proxy.py PROXY_PORT ADMIN_PORT`) so that its
resident memory is the proxy's alone. The backend reports one paused sandbox with
auto-resume; its `resume` waits until the process ends, as a very slow platform's would,
so the proxy holds each request it gets. The admin listener's `/metrics` says how many
are held (`wakeproxy_held_requests`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import Mapping

from wakeproxy.admin import running_admin
from wakeproxy.backends.base import Lifecycle, SandboxInfo, SandboxState, Upstream
from wakeproxy.config import Config
from wakeproxy.loops import loop_factory
from wakeproxy.metrics import Metrics
from wakeproxy.readiness import Readiness
from wakeproxy.server import running_proxy

HELD = 20_000


class NeverWakes:
    """A `Backend` with one paused, auto-resuming sandbox whose resume never ends."""

    def __init__(self) -> None:
        self.resumes = 0

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        lifecycle = Lifecycle(on_timeout="pause", auto_resume=True)
        return SandboxInfo(sandbox_id, SandboxState.PAUSED, lifecycle=lifecycle, version=1)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        self.resumes += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        return Upstream(host="127.0.0.1", port=port)

    async def touch(self, activity: Mapping[str, float]) -> None:
        return None


async def main(proxy_port: int, admin_port: int) -> None:
    base = Config()
    config = dataclasses.replace(
        base,
        proxy=dataclasses.replace(base.proxy, listen=f"127.0.0.1:{proxy_port}"),
        wake=dataclasses.replace(
            base.wake, max_held_per_sandbox=HELD, max_held_total=HELD, hold_timeout=600.0
        ),
        log=dataclasses.replace(base.log, access=False, level="warning"),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    metrics = Metrics()
    readiness = Readiness()
    readiness.report("proxy", "ok")
    admin = running_admin(f"127.0.0.1:{admin_port}", readiness, metrics.registry)
    async with admin, running_proxy(config, NeverWakes(), metrics=metrics):
        await stop.wait()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(int(sys.argv[1]), int(sys.argv[2])))
