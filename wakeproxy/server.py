"""Runs one proxy process: owns its listener, upstream pool and shutdown order.

Shutdown order (SIGTERM/SIGINT): stop accepting, end WebSocket sessions with 1001,
let in-flight requests finish within the grace period, then close the upstream pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from wakeproxy.accesslog import AccessLog
from wakeproxy.backends.base import Backend, SignedFileLookup, watch_backend
from wakeproxy.config import Config
from wakeproxy.errors import ConfigError, ListenError
from wakeproxy.gateway import Gateway
from wakeproxy.metrics import Metrics
from wakeproxy.proxy.connection import Listener
from wakeproxy.proxy.exchange import Services
from wakeproxy.proxy.headers import ForwardedRules
from wakeproxy.proxy.upstream_pool import UpstreamPool
from wakeproxy.routing import Router
from wakeproxy.state.factory import shared_state
from wakeproxy.state.shared import StateStore
from wakeproxy.tls import TlsContexts, reloading
from wakeproxy.tracing.settings import TracingSettings
from wakeproxy.tracing.traced import Tracer
from wakeproxy.wake import WakeCoordinator, connect_probe

log = logging.getLogger("wakeproxy")
# Clients come in bursts (a page's many requests, every client of a sandbox retrying at
# once as it wakes): a short accept queue would drop their connects. The kernel caps this
# at net.core.somaxconn.
_BACKLOG = 4096
_TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds; a client that stalls mid-handshake is dropped
_YOUNG_COLLECTION_EVERY = 20_000  # allocations; Python's default is 700


def settle_garbage_collector() -> None:
    """For a process that serves until signalled, once everything long-lived exists:
    keep that out of every later collection, and collect the young generation less
    often. Each request allocates a few dozen objects and frees them by reference
    counting (the relay breaks its own cycles), so the default threshold of 700 ran a
    young collection every few requests for nothing; raising it was worth about a sixth
    of hot-path throughput when measured (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, middle, old)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class Listening:
    host: str
    port: int
    coordinator: WakeCoordinator | None = field(default=None, repr=False, compare=False)
    """The proxy's wake engine (None for listeners without one), for tests and tooling
    that need to see what it holds."""
    metrics: Metrics | None = field(default=None, repr=False, compare=False)
    """The proxy's metrics (None for listeners without them)."""
    state: StateStore | None = field(default=None, repr=False, compare=False)
    """The store the proxy shares sandbox state through (None for other listeners)."""
    gateway: Gateway | None = field(default=None, repr=False, compare=False)
    """Admission, and what is in flight per sandbox (None for other listeners)."""
    tls: TlsContexts | None = field(default=None, repr=False, compare=False)
    """The listener's certificates when it speaks TLS."""

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"


def _listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def running_proxy(
    config: Config,
    backend: Backend,
    *,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
    store: StateStore | None = None,
) -> AsyncIterator[Listening]:
    """Serve the proxy until the block exits, then shut down gracefully.

    It records into `metrics` (a `Metrics` of its own when None) and shares sandbox state
    with other replicas through `store` (when None, one built from `config.state`).
    """
    metrics = metrics or Metrics()
    wake = config.wake
    async with (
        shared_state(
            config.state,
            backend,
            store=store,
            activity_interval=wake.activity_interval,
            activity_batch=wake.activity_batch,
            recorder=metrics,
        ) as shared,
        _serving(
            config,
            shared,
            reuse_port=reuse_port,
            metrics=metrics,
            signed=backend if isinstance(backend, SignedFileLookup) else None,
        ) as listening,
    ):
        yield dataclasses.replace(listening, state=shared.store)


