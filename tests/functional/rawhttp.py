"""HTTP/1.1 written and parsed by hand, for what a client library would hide.

`RawClient` sends exactly the bytes a test gives it (no invented headers) and parses each
response as it arrives: interim 1xx responses, bodiless responses (HEAD, 204, 304),
Content-Length and chunked framing, and whether a body was cut short. Several requests
can go over one connection, so keep-alive is visible.

`raw_upstream` serves a scripted upstream: a coroutine that gets each connection's
streams, for responses the real upstream cannot make (hop-by-hop response headers,
a chunked body that stops halfway).

Reads are bounded by `GUARD`, which only turns a hang into a failure with a message; a
working proxy answers long before it, so it is no timing assertion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

GUARD = 30.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: tuple[tuple[str, str], ...]  # wire order and spelling
    body: bytes  # de-chunked when the response was chunked
    chunked: bool
    complete: bool  # the framing ended properly, as opposed to the connection ending it

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}


def request_bytes(
    method: str,
    target: str,
    host: str | None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A request head (Host first, then `headers` as given) and `body`.

    Content-Length is added only for a non-empty body whose headers frame nothing.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    pairs = list(headers)
    lines.extend(f"{name}: {value}" for name, value in pairs)
    framed = {name.lower() for name, _ in pairs} & {"content-length", "transfer-encoding"}
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*chunks: bytes, trailers: str = "") -> bytes:
    """A chunked request body made of `chunks`, terminated, with optional trailer lines."""
    framed = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
    return framed + b"0\r\n" + trailers.encode("latin-1") + b"\r\n"


class RawClient:
    """One client connection; `async with RawClient(port) as client:`."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._address = (host, port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawClient:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def reader(self) -> asyncio.StreamReader:
        assert self._reader is not None, "not connected"
        return self._reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        assert self._writer is not None, "not connected"
        return self._writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str,
        target: str,
        host: str | None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> RawResponse:
        """Send one request and return its final response (interim ones are skipped)."""
        await self.send(request_bytes(method, target, host, headers, body))
        while True:
            response = await self.response(method)
            if not 100 <= response.status < 200:
                return response

    async def response(self, method: str = "GET") -> RawResponse:
        """The next response on the connection, interim (1xx) ones included."""
        async with asyncio.timeout(GUARD):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            return await self._body(method, status, headers)

    async def closed_by_peer(self) -> bool:
        """Whether the server has closed the connection (reads until it does or sends)."""
        async with asyncio.timeout(GUARD):
            try:
                return await self.reader.read(1) == b""
            except ConnectionResetError:
                return True

    def abort(self) -> None:
        if self._writer is not None:
            transport = self._writer.transport
            transport.abort()

    async def _body(
        self, method: str, status: int, headers: tuple[tuple[str, str], ...]
    ) -> RawResponse:
        def build(body: bytes, *, chunked: bool = False, complete: bool = True) -> RawResponse:
            return RawResponse(status, headers, body, chunked, complete)

        lowered = {name.lower(): value for name, value in headers}
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return build(b"")
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            body, complete = await _read_chunked(self.reader)
            return build(body, chunked=True, complete=complete)
        if "content-length" in lowered:
            body, complete = await _read_length(self.reader, int(lowered["content-length"]))
            return build(body, complete=complete)
        return build(await self.reader.read())


def _parse_head(head: bytes) -> tuple[int, tuple[tuple[str, str], ...]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, code, *_ = status_line.split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), f"unexpected status line {status_line!r}"
    headers = []
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
    return int(code), tuple(headers)


# A body cut short reads as (what arrived, False), whether the peer closed or reset.


async def _read_length(reader: asyncio.StreamReader, length: int) -> tuple[bytes, bool]:
    body = bytearray()
    try:
        while len(body) < length:
            piece = await reader.read(length - len(body))
            if not piece:
                return bytes(body), False
            body += piece
    except ConnectionResetError:
        return bytes(body), False
    return bytes(body), True


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    body = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return bytes(body), True
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
    except asyncio.IncompleteReadError as cut:
        body += cut.partial
        return bytes(body), False
    except ConnectionResetError:
        return bytes(body), False


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """One request head, as an upstream script reads it."""
    async with asyncio.timeout(GUARD):
        return await reader.readuntil(b"\r\n\r\n")


@asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """Serve `handler` for every connection on 127.0.0.1; yields the port.

    On exit the connections still open are aborted and their handlers stopped, so
    nothing outlives the test; then the first exception a handler raised, if any, is
    raised here, so a failed assertion inside a script fails the test.
    """
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []
    errors: list[Exception] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            return  # stopped by the clean-up below: the test is over
        except Exception as error:
            errors.append(error)
        writer.close()  # graceful: what the handler wrote is still delivered

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
    if errors:
        raise errors[0]
