"""A byte relay with no HTTP at all: `python bench/byte_relay.py LISTEN_PORT UPSTREAM_PORT`.

Scenario 1's reference row "byte relay (Python + uvloop, no HTTP)": the floor of what any
Python proxy on uvloop can do on this machine. It listens on 127.0.0.1:LISTEN_PORT and, for
each client connection it accepts, opens one TCP connection to 127.0.0.1:UPSTREAM_PORT and
copies bytes both ways with `transport.write` from `data_received`. Nothing is parsed,
routed or pooled; bytes that arrive before the upstream connection is up wait in a list.
When either side closes (or ends its half), the other side is closed once its pending
writes are flushed; a write to a side that was reset closes the pair. A full write buffer
pauses reading on the other side, so a slow reader never makes the relay buffer without
bound. uvloop sets TCP_NODELAY on every TCP transport, as nginx's `tcp_nodelay on` does.

Readiness is detected as for `bench/servers.py`: the caller waits until the port accepts.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

BACKLOG = 4096


class _Upstream(asyncio.Protocol):
    """The relay's connection to the origin, made for one client connection."""

    transport: asyncio.Transport

    def __init__(self, client: _Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.client.transport.write(data)
        except RuntimeError:  # uvloop: the client's socket is already closed (reset)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    """An accepted client connection: opens its upstream connection, buffers until it is up."""

    transport: asyncio.Transport

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []  # what arrives before the upstream connection is up
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # Held here so the task cannot be collected while it connects.
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self), "127.0.0.1", self.upstream_port
            )
        except OSError:
            self.transport.close()
            return
        upstream.writelines(self.early)
        self.early.clear()
        if self.closed:  # the client left while we connected: deliver what it sent, then close
            upstream.close()
        else:
            self.upstream = upstream

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            self.early.append(data)
        else:
            try:
                upstream.write(data)
            except RuntimeError:  # uvloop: the upstream socket is already closed (reset)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


async def serve(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Client(upstream_port), "127.0.0.1", listen_port, backlog=BACKLOG
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
