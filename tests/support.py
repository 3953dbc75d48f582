"""Helpers shared by the test tiers (importable as `support`, since tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import psutil

from wakeproxy.config import Config
from wakeproxy.server import Listening
from wakeproxy.tracing.settings import TracingSettings
from wakeproxy.wake import WakeSettings

_SYSTEM_REDIS_PORT = 6379


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never the system Redis port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != _SYSTEM_REDIS_PORT:
            return port


def proxy_config(
    *,
    wake: WakeSettings | None = None,
    tracing: TracingSettings | None = None,
    **proxy_fields: object,
) -> Config:
    """Defaults, listening on a free port, with `proxy_fields` replaced (and the wake
    engine's and tracing settings, when given)."""
    base = Config()
    fields = {"listen": "127.0.0.1:0", **proxy_fields}
    proxy = dataclasses.replace(base.proxy, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(
        base, proxy=proxy, wake=wake or base.wake, tracing=tracing or base.tracing
    )


def host_for(port: int, sandbox_id: str = "sbx1", domain: str = "localhost") -> str:
    return f"{port}-{sandbox_id}.{domain}"


StartProxy = Callable[..., AbstractAsyncContextManager[Listening]]


class RssSampler:
    """Samples a process's resident memory until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._process.memory_info().rss)
            await asyncio.sleep(0.05)
