"""A client's HTTP/1.1 connection: parsing, keep-alive, pipelining, flow control.

Requests are parsed by llhttp (`httptools`) in its strict mode, which rejects the
ingredients of request smuggling before anything is forwarded: Content-Length together
with Transfer-Encoding, duplicate lengths, bare LF, obs-fold, a final coding other than
chunked. A head larger than `MAX_HEAD` is answered 431; any other malformed request
400. Either closes the connection, since where its next request would start is unknown.

Pipelined requests are answered in order: each becomes an `Exchange` in a queue, and
reading pauses while one waits behind another. A WebSocket handshake is an exchange
too; once the upstream switches protocols, the connection becomes one side of a
`Tunnel`. Any other Upgrade is not offered upstream (Upgrade is hop-by-hop), so such a
request is answered as a plain one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import cast

import httptools

from wakeproxy.errors import BodyTimeout, HeadTooLarge, ProxyError, RouteError
from wakeproxy.proxy.decisions import client_keeps_alive
from wakeproxy.proxy.exchange import Exchange, Services
from wakeproxy.proxy.responses import render_error
from wakeproxy.proxy.tunnel import GOING_AWAY, Gate, Tunnel, Wake
from wakeproxy.proxy.upstream_pool import Link
from wakeproxy.proxy.wire import (
    FEED_SLICE,
    MAX_HEAD,
    MAX_LINE,
    Framing,
    FramingError,
    MalformedRequest,
    RequestHead,
    body_due,
    check_version,
    encoded,
    over_bounds,
    request_framing,
    upstream_target,
    whole_response,
)

log = logging.getLogger("wakeproxy")

# Why reading from the client is paused; reading resumes when no reason is left.
_QUEUED = 1  # a request waits behind the one being answered
_BODY = 2  # the body read ahead of an upstream connection reached its limit
_UPSTREAM = 4  # the upstream is not taking the body as fast as the client sends it
_UPGRADING = 8  # a WebSocket handshake waits for its answer

_LINGER = 5.0
"""Seconds a closing connection goes on reading (and dropping) what the client sends."""


class _HeadTooLarge(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    def __init__(self, services: Services, listener: Listener) -> None:
        self._services = services
        self._listener = listener
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[Exchange] = collections.deque()
        self._incoming: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._head_size = 0
        # Bytes fed since llhttp last reported anything, counting the whole slice it
        # reported in (`_slack` of them may precede the report): a lower bound of what
        # its binding holds unreported is `_quiet - _slack`.
        self._quiet = 0
        self._slack = 0
        self._reported = False
        self._in_body = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_since = 0.0  # when the body began, moved on by time spent paused
        self._body_bytes = 0
        self._paused_at = 0.0
        self._upgrading = False
        self._early = b""  # client bytes behind a WebSocket handshake
        self._pauses = 0
        self._closed = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.peer_ip: str | None = None
        self.local_host = b""
        self.scheme = b"http"

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast("asyncio.Transport", transport)
        self._listener.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else None
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local_host = f"{local[0]}:{local[1]}".encode()
        if transport.get_extra_info("ssl_object") is not None:
            self.scheme = b"https"
        self._idle_since_now()

    def data_received(self, data: bytes) -> None:
        at, end = 0, len(data)
        while at < end and not self._closed:
            # Outside a body, llhttp's binding keeps an unfinished header line to itself
            # until it ends; fed in slices, its size is known to within one slice.
            step = end - at if self._in_body else min(end - at, FEED_SLICE)
            piece = data if step == end else memoryview(data)[at : at + step]
            stop = self._feed(piece)
            if stop < 0:
                at += step
                continue
            rest = data[at + stop :]
            if self._upgrading:
                # Whatever follows belongs to the WebSocket session, if there is one.
                self._early = rest
                self._pause(_UPGRADING)
                return
            self._parser = httptools.HttpRequestParser(self)
            self._quiet = self._slack = 0
            at += stop

    def _feed(self, piece: bytes | memoryview) -> int:
        """Parse `piece`, bounding what llhttp holds unreported; where in it a request
        that switched protocols ended, or -1."""
        self._reported = False
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as upgrade:
            return int(upgrade.args[0])
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _HeadTooLarge):
                self._refuse(HeadTooLarge(f"the request head is larger than {MAX_HEAD} bytes"))
            elif isinstance(cause, MalformedRequest):
                refusal = RouteError(f"malformed HTTP request: {cause}")
                refusal.status = cause.status
                self._refuse(refusal)
            else:
                log.error("request handling failed", exc_info=error.__context__)
                self._refuse(ProxyError("internal proxy error"), status=500)
            return -1
        except httptools.HttpParserError as error:
            self._refuse(RouteError(f"malformed HTTP request: {error}"))
            return -1
        if self._reported:
            self._quiet = self._slack = len(piece)
        else:
            self._quiet += len(piece)
            if over_bounds(self._quiet - self._slack, self._head_size):
                self._refuse_unreported()
        return -1

    def _refuse_unreported(self) -> None:
        if self._incoming is None:
            self._refuse(
                HeadTooLarge(
                    f"a request header line is longer than {MAX_LINE} bytes, "
                    f"or the head longer than {MAX_HEAD}"
                )
            )
        else:
            self._refuse(
                RouteError(f"a chunk-size line or a trailer is longer than {MAX_LINE} bytes")
            )

    def eof_received(self) -> bool:
        # A client that closes its side has left (a half-close is indistinguishable from
        # a close here): what it asked for is abandoned, as nginx does by default.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._listener.forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._queue:
            self._queue[0].client_gone()
        self._queue.clear()

    def pause_writing(self) -> None:
        if self._queue:
            self._queue[0].client_congested(True)

    def resume_writing(self) -> None:
        if self._queue:
            self._queue[0].client_congested(False)

    # -- llhttp callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reported = True
        self._url = b""
        self._headers = []
        self._host = None
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._reported = True
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._reported = True
        self._headers.append((name, value))
        if len(name) == 4 and name.lower() == b"host":
            if self._host is not None:
                # Which one would the upstream route by? (RFC 9112 §3.2)
                raise MalformedRequest("a request must have one Host field, not two")
            self._host = value  # what routing and X-Forwarded-Host need, found once
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._reported = True
        parser = self._parser
        method = parser.get_method()
        version = parser.get_http_version()
        upgrade = parser.should_upgrade()
        headers = self._headers
        self._headers = []  # what llhttp reports after the head are trailers: dropped
        check_version(version)
        target = upstream_target(method, self._url)
        framing = request_framing(headers, version)
        websocket = upgrade and method == b"GET" and _asks_for_websocket(headers)
        if upgrade and framing is not Framing.NONE:
            # llhttp hands over what follows an upgrade request's head unparsed, so a
            # body there could not be told from the next request.
            raise FramingError("a request asking for a protocol upgrade cannot have a body")
        keep_alive = client_keeps_alive(
            parser.should_keep_alive(),
            websocket=websocket,
            closing=self._listener.closing,
            idle_timeout=self._services.idle_timeout,
        )
        exchange = Exchange(
            self,
            self._services,
            RequestHead(
                method, target, version, headers, self._host, keep_alive, framing, websocket
            ),
        )
        self._upgrading = websocket
        self._incoming = exchange
        self._in_body = True
        if framing is not Framing.NONE:
            self._time_body()
        queue = self._queue
        queue.append(exchange)
        if len(queue) == 1:
            exchange.start()
        else:
            self._pause(_QUEUED)

    def on_body(self, body: bytes) -> None:
        self._reported = True
        self._body_bytes += len(body)
        if self._incoming is not None:
            self._incoming.feed_body(body)

    def on_message_complete(self) -> None:
        self._reported = True
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        exchange = self._incoming
        self._incoming = None
        if exchange is not None:
            exchange.body_complete()

    # -- used by exchanges ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def exchange_done(self, exchange: Exchange) -> None:
        queue = self._queue
        if not queue or queue[0] is not exchange:
            return
        queue.popleft()
        self._idle_since_now()
        if not exchange.keep_alive or self._listener.closing:
            self._close()
            return
        if len(queue) <= 1:
            self._resume(_QUEUED)
        if queue:
            queue[0].start()

    def pause_reading_for_body(self) -> None:
        self._pause(_BODY)

    def resume_reading_for_body(self) -> None:
        self._resume(_BODY)

    def pause_reading_for_upstream(self) -> None:
        self._pause(_UPSTREAM)

    def resume_reading_for_upstream(self) -> None:
        self._resume(_UPSTREAM)

    # -- the connection's own life ---------------------------------------------------------

    def shed(self) -> None:
        """The shutdown grace is over: a request not answered yet gets 503 with
        Retry-After and `Connection: close` (its answer is written before the cut)."""
        if self._queue and not self._closed:
            self._queue[0].shed()

    def close_when_idle(self) -> None:
        """Shutting down: close now if nothing is being answered, else after it."""
        if not self._queue or self._queue[0].finished:
            self._close()

    def _close(self) -> None:
        """Close after what was written, lingering like nginx: the client may still be
        sending (a body that was refused), and a close with unread bytes resets the
        connection, which can destroy the answer before the client reads it. So only
        the sending side is shut; what still arrives is read and dropped until the
        client closes too, or for at most `_LINGER` seconds."""
        self._closed = True
        transport = self._transport
        if transport is None or self._linger is not None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger = self._services.pool.loop.call_later(_LINGER, transport.abort)
        if self._pauses:
            self._pauses = 0
            transport.resume_reading()

    def _pause(self, reason: int) -> None:
        if not self._pauses:
            if self._transport is not None:
                self._transport.pause_reading()
            if self._body_timer is not None:
                self._paused_at = self._services.pool.loop.time()
        self._pauses |= reason

    def _resume(self, reason: int) -> None:
        if not self._pauses & reason:
            return
        self._pauses &= ~reason
        if not self._pauses:
            if self._body_timer is not None and self._paused_at:
                # Time the proxy was not reading is not the client's.
                self._body_since += self._services.pool.loop.time() - self._paused_at
            self._paused_at = 0.0
            if self._transport is not None and not self._closed:
                self._transport.resume_reading()

    def _time_body(self) -> None:
        """Bound how long the body now starting may take (`client_body_timeout`)."""
        loop = self._services.pool.loop
        self._body_since = loop.time()
        self._body_bytes = 0
        self._paused_at = self._body_since if self._pauses else 0.0
        self._body_timer = loop.call_later(self._services.body_timeout, self._check_body)

    def _check_body(self) -> None:
        services = self._services
        loop = services.pool.loop
        now = loop.time()
        if self._pauses:
            # Not reading: the clock restarts when reading does (see `_resume`).
            self._body_timer = loop.call_later(services.body_timeout, self._check_body)
            return
        due = body_due(
            self._body_since, self._body_bytes, services.body_timeout, services.body_min_rate
        )
        if now < due:
            self._body_timer = loop.call_later(due - now, self._check_body)
            return
        self._body_timer = None
        exchange = self._incoming
        if exchange is not None and self._queue and self._queue[0] is exchange:
            exchange.give_up(
                BodyTimeout(
                    f"The request body stopped arriving: less than "
                    f"{services.body_min_rate} bytes per second; send it faster"
                )
            )
        else:
            self.abort()

    def _idle_since_now(self) -> None:
        loop = self._services.pool.loop
        self._last_active = loop.time()
        if self._idle_timer is None and self._services.idle_timeout > 0:
            self._idle_timer = loop.call_later(self._services.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that has carried no request for `idle_timeout` (this also
        ends a head that trickles in too slowly)."""
        self._idle_timer = None
        if self._closed:
            return
        loop = self._services.pool.loop
        timeout = self._services.idle_timeout
        if self._queue and not self._queue[0].finished:
            self._idle_timer = loop.call_later(timeout, self._check_idle)
            return
        remaining = self._last_active + timeout - loop.time()
        if remaining > 0:
            self._idle_timer = loop.call_later(remaining, self._check_idle)
        else:
            self._close()

    def _refuse(self, error: ProxyError, status: int | None = None) -> None:
        """Answer a request that cannot be parsed, then close: its end is unknown."""
        queue = self._queue
        incoming = self._incoming
        if queue and queue[0] is incoming and incoming is not None:
            # Its body went wrong (a chunk, a trailer): it answers, if it still can.
            incoming.give_up(error)
            return
        self._services.recorder.rejected(error.reason)
        self._services.recorder.request_finished("http", status or error.status, 0.0)
        if queue:
            # Still answering an earlier request: there is no slot for this answer.
            self.abort()
            return
        rendered = render_error(error, html=False)
        headers = encoded(rendered.headers)
        self.write(whole_response("1.1", status or rendered.status, headers, rendered.body, False))
        self._close()

    def hand_to_tunnel(
        self,
        link: Link,
        rest: bytes,
        *,
        gate: Gate,
        wake: Wake,
        on_end: Callable[[], None],
    ) -> None:
        """The upstream switched protocols: from now on this connection is the client
        side of a tunnel to `link`'s (`rest` arrived behind the upstream's 101)."""
        transport = self._transport
        assert transport is not None
        assert link.transport is not None
        self._closed = True
        self._transport = None
        listener = self._listener
        listener.forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        recorder = self._services.recorder

        def ended(tunnel: Tunnel) -> None:
            listener.tunnels.discard(tunnel)
            recorder.websocket_closed()
            on_end()

        tunnel = Tunnel(
            transport,
            link.transport,
            max_message=self._services.websocket_max_message,
            gate=gate,
            wake=wake,
            on_end=ended,
        )
        listener.tunnels.add(tunnel)
        recorder.websocket_opened()
        if self._pauses:
            self._pauses = 0
            transport.resume_reading()
        tunnel.start(self._early, rest)
        self._early = b""


def _asks_for_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"upgrade" and b"websocket" in value.lower() for name, value in headers
    )


class Listener:
    """The relay's side of one listening socket: its connections and their shutdown."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.connections: set[ClientConnection] = set()
        self.tunnels: set[Tunnel] = set()
        self.closing = False
        self._emptied: asyncio.Event | None = None  # set once all are closed, when draining

    def __call__(self) -> ClientConnection:
        return ClientConnection(self._services, self)

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    async def drain(self, grace: float) -> None:
        """Close idle connections now, busy ones after their answer; when `grace` seconds
        are over, answer what is still waiting 503 and cut whatever else is open."""
        self.closing = True
        for tunnel in list(self.tunnels):
            tunnel.close(GOING_AWAY)
        self._emptied = asyncio.Event()
        for conn in list(self.connections):
            conn.close_when_idle()  # the others close as their answers end
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._emptied.wait()
        for conn in list(self.connections):
            conn.shed()
        for conn in list(self.connections):
            conn.abort()