@asynccontextmanager
async def _tracing(settings: TracingSettings) -> AsyncIterator[Tracer | None]:
    """The tracer when tracing is on (exported and stopped at the end), else None."""
    if not settings.enabled:
        yield None
        return
    try:
        from wakeproxy.tracing.spans import Tracing  # the optional extra
    except ImportError as exc:
        reason = f"needs OpenTelemetry: pip install 'wakeproxy[tracing]' ({exc})"
        raise ConfigError([("tracing.enabled", reason)]) from exc
    tracing = Tracing(settings)
    try:
        yield tracing
    finally:
        # Blocking (the last export): in a thread, so a collector on this loop can answer.
        await asyncio.to_thread(tracing.shutdown)


@asynccontextmanager
async def _reloading(tls: TlsContexts | None, interval: float) -> AsyncIterator[None]:
    if tls is None:
        yield
        return
    async with reloading(tls, interval):
        yield


@asynccontextmanager
async def _serving(
    config: Config,
    backend: Backend,
    *,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
    signed: SignedFileLookup | None = None,
) -> AsyncIterator[Listening]:
    settings = config.proxy
    metrics = metrics or Metrics()
    rules = ForwardedRules(settings.trusted_proxies)
    coordinator = WakeCoordinator(backend, connect_probe, config.wake, recorder=metrics)
    watch_backend(backend, coordinator)
    access = AccessLog(config.log.format) if config.log.access else None
    gateway = Gateway(coordinator, config.wake.no_wake)
    loop = asyncio.get_running_loop()
    pool = UpstreamPool(
        settings.upstream_connections, settings.connect_timeout, settings.response_timeout
    )
    services = Services(
        Router(settings.domains, settings.sandbox_id_pattern),
        gateway,
        pool,
        rules,
        metrics,
        access,
        settings.idle_timeout,
        settings.websocket_max_message,
        settings.client_body_timeout,
        settings.client_body_min_rate,
        signed=signed,
    )
    tls = TlsContexts(config.tls) if config.tls.enabled else None
    async with (
        coordinator,
        _reloading(tls, config.tls.reload_interval),
        _tracing(config.tracing) as services.tracer,
    ):
        listener = Listener(services)
        host, port = split_listen(settings.listen)
        sock = _listening_socket(host, port, reuse_port)
        server = await loop.create_server(
            listener,
            sock=sock,
            backlog=_BACKLOG,
            ssl=None if tls is None else tls.listener_context(),
            ssl_handshake_timeout=None if tls is None else _TLS_HANDSHAKE_TIMEOUT,
        )
        bound = sock.getsockname()
        try:
            yield Listening(
                bound[0],
                bound[1],
                coordinator=coordinator,
                metrics=metrics,
                gateway=gateway,
                tls=tls,
            )
        finally:
            # Stop accepting; then WebSocket sessions end with 1001, in-flight requests
            # get the grace period, and a stream still open after it (an SSE feed, a
            # command's output) is cut, so shutdown never takes longer than that.
            server.close()
            await listener.drain(settings.shutdown_grace)
            pool.close()
            if access is not None:
                access.flush()


async def serve_until_signalled(
    config: Config,
    backend: Backend,
    *,
    reuse_port: bool,
    metrics: Metrics | None = None,
    on_state: Callable[[str], None] | None = None,
    store: StateStore | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; `on_state` hears "ok" once the listener takes
    connections, and "down" from the signal on (so load balancers stop sending).
    State is shared through `store` (None: one built from `config.state`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_proxy(
        config, backend, reuse_port=reuse_port, metrics=metrics, store=store
    ) as proxy:
        settle_garbage_collector()
        log.info("proxy listening", extra={"event": "listening", "url": proxy.url})
        if on_state is not None:
            on_state("ok")
        await stop.wait()
        if on_state is not None:
            on_state("down")
        log.info("shutting down", extra={"event": "shutdown"})


@asynccontextmanager
async def serving_app(app: web.Application, listen: str) -> AsyncIterator[Listening]:
    """Serve an ordinary aiohttp app (admin, control-plane API) until the block exits."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    sock = _listening_socket(host, port, reuse_port=False)
    await web.SockSite(runner, sock).start()
    bound = sock.getsockname()
    try:
        yield Listening(host=bound[0], port=bound[1])
    finally:
        await runner.cleanup()
