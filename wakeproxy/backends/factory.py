"""Build the configured backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wakeproxy.backends.base import Backend
from wakeproxy.backends.http import HttpBackend
from wakeproxy.backends.static import StaticBackend
from wakeproxy.config import BackendConfig
from wakeproxy.errors import ConfigError


def build_backend(config: BackendConfig) -> Backend:
    if config.kind == "static":
        return StaticBackend(config.static_host, config.static_sandboxes)
    raise ConfigError([("backend.kind", f"backend {config.kind!r} is not available")])


@asynccontextmanager
async def opened_backend(config: BackendConfig) -> AsyncIterator[Backend]:
    """The configured backend, with whatever it holds open (the http backend's client
    session) closed when the block exits."""
    if config.kind != "http":
        yield build_backend(config)
        return
    remote = HttpBackend(
        config.url,
        api_key=config.api_key,
        request_timeout=config.request_timeout,
        resume_timeout=config.resume_timeout,
    )
    async with remote:
        yield remote
