"""Kept-alive HTTP/1.1 connections to sandbox ports, bounded per upstream.

A `Link` is one connection: it parses the upstream's responses with llhttp and hands
what it reads to whoever is using it (a `ResponseSink`, one request at a time). The
`UpstreamPool` keeps idle links per `Upstream`, opens new ones (dialling, or asking the
upstream's `opener` for a socket already connected inside a sandbox's network), and bounds
how many are open at once per upstream: past the bound a request waits for a link to come
back, so a burst (every client of a sandbox that just woke) cannot flood one port.

Taking an idle link is synchronous: the hot path awaits nothing.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol, cast

import httptools

from wakeproxy.backends.base import Upstream
from wakeproxy.errors import HeadTooLarge
from wakeproxy.proxy.headers import Headers
from wakeproxy.proxy.wire import FEED_SLICE, MAX_HEAD, over_bounds

_SWEEP_EVERY = 5.0


class PoolBusy(Exception):
    """Every connection an upstream may have stayed busy for the whole wait."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class ResponseSink(Protocol):
    """What a link reports about the response to the request written on it."""

    def response_head(self, status: int, reason: bytes, headers: Headers) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_end(self, reusable: bool) -> None:
        """The whole response arrived; `reusable`: the link may carry another request."""

    def upstream_failed(self, error: str) -> None:
        """The link broke or spoke something other than HTTP before the response ended:
        "closed", "protocol" or "too_large" (a head or line over `MAX_HEAD`)."""

    def upstream_congested(self, congested: bool) -> None:
        """The upstream stopped (True) or resumed (False) reading what is written to it."""

    def flush(self) -> None:
        """The end of one read from the upstream: write out what it produced."""

    def upstream_silent(self) -> None:
        """The upstream said nothing for the silence timeout; the link is closed."""

    def upgraded(self, rest: bytes) -> None:
        """The upstream switched protocols (101); `rest` arrived behind its head. The
        connection is the sink's from now on."""


