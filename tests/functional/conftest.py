"""Fixtures for functional tests: a real proxy in front of real upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from support import StartProxy, proxy_config

from wakeproxy.backends.base import Backend
from wakeproxy.backends.static import StaticBackend
from wakeproxy.server import Listening, running_proxy


@pytest.fixture
def start_proxy() -> StartProxy:
    """`async with start_proxy(backend=..., **proxy_fields) as proxy:` — a proxy in this process."""

    def start(
        backend: Backend | None = None, **proxy_fields: object
    ) -> AbstractAsyncContextManager[Listening]:
        return running_proxy(proxy_config(**proxy_fields), backend or StaticBackend("127.0.0.1"))

    return start


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> AsyncIterator[Listening]:
    """A proxy with the static backend: `<port>-<id>.localhost` → 127.0.0.1:<port>."""
    async with start_proxy() as running:
        yield running
