"""Fixtures for functional tests: a real proxy in front of real upstream servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from platform_process import PlatformProcess
from proxy_process import ProxyProcess
from support import StartProxy, proxy_config

from wakeproxy.backends.base import Backend
from wakeproxy.backends.static import StaticBackend
from wakeproxy.server import Listening, running_proxy


@pytest.fixture
def start_proxy() -> StartProxy:
    """`async with start_proxy(backend=..., wake=..., **proxy_fields) as proxy:` — a proxy in
    this process (`wake`: optional `WakeSettings`, see `support.proxy_config`)."""

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


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """`proxy_process(*serve_args)` starts `wakeproxy serve` in its own process."""
    started: list[ProxyProcess] = []

    def start(*args: str) -> ProxyProcess:
        process = ProxyProcess(*args, log_dir=tmp_path)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def platform_process(tmp_path: Path) -> Iterator[Callable[..., PlatformProcess]]:
    """`platform_process(*up_args)` starts `wakeproxy up` in its own process; stopped after."""
    started: list[PlatformProcess] = []

    def start(*args: str) -> PlatformProcess:
        process = PlatformProcess(tmp_path / f"platform{len(started)}", *args)
        process.data_dir.parent.mkdir(parents=True, exist_ok=True)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def platform(platform_process: Callable[..., PlatformProcess]) -> PlatformProcess:
    """A running `wakeproxy up` with default settings."""
    return platform_process()


@pytest.fixture(scope="module")
def module_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One `wakeproxy up` with default settings, shared by the tests of a module (each
    test creates and kills its own sandboxes)."""
    process = PlatformProcess(tmp_path_factory.mktemp("platform"))
    try:
        yield process.start()
    finally:
        process.stop()
