"""Runs one proxy process: owns its listener, upstream client and shutdown order.

Shutdown order (SIGTERM/SIGINT): stop accepting, end WebSocket sessions with 1001,
let in-flight requests finish within the grace period, then close upstream pools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from wakeproxy.accesslog import AccessLog
from wakeproxy.backends.base import Backend, watch_backend
from wakeproxy.config import Config, ProxyConfig
from wakeproxy.errors import ListenError
from wakeproxy.gateway import Gateway
from wakeproxy.metrics import Metrics
from wakeproxy.proxy.connector import UpstreamConnector
from wakeproxy.proxy.front import ProxyFront
from wakeproxy.proxy.headers import ForwardedRules
from wakeproxy.proxy.http_relay import HttpRelay
from wakeproxy.proxy.ws_relay import WebSocketRelay
from wakeproxy.routing import Router
from wakeproxy.state.factory import shared_state
from wakeproxy.state.shared import StateStore
from wakeproxy.wake import WakeCoordinator, connect_probe

log = logging.getLogger("wakeproxy")
_READ_BUFSIZE = 64 * 1024
# Clients come in bursts (a page's many requests, every client of a sandbox retrying at
# once as it wakes): a short accept queue would drop their connects. The kernel caps this
# at net.core.somaxconn.
_BACKLOG = 4096


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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _upstream_session(config: ProxyConfig, *, pooled: bool = True) -> aiohttp.ClientSession:
    """`pooled`: plain HTTP, with kept-alive connections bounded per upstream. WebSocket
    sessions get their own unbounded session: each holds its connection for its whole life,
    so sharing the bounded pool would let 256 open sessions block every new request."""
    connector = UpstreamConnector(
        limit=0,
        limit_per_host=config.upstream_connections if pooled else 0,
        keepalive_timeout=30.0,
        force_close=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # sock_read bounds silence from the upstream (before the head or between body
        # chunks), like nginx's proxy_read_timeout; no total limit for long streams.
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.response_timeout
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


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
        _serving(config, shared, reuse_port=reuse_port, metrics=metrics) as listening,
    ):
        yield dataclasses.replace(listening, state=shared.store)


@asynccontextmanager
async def _serving(
    config: Config,
    backend: Backend,
    *,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
) -> AsyncIterator[Listening]:
    settings = config.proxy
    metrics = metrics or Metrics()
    rules = ForwardedRules(settings.trusted_proxies)
    open_relays: set[asyncio.Task[object]] = set()
    coordinator = WakeCoordinator(backend, connect_probe, config.wake, recorder=metrics)
    watch_backend(backend, coordinator)
    access = AccessLog(config.log.format) if config.log.access else None
    gateway = Gateway(coordinator, config.wake.no_wake)
    async with (
        _upstream_session(settings) as session,
        _upstream_session(settings, pooled=False) as websocket_session,
        coordinator,
    ):
        front = ProxyFront(
            Router(settings.domains, settings.sandbox_id_pattern),
            gateway,
            HttpRelay(session, rules, metrics),
            WebSocketRelay(
                websocket_session, rules, open_relays, settings.websocket_max_message, metrics
            ),
            metrics,
            access,
        )
        server = web.Server(
            front.handle,
            handler_cancellation=True,
            keepalive_timeout=settings.idle_timeout,
            access_log=None,
            # Bodies pass through as sent: Content-Encoding is the endpoints' business.
            auto_decompress=False,
            # A held upload is read no further than this until it is forwarded; the rest
            # waits in the client's socket buffers (TCP back-pressure), not in our memory.
            read_bufsize=_READ_BUFSIZE,
        )
        runner = web.ServerRunner(server, shutdown_timeout=settings.shutdown_grace)
        await runner.setup()
        host, port = split_listen(settings.listen)
        sock = _listening_socket(host, port, reuse_port)
        site = web.SockSite(runner, sock, backlog=_BACKLOG)
        await site.start()
        bound = sock.getsockname()
        try:
            yield Listening(
                bound[0], bound[1], coordinator=coordinator, metrics=metrics, gateway=gateway
            )
        finally:
            await _shut_down(runner, site, open_relays, gateway.in_flight.tasks, settings)
            if access is not None:
                access.flush()


async def _shut_down(
    runner: web.BaseRunner,
    site: web.BaseSite,
    open_relays: set[asyncio.Task[object]],
    forwarding: set[asyncio.Task[object]],
    settings: ProxyConfig,
) -> None:
    await site.stop()
    for task in list(open_relays):
        task.cancel()
    if open_relays:
        await asyncio.wait(list(open_relays), timeout=5.0)
    if forwarding:
        # In-flight requests get the grace period; a stream still open after it (an SSE
        # feed, a command's output) is cut, so shutdown never takes longer than that.
        await asyncio.wait(list(forwarding), timeout=settings.shutdown_grace)
        for task in list(forwarding):
            task.cancel()
    await runner.cleanup()


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
