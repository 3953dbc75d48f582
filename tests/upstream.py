"""A real HTTP and WebSocket upstream for functional tests.

``await start_upstream()`` (or the ``upstream`` fixture in ``conftest.py``) serves on
127.0.0.1 on a port the kernel picks, and records what it received so a test can assert
what the proxy forwarded. Every endpoint accepts any method, HEAD included, unless noted.

``/echo``
    Streams the request body back as it arrives (chunked, never held whole). The response
    head is sent before the body is read; ``X-Method`` carries the request method.
``/headers``
    JSON ``{"method", "path", "version", "host", "headers"}``: ``path`` is the raw target,
    ``host`` the raw Host header, ``headers`` the ``[name, value]`` pairs in wire order.
``/upload``
    Reads the body chunk by chunk; JSON ``{"bytes": n, "sha256": hex}``.
``/download?size=N[&chunk=M][&chunked=1][&delay=S]``
    N bytes of `pattern` (byte at offset i is ``i % 256``) written M bytes at a time
    (default 64 KiB), S seconds apart (default 0). Content-Length is set unless ``chunked=1``.
``/status/{code}``
    Answers with that status. 204 and 304 (and any HEAD) carry no body; 301/302/303/307/308
    carry ``Location: /headers``; 304 carries an ETag. A 1xx code other than 101 is sent as
    an interim response (103 with a ``Link`` header) followed by a final 200.
``/sse?n=K&interval=S[&step=1]``
    K Server-Sent Events S seconds apart, each written as soon as it is made:
    ``id: i`` and ``data: {"i": i, "sent": time.monotonic()}``. With ``step=1`` each event
    after the first waits for `Upstream.sse_step` instead of S seconds, so a test decides
    when the next one is sent. `Upstream.sse_sent` counts the events written so far.
``/slow?delay=S``
    Sends the head only after S seconds. If the client goes away first the handler is
    cancelled and `Upstream.cancelled` / `Upstream.cancelled_event` record it.
``/ws``
    WebSocket echo, see `Upstream._ws`. A plain request gets 426.
``/count``
    JSON ``{"count": n}`` where n counts the requests to /count so far (also ``X-Count``).
``/abort?after=N``
    Promises a longer body, sends N pattern bytes, then drops the connection.

Every request is counted in ``hits["METHOD /path"]`` and recorded in ``seen``, with the
number of the TCP connection that carried it; `Upstream.connections` counts those connections.
`Upstream.refuse_connections` closes the listening socket (the port then refuses
connections) and `Upstream.accept_connections` listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

_PERIOD = bytes(range(256))
_BLOCK = _PERIOD * 256  # 64 KiB, a whole number of periods
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def pattern(size: int, offset: int = 0) -> bytes:
    """The bytes /download sends at ``[offset, offset + size)``: byte i is ``i % 256``."""
    start = offset % len(_PERIOD)
    if start + size <= len(_BLOCK):
        return _BLOCK[start : start + size]
    repeats = (start + size) // len(_PERIOD) + 1
    return (_PERIOD * repeats)[start : start + size]


def pattern_sha256(size: int) -> str:
    """sha256 hex digest of ``pattern(size)``, computed without holding it whole."""
    digest = hashlib.sha256()
    whole, rest = divmod(size, len(_BLOCK))
    for _ in range(whole):
        digest.update(_BLOCK)
    digest.update(_BLOCK[:rest])
    return digest.hexdigest()


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str  # raw request target, query included
    host: str | None
    headers: tuple[tuple[str, str], ...]  # wire order and spelling
    connection: int = 0  # which TCP connection carried it: 1 for the first one, and so on


class Upstream:
    """One upstream server and what it has seen; create it with `start_upstream`."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.count = 0
        self.hits: Counter[str] = Counter()
        self.seen: list[SeenRequest] = []
        self.sse_sent = 0
        self._sse_steps = asyncio.Semaphore(0)
        self.slow_started = 0
        self.slow_completed = 0
        self.cancelled = 0
        self.cancelled_event = asyncio.Event()
        self.ws_connections = 0
        self.ws_open = 0  # sessions whose handler is still running
        self.ws_protocols: list[str | None] = []
        self.ws_close_codes: list[int] = []  # close codes sent by clients, in order
        self.ws_close_reasons: list[str] = []
        self._changed = asyncio.Event()
        # Held, not weakly referenced, so no id is reused while the upstream lives.
        self._connections: list[object] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def requests(self) -> int:
        return sum(self.hits.values())

    @property
    def connections(self) -> int:
        """TCP connections that have carried at least one request."""
        return len(self._connections)

    def sse_step(self) -> None:
        """Let one waiting ``/sse?step=1`` stream write its next event."""
        self._sse_steps.release()

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def wait_until(
        self,
        predicate: Callable[[], object],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Return once ``predicate()`` is true; it is re-checked whenever a record changes.

        The built-in bound makes a condition that never comes true fail here, in seconds and
        with a message, rather than at the per-test timeout.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"upstream condition still false after {timeout}s") from None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app(), handler_cancellation=True, access_log=None, shutdown_timeout=5.0
        )
        await self._runner.setup()
        await self._listen(0)
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._drop_connections(runner)
        await runner.cleanup()

    async def refuse_connections(self, *, drop_existing: bool = True) -> None:
        """Stop listening (the port then refuses connections); keep the port number.

        With ``drop_existing`` the open connections are closed too, as when the process
        behind the port goes away, so a pooled keep-alive connection cannot hide it.
        """
        assert self._runner is not None, "upstream is closed"
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if drop_existing:
            self._drop_connections(self._runner)

    async def accept_connections(self) -> None:
        """Listen on the same port again."""
        if self._site is None:
            await self._listen(self.port)

    @contextlib.asynccontextmanager
    async def refusing(self, *, drop_existing: bool = True) -> AsyncIterator[None]:
        await self.refuse_connections(drop_existing=drop_existing)
        try:
            yield
        finally:
            await self.accept_connections()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, port, reuse_address=True)
        await site.start()
        self._site = site

    @staticmethod
    def _drop_connections(runner: web.AppRunner) -> None:
        # Closing the transport makes aiohttp cancel the handler (handler_cancellation).
        if runner.server is not None:
            for connection in runner.server.connections:
                connection.force_close()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "/echo": self._echo,
            "/headers": self._headers,
            "/upload": self._upload,
            "/download": self._download,
            r"/status/{code:\d{3}}": self._status,
            "/sse": self._sse,
            "/slow": self._slow,
            "/ws": self._ws,
            "/count": self._count,
            "/abort": self._abort,
        }
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        return app

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.hits[f"{request.method} {request.path}"] += 1
        self.seen.append(
            SeenRequest(
                request.method,
                request.raw_path,
                request.headers.get("Host"),
                _wire_headers(request),
                self._connection_number(request.protocol),
            )
        )
        self._notify()
        return await handler(request)

    def _connection_number(self, connection: object) -> int:
        for number, known in enumerate(self._connections, start=1):
            if known is connection:
                return number
        self._connections.append(connection)
        return len(self._connections)

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        response = web.StreamResponse(
            headers={"X-Method": request.method, "Content-Type": content_type}
        )
        # No Content-Length: aiohttp frames the body chunked on HTTP/1.1.
        await response.prepare(request)
        request.writer.send_headers()
        async for chunk in request.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _headers(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "version": f"{request.version.major}.{request.version.minor}",
                "host": request.headers.get("Host"),
                "headers": [list(pair) for pair in _wire_headers(request)],
            }
        )

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"bytes": size, "sha256": digest.hexdigest()})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        size = _query(request, "size", int, 0)
        chunk = max(1, _query(request, "chunk", int, 64 * 1024))
        delay = _query(request, "delay", float, 0.0)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("chunked") != "1":
            response.content_length = size
        await response.prepare(request)
        request.writer.send_headers()
        offset = 0
        while request.method != "HEAD" and offset < size:
            if offset and delay:
                await asyncio.sleep(delay)
            length = min(chunk, size - offset)
            await response.write(pattern(length, offset))
            offset += length
        await response.write_eof()
        return response

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        if not 100 <= code <= 599 or code == 101:
            raise web.HTTPBadRequest(text="status must be 100-599 and not 101 (use /ws)\n")
        if code < 200:
            _send_interim(request, code)
            return web.Response(text=f"final response after {code}\n")
        headers = {}
        if code in _REDIRECTS:
            headers["Location"] = "/headers"
        if code == 304:
            headers["ETag"] = '"upstream-304"'
        if code in (204, 304):
            return web.Response(status=code, headers=headers)
        return web.Response(status=code, text=f"{code} {_phrase(code)}\n", headers=headers)

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        count = _query(request, "n", int, 3)
        interval = _query(request, "interval", float, 0.1)
        stepped = request.query.get("step") == "1"
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        request.writer.send_headers()
        for index in range(count if request.method != "HEAD" else 0):
            if index and stepped:
                await self._sse_steps.acquire()
            elif index:
                await asyncio.sleep(interval)
            data = json.dumps({"i": index, "sent": time.monotonic()})
            await response.write(f"id: {index}\ndata: {data}\n\n".encode())
            self.sse_sent += 1
            self._notify()
        await response.write_eof()
        return response

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        delay = _query(request, "delay", float, 5.0)
        self.slow_started += 1
        self._notify()
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancelled_event.set()
            self._notify()
            raise
        self.slow_completed += 1
        self._notify()
        return web.Response(text=f"slept {delay}\n")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        """WebSocket echo.

        Offers subprotocols "chat" and "superchat" (the first one the client lists that is
        among them wins; see ``ws_protocols``). ``?hello=1`` makes the first message the raw
        query string. Text and binary messages are echoed and pings answered, except the
        text "close:<code>", which closes with that code, and "drop", which aborts the TCP
        connection without a close frame. Close codes the client sends are recorded in
        ``ws_close_codes``.
        """
        ws = web.WebSocketResponse(protocols=("chat", "superchat"))
        if not ws.can_prepare(request).ok:
            return web.Response(
                status=426, text="WebSocket upgrade required\n", headers={"Upgrade": "websocket"}
            )
        await ws.prepare(request)
        self.ws_connections += 1
        self.ws_protocols.append(ws.ws_protocol)
        self._notify()
        self.ws_open += 1
        try:
            if request.query.get("hello") == "1":
                await ws.send_str(request.rel_url.raw_query_string)
            await self._ws_echo(request, ws)
        finally:
            self.ws_open -= 1
            self._notify()
        return ws

    async def _ws_echo(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is not WSMsgType.TEXT:
                if message.type is WSMsgType.CLOSE:
                    # aiohttp has already answered with a close frame (autoclose).
                    self.ws_close_codes.append(message.data)
                    self.ws_close_reasons.append(message.extra or "")
                    self._notify()
                return
            elif message.data == "drop":
                await _abort(request)
            elif message.data.startswith("close:") and message.data[6:].isdigit():
                await ws.close(code=int(message.data[6:]), message=b"closed on request")
                return
            else:
                await ws.send_str(message.data)

    async def _count(self, request: web.Request) -> web.StreamResponse:
        self.count += 1
        self._notify()
        return web.json_response({"count": self.count}, headers={"X-Count": str(self.count)})

    async def _abort(self, request: web.Request) -> web.StreamResponse:
        after = _query(request, "after", int, 0)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = after + 1024 * 1024
        await response.prepare(request)
        request.writer.send_headers()
        if after and request.method != "HEAD":
            await response.write(pattern(after))
        await _abort(request)
        raise AssertionError("unreachable: the aborted handler is cancelled")


async def start_upstream() -> Upstream:
    """Start an upstream on 127.0.0.1 (kernel-chosen port); ``await up.close()`` ends it."""
    upstream = Upstream()
    await upstream.start()
    return upstream


async def _abort(request: web.Request) -> None:
    """Drop the connection without a goodbye and wait for aiohttp to cancel this handler.

    Returning normally instead would make aiohttp try to finish the response on a dead
    transport; the cancellation follows the abort within one loop iteration.
    """
    transport = request.transport
    assert transport is not None
    transport.abort()
    await asyncio.Future()


def _wire_headers(request: web.Request) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers
    )


def _send_interim(request: web.Request, code: int) -> None:
    if request.version < (1, 1):
        raise web.HTTPBadRequest(text="interim responses need HTTP/1.1\n")
    transport = request.transport
    assert transport is not None
    link = "Link: </style.css>; rel=preload\r\n" if code == 103 else ""
    transport.write(f"HTTP/1.1 {code} {_phrase(code)}\r\n{link}\r\n".encode("latin-1"))


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Status"


def _query(request: web.Request, name: str, kind: Callable[[str], Any], default: Any) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"bad query parameter {name}={raw!r}\n") from None
