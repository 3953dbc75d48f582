"""The docker backend built from the configuration, with what it holds open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from wakeproxy.backends.docker.backend import DockerBackend, DockerSettings
from wakeproxy.backends.docker.engine import DEFAULT_HOST, Engine, EngineAddress, tls_context
from wakeproxy.config import BackendConfig
from wakeproxy.errors import ConfigError


def engine_of(config: BackendConfig, env: Mapping[str, str] | None = None) -> Engine:
    """The engine client `config` names (else $DOCKER_HOST, else the local socket)."""
    env = os.environ if env is None else env
    url = config.docker_host or env.get("DOCKER_HOST") or DEFAULT_HOST
    tls = bool(config.docker_tls_ca or config.docker_tls_cert)
    try:
        address = EngineAddress.parse(url, tls=tls)
    except ValueError as exc:
        raise ConfigError([("backend.docker_host", str(exc))]) from exc
    context = None
    if address.tls:
        try:
            context = tls_context(
                config.docker_tls_ca, config.docker_tls_cert, config.docker_tls_key
            )
        except OSError as exc:  # ssl.SSLError is one
            problem = ("backend.docker_tls_cert", f"cannot load the TLS files: {exc}")
            raise ConfigError([problem]) from exc
    return Engine(address, ssl_context=context, timeout=config.request_timeout)


@asynccontextmanager
async def opened_docker(config: BackendConfig) -> AsyncIterator[DockerBackend]:
    settings = DockerSettings(
        network=config.docker_network,
        published=config.docker_published,
        stop_timeout=config.docker_stop_timeout,
        resume_timeout=config.resume_timeout,
    )
    async with DockerBackend(engine_of(config), settings) as backend:
        yield backend
