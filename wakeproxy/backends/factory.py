"""Build the configured backend: the one place that turns `backend.kind` into a driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wakeproxy.backends.base import Backend
from wakeproxy.backends.docker.opening import opened_docker
from wakeproxy.backends.http import HttpBackend
from wakeproxy.backends.static import StaticBackend
from wakeproxy.config import BackendConfig
from wakeproxy.errors import ConfigError


@asynccontextmanager
async def opened_backend(config: BackendConfig) -> AsyncIterator[Backend]:
    """The configured backend, with whatever it holds open (the http backend's client
    session, the docker backend's engine client and event stream) closed when the block
    exits. `local` is not built here: `wakeproxy up` owns the embedded platform and hands
    its backend to the proxy itself."""
    if config.kind == "static":
        yield StaticBackend(config.static_host, config.static_sandboxes)
        return
    if config.kind == "docker":
        async with opened_docker(config) as docker:
            yield docker
        return
    if config.kind != "http":
        raise ConfigError([("backend.kind", f"backend {config.kind!r} is not available")])
    remote = HttpBackend(
        config.url,
        api_key=config.api_key,
        request_timeout=config.request_timeout,
        resume_timeout=config.resume_timeout,
    )
    async with remote:
        yield remote