class Link(asyncio.Protocol):
    """One connection to an upstream; carries one request at a time."""

    __slots__ = (
        "_head_size",
        "_headers",
        "_in_body",
        "_parser",
        "_pool",
        "_quiet",
        "_reason",
        "_reported",
        "_slack",
        "_status",
        "_until_close",
        "awaiting_head",
        "head_request",
        "heard",
        "idle_since",
        "last_read",
        "open",
        "reused",
        "sent_at",
        "sink",
        "transport",
        "upgrading",
        "upstream",
    )

    def __init__(self, pool: UpstreamPool, upstream: Upstream) -> None:
        self._pool = pool
        self.upstream = upstream
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.open = False
        self.reused = False
        self.head_request = False
        self.upgrading = False  # the request asks for a WebSocket: a 101 is its answer
        self.last_read = 0.0
        self.sent_at = 0.0  # when the last byte of the request went out
        self.awaiting_head = False  # a request is out and its final head is not in
        self.heard = False  # a byte of an answer to the current request came
        self.idle_since = 0.0
        self._status = 0
        self._reason = b""
        self._headers: Headers = []
        self._head_size = 0
        self._until_close = False
        # As on the client side (`ClientConnection`): what llhttp holds unreported.
        self._quiet = 0
        self._slack = 0
        self._reported = False
        self._in_body = False

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast("asyncio.Transport", transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.last_read = self._pool.loop.time()
        self.heard = True
        if self.sink is None:
            # Nothing is asked of an idle connection: whatever it says is not HTTP we
            # expect, so it cannot carry another request.
            self.close()
            return
        sink = self.sink
        at, end = 0, len(data)
        while at < end:
            # As on the client side (`ClientConnection.data_received`): slices outside a
            # body, so an unfinished line is known to within one.
            step = end - at if self._in_body else min(end - at, FEED_SLICE)
            piece = data if step == end else memoryview(data)[at : at + step]
            at += step
            self._reported = False
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                if not self.upgrading or self.sink is not sink:
                    self._fail("protocol")
                    return
                self.sink = None
                sink.flush()
                sink.upgraded(data[at - step + upgrade.args[0] :])
                return
            except httptools.HttpParserError as error:
                too_large = isinstance(error.__context__, HeadTooLarge)
                self._fail("too_large" if too_large else "protocol")
                break
            if self.sink is not sink:
                if at < end:
                    # More than the answer: this connection cannot be trusted with
                    # another request.
                    self._fail("protocol")
                break
            if self._reported:
                self._quiet = self._slack = len(piece)
            else:
                self._quiet += len(piece)
                if over_bounds(self._quiet - self._slack, self._head_size):
                    # A sandbox is not trusted to end a line: past the bound it is
                    # not HTTP to us.
                    self._fail("too_large")
                    break
        sink.flush()

    def eof_received(self) -> bool:
        self.open = False  # at once: the close itself is reported a loop turn later
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._pool.forget(self)
        sink = self.sink
        if sink is None:
            return
        self.sink = None
        if self._until_close and self._status:
            sink.response_end(False)  # a body delimited by the connection's end
        else:
            sink.upstream_failed("closed")

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_congested(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_congested(False)

    # -- llhttp callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reported = True
        self._headers = []
        self._head_size = 0
        self._reason = b""
        self._status = 0
        self._until_close = False

    def on_status(self, reason: bytes) -> None:
        self._reported = True
        self._reason += reason  # llhttp reports a reason split across reads in pieces
        self._head_size += len(reason)
        if self._head_size > MAX_HEAD:
            raise HeadTooLarge("response head")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._reported = True
        self._headers.append((name, value))
        # A sandbox is not trusted to end its head: past the bound it is not HTTP to us.
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD:
            raise HeadTooLarge("response head")

    def on_headers_complete(self) -> None:
        self._reported = True
        status = self._parser.get_status_code()
        sink = self.sink
        if sink is None:
            return
        if status < 200:
            if status == 101 and self.upgrading:
                self.awaiting_head = False
                sink.response_head(status, self._reason, self._headers)
            return  # else an interim response (103 Early Hints): the final one follows
        self.awaiting_head = False
        self._in_body = True
        self._status = status
        self._until_close = _delimited_by_close(status, self._headers, self.head_request)
        sink.response_head(status, self._reason, self._headers)
        if self.head_request and self.sink is sink:
            # llhttp cannot be told the request was HEAD and would wait for the body the
            # headers describe; the response ends here, and so does this connection.
            self.sink = None
            self.close()
            sink.response_end(False)

    def on_body(self, body: bytes) -> None:
        self._reported = True
        if self.sink is not None:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        self._reported = True
        self._in_body = False
        sink = self.sink
        if not self._status or sink is None:
            return
        self.sink = None
        self._status = 0
        sink.response_end(self._parser.should_keep_alive())

    # -- used by the pool and by sinks -------------------------------------------------

    def send(self, sink: ResponseSink, data: bytes, *, head_request: bool, upgrading: bool) -> None:
        """Carry `sink`'s request: `data` (its head, and what of its body is at hand) goes
        out now, and what the upstream answers is reported to `sink`, timed from now.
        `head_request`: a HEAD, whose answer ends at its head; `upgrading`: a WebSocket
        handshake, for which a 101 is the answer."""
        self.sink = sink
        self.head_request = head_request
        self.upgrading = upgrading
        self._pool.watch(self)
        self.write(data)

    def send_more(self, data: bytes) -> None:
        """More of the request's body: an upload is no silence, and the wait for the
        answer's head starts again from its last byte."""
        self.write(data)
        self.last_read = self.sent_at = self._pool.loop.time()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def close(self) -> None:
        """Drop the connection (never reused); the sink, if any, hears nothing more."""
        self.sink = None
        self.open = False
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: str) -> None:
        sink = self.sink
        self.close()
        if sink is not None:
            sink.upstream_failed(error)


def _close_made_link(connecting: asyncio.Task[Link]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


def _delimited_by_close(status: int, headers: Headers, head_request: bool) -> bool:
    if head_request or status in (204, 304):
        return False
    for name, _ in headers:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            return False
    return True


class UpstreamPool:
    """Idle links per upstream, at most `per_upstream` open at once for each."""

    def __init__(
        self,
        per_upstream: int,
        connect_timeout: float,
        silence_timeout: float,
        idle_timeout: float = 30.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._limit = per_upstream
        self._connect_timeout = connect_timeout
        self._silence_timeout = silence_timeout
        self._idle_timeout = idle_timeout
        # Links waiting on their upstream, checked by one coarse timer rather than a
        # timer per request: a timeout fires within a quarter of itself (at most 1 s)
        # after it is due, and the hot path only adds to a set.
        self._waiting: set[Link] = set()
        self._silence_check: asyncio.TimerHandle | None = None
        self._idle: dict[Upstream, list[Link]] = {}
        self._open: dict[Upstream, int] = {}
        self._waiters: dict[Upstream, collections.deque[asyncio.Future[Link | None]]] = {}
        self._links: set[Link] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, upstream: Upstream) -> Link | None:
        """An idle link to `upstream`, or None (then `open` one)."""
        idle = self._idle.get(upstream)
        while idle:
            link = idle.pop()
            if link.open:
                link.reused = True
                return link
        return None

    async def open_unpooled(self, upstream: Upstream) -> Link:
        """A new link for a WebSocket session: it holds its connection for its whole
        life, so it neither counts against the bound nor ever comes back to the pool.
        Raises `OSError` (refused) or `TimeoutError`."""
        return await self._connect_in_time(upstream)

    async def open(self, upstream: Upstream) -> Link:
        """A link to `upstream`: a new connection, or one that came back while waiting
        for room under the bound. Raises `OSError` (refused), `TimeoutError` (not
        connected in time) or `PoolBusy` (no room came within the connect timeout)."""
        if self._open.get(upstream, 0) >= self._limit:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    link = await self._room(upstream)
            except TimeoutError:
                raise PoolBusy(self._limit) from None
            if link is not None:
                return link
        self._open[upstream] = self._open.get(upstream, 0) + 1
        try:
            link = await self._connect_in_time(upstream)
        except BaseException:
            self._count_closed(upstream)  # its place under the bound is given back
            raise
        self._links.add(link)
        return link

    async def _room(self, upstream: Upstream) -> Link | None:
        """Wait until a link comes back (returned) or there is room to open one (None)."""
        while self._open.get(upstream, 0) >= self._limit:
            waiter: asyncio.Future[Link | None] = self.loop.create_future()
            self._waiters.setdefault(upstream, collections.deque()).append(waiter)
            try:
                link = await waiter
            except asyncio.CancelledError:
                # What was handed to a request that is gone goes to the next one.
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is None:
                        self._make_room(upstream)
                    else:
                        self.release(handed)
                raise
            if link is not None:
                link.reused = True
                return link
        return None

    async def _connect_in_time(self, upstream: Upstream) -> Link:
        connecting = self.loop.create_task(self._connect(upstream))
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await asyncio.shield(connecting)
        except BaseException:
            # Timed out, or the request is gone: a connection that still gets made is
            # closed at once rather than left open with nobody to use it.
            connecting.cancel()
            connecting.add_done_callback(_close_made_link)
            raise

    async def _connect(self, upstream: Upstream) -> Link:
        loop = self.loop
        if upstream.opener is not None:
            sock = await upstream.opener()
            sock.setblocking(False)
            _, link = await loop.create_connection(lambda: Link(self, upstream), sock=sock)
        elif upstream.unix_path is not None:
            _, link = await loop.create_unix_connection(
                lambda: Link(self, upstream), upstream.unix_path
            )
        else:
            _, link = await loop.create_connection(
                lambda: Link(self, upstream), upstream.host, upstream.port
            )
        return link

    def watch(self, link: Link) -> None:
        """Time `link` from now on, while it carries a request: its whole response head
        must arrive within the timeout of the request's last byte, then its body may not
        stay silent for longer."""
        link.last_read = link.sent_at = self.loop.time()
        link.awaiting_head = True
        link.heard = False
        self._waiting.add(link)
        if self._silence_check is None:
            self._silence_check = self.loop.call_later(self._silence_tick(), self._check_silence)

    def _silence_tick(self) -> float:
        return min(1.0, self._silence_timeout / 4)

    def _check_silence(self) -> None:
        self._silence_check = None
        due = self.loop.time() - self._silence_timeout
        for link in list(self._waiting):
            sink = link.sink
            if sink is None:
                self._waiting.discard(link)  # answered (or gone) since
            elif (link.sent_at if link.awaiting_head else link.last_read) <= due:
                self._waiting.discard(link)
                link.close()
                sink.upstream_silent()
        if self._waiting:
            self._silence_check = self.loop.call_later(self._silence_tick(), self._check_silence)

    def release(self, link: Link) -> None:
        """A link whose response ended cleanly: to a waiting request, else idle."""
        if not link.open:
            return
        waiters = self._waiters.get(link.upstream) if self._waiters else None
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        link.idle_since = self.loop.time()
        self._idle.setdefault(link.upstream, []).append(link)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self._sweep)

    def forget(self, link: Link) -> None:
        """A link closed: its place under the bound goes to a waiting request."""
        if link in self._links:
            self._links.discard(link)
            self._count_closed(link.upstream)

    def _count_closed(self, upstream: Upstream) -> None:
        left = self._open.get(upstream, 1) - 1
        if left > 0:
            self._open[upstream] = left
        else:
            self._open.pop(upstream, None)
        self._make_room(upstream)

    def _make_room(self, upstream: Upstream) -> None:
        waiters = self._waiters.get(upstream)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # room for one more: it connects itself
                break
        if waiters is not None and not waiters:
            del self._waiters[upstream]

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - self._idle_timeout
        for upstream, idle in list(self._idle.items()):
            keep = [link for link in idle if link.open and link.idle_since > cutoff]
            for link in idle:
                if link.open and link.idle_since <= cutoff:
                    link.close()
            if keep:
                self._idle[upstream] = keep
            else:
                del self._idle[upstream]
        if self._idle:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self._sweep)

    def close(self) -> None:
        if self._silence_check is not None:
            self._silence_check.cancel()
            self._silence_check = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for link in list(self._links):
            link.close()
        self._idle.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()
