"""Build the configured backend."""

from __future__ import annotations

from wakeproxy.backends.base import Backend
from wakeproxy.backends.static import StaticBackend
from wakeproxy.config import BackendConfig
from wakeproxy.errors import ConfigError


def build_backend(config: BackendConfig) -> Backend:
    if config.kind == "static":
        return StaticBackend(config.static_host, config.static_sandboxes)
    raise ConfigError([("backend.kind", f"backend {config.kind!r} is not available")])
