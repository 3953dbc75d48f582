"""The long-running commands, `serve`, `up` and `serve-api`, given their loaded config.

Imported by `cli.py` only when one of them runs, so light commands (`--version`,
`health`, `sandboxes`) do not load the proxy, the platform or their dependencies.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from wakeproxy.admin import running_admin
from wakeproxy.backends.base import Backend
from wakeproxy.backends.factory import opened_backend
from wakeproxy.config import Config
from wakeproxy.discovery import targets_of
from wakeproxy.loops import loop_factory
from wakeproxy.metrics import Metrics
from wakeproxy.readiness import Readiness, backend_check
from wakeproxy.serve_api import RunningControlPlane, running_control_plane
from wakeproxy.server import serve_until_signalled, settle_garbage_collector
from wakeproxy.state.factory import open_store, report_health
from wakeproxy.state.shared import StateStore
from wakeproxy.up import RunningPlatform, running_platform
from wakeproxy.workers import Supervisor

T = TypeVar("T")


def serve(config: Config, argv: Sequence[str], *, as_worker: bool, ready_fd: int | None) -> int:
    """`wakeproxy serve`: one proxy process, or with `proxy.workers` > 1 (and not already
    a worker) the supervisor of that many, each started with `argv` plus its own flags."""
    runner = asyncio.Runner(loop_factory=loop_factory())
    with runner:
        if config.proxy.workers > 1 and not as_worker:
            worker_argv = [a for a in argv if a != "--as-worker"]
            return runner.run(Supervisor(config, worker_argv).run())
        return runner.run(_serve_one(config, reuse_port=as_worker, ready_fd=ready_fd))


async def _serve_one(config: Config, *, reuse_port: bool, ready_fd: int | None = None) -> int:
    async with opened_backend(config.backend) as backend, open_store(config.state) as store:
        return await _serve_with(config, backend, store, reuse_port, ready_fd)


async def _serve_with(
    config: Config, backend: Backend, store: StateStore, reuse_port: bool, ready_fd: int | None
) -> int:
    metrics = Metrics()
    if reuse_port:  # a worker: the supervisor serves the admin listener and the metrics
        await serve_until_signalled(
            config,
            backend,
            reuse_port=True,
            metrics=metrics,
            on_state=_tell_supervisor(ready_fd),
            store=store,
        )
        return 0
    readiness = Readiness()
    readiness.report("proxy", "down")  # until it listens
    readiness.check("backend", backend_check(backend))
    report_health(store, readiness.report)
    targets = targets_of(backend, config.proxy.domains[0])
    async with running_admin(config.admin.listen, readiness, metrics.registry, targets):
        await serve_until_signalled(
            config,
            backend,
            reuse_port=False,
            metrics=metrics,
            on_state=lambda state: readiness.report("proxy", state),
            store=store,
        )
    return 0


def _tell_supervisor(ready_fd: int | None) -> Callable[[str], None] | None:
    """A worker says it listens by writing one byte to the pipe its supervisor gave it."""
    if ready_fd is None:
        return None

    def on_state(state: str) -> None:
        if state == "ok":
            os.write(ready_fd, b"1")
            os.close(ready_fd)

    return on_state


def up(config: Config) -> int:
    """`wakeproxy up`: the proxy with the embedded platform, until SIGTERM/SIGINT."""
    return _run_until_signalled(config, running_platform, _platform_lines)


def serve_api(config: Config) -> int:
    """`wakeproxy serve-api`: the embedded platform's control plane alone."""
    return _run_until_signalled(config, running_control_plane, _control_plane_lines)


def _platform_lines(platform: RunningPlatform) -> list[str]:
    lines = [f"{name}={value}" for name, value in platform.environment().items()]
    scheme = platform.proxy.url.partition("://")[0]
    lines.append(f"preview URLs: {scheme}://<port>-<sandboxId>.{platform.domain}/")
    lines.append(f"admin: {platform.admin.url}/readyz")
    return lines


def _control_plane_lines(plane: RunningControlPlane) -> list[str]:
    return [
        f"E2B_API_URL={plane.api.url}",
        f"proxies: wakeproxy serve --backend http --backend-url {plane.api.url}",
        f"admin: {plane.admin.url}/readyz",
    ]


def _run_until_signalled(
    config: Config,
    running: Callable[[Config], AbstractAsyncContextManager[T]],
    describe: Callable[[T], list[str]],
) -> int:
    """Start `running`, print what users need, stop on SIGTERM/SIGINT."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running(config) as started:
            settle_garbage_collector()
            print("\n".join(describe(started)), flush=True)
            await stop.wait()
        return 0

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())
