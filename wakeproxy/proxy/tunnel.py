"""A WebSocket session after its handshake: bytes spliced between two connections.

Frames pass through untouched — pings, pongs, close codes and compressed payloads are
the endpoints' business — so a session costs two transports and this object, and an
echo costs one read and one write per direction. Each direction keeps a `FrameCursor`,
which reads only frame headers: it knows where the next frame starts, so the proxy can
add a close frame of its own between two frames (1001 at shutdown, 1011 when the
sandbox cannot be woken, 1009 for a message over `max_message`, 1002 for a control frame
over 125 bytes or fragmented), and never inside one: what precedes a refused frame in
the same read is passed on first.

Before client bytes go upstream, the sandbox must be running: a session that stayed
open while its sandbox was paused wakes it with its next message (reading pauses
meanwhile). A side that goes away is mirrored: the other is closed, or cut if the
first was cut.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import cast

from wakeproxy.errors import ProxyError

GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
SANDBOX_GONE = 1011

Gate = Callable[[], bool]
"""True when client bytes may go upstream now (the sandbox runs; activity is noted)."""
Wake = Callable[[], Awaitable[None]]
"""Wakes the sandbox; raises `ProxyError` when it cannot be woken."""


class BadFrame(Exception):
    """A frame the tunnel refuses; `at`: where in the data just read it begins, so what
    precedes it (whole frames, or the end of one) can still be passed on and the close
    frame follow it; `code`: the close code to end the session with."""

    code = PROTOCOL_ERROR

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


class MessageTooBig(BadFrame):
    """A message longer than the tunnel's `max_message`."""

    code = MESSAGE_TOO_BIG


class BadControlFrame(BadFrame):
    """A control frame over 125 bytes, or fragmented (RFC 6455 §5.5)."""


class FrameCursor:
    """Where a stream of WebSocket frames is: between two frames, or inside one."""

    __slots__ = ("_head", "_left", "_max", "_message")

    def __init__(self, max_message: int) -> None:
        self._head = b""  # a frame header split across reads
        self._left = 0  # payload bytes of the current frame still to come
        self._message = 0  # payload bytes of the current (perhaps fragmented) message
        self._max = max_message

    @property
    def at_boundary(self) -> bool:
        return not self._left and not self._head

    def advance(self, data: bytes) -> int:
        """Move past `data`; how many data frames begin in it (control frames — ping,
        pong, close — are not counted). Raises `MessageTooBig` when a message grows over
        the limit, `BadControlFrame` for a control frame RFC 6455 forbids; the cursor
        then stands where that frame begins (inside a frame if it began in earlier data)."""
        begun = 0
        at, end = 0, len(data)
        while at < end:
            if self._left:
                step = min(self._left, end - at)
                self._left -= step
                at += step
                continue
            start = at - len(self._head)  # below 0: the header began in earlier data
            head = self._head + data[at : at + 14 - len(self._head)]
            need = _header_size(head)
            if need == 0 or len(head) < need:
                self._head = head
                return begun
            at += need - len(self._head)
            self._head = b""
            length = _payload_length(head)
            opcode = head[0] & 0x0F
            if opcode >= 8:
                if length > 125 or not head[0] & 0x80:
                    raise self._refused(BadControlFrame, start)
            else:  # data or continuation; control frames are not messages
                begun += 1
                self._message = length if opcode else self._message + length
                if self._message > self._max:
                    raise self._refused(MessageTooBig, start)
            self._left = length
        return begun

    def _refused(self, kind: type[BadFrame], start: int) -> BadFrame:
        # Stand where the refused frame begins: between frames, unless its header
        # began in data already passed on.
        self._left = 0 if start >= 0 else 1
        return kind(max(start, 0))


def _header_size(head: bytes) -> int:
    """Bytes the frame header starting `head` takes; 0 while that is not known yet."""
    if len(head) < 2:
        return 0
    marker = head[1] & 0x7F
    size = 2 + (2 if marker == 126 else 8 if marker == 127 else 0)
    return size + 4 if head[1] & 0x80 else size


def _payload_length(head: bytes) -> int:
    marker = head[1] & 0x7F
    if marker == 126:
        return int.from_bytes(head[2:4], "big")
    if marker == 127:
        return int.from_bytes(head[2:10], "big")
    return marker


def close_frame(code: int, *, masked: bool) -> bytes:
    """A close frame; `masked` for one a client sends (RFC 6455 §5.3)."""
    payload = code.to_bytes(2, "big")
    if not masked:
        return b"\x88\x02" + payload
    mask = os.urandom(4)
    return b"\x88\x82" + mask + bytes(b ^ mask[i] for i, b in enumerate(payload))


class _Side(asyncio.Protocol):
    """One connection of a tunnel; reports to it."""

    __slots__ = ("_tunnel", "client", "transport")

    def __init__(self, tunnel: Tunnel, transport: asyncio.BaseTransport, client: bool) -> None:
        self._tunnel = tunnel
        self.transport = cast("asyncio.Transport", transport)
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client:
            self._tunnel.from_client(data)
        else:
            self._tunnel.from_upstream(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.side_lost(self, exc)

    def pause_writing(self) -> None:
        self._tunnel.other(self).transport.pause_reading()

    def resume_writing(self) -> None:
        self._tunnel.other(self).transport.resume_reading()


class Tunnel:
    __slots__ = (
        "_client",
        "_closing",
        "_ended",
        "_gate",
        "_held",
        "_held_at_boundary",
        "_inbound",
        "_on_end",
        "_outbound",
        "_upstream",
        "_wake",
        "_waking",
    )

    def __init__(
        self,
        client: asyncio.BaseTransport,
        upstream: asyncio.BaseTransport,
        *,
        max_message: int,
        gate: Gate,
        wake: Wake,
        on_end: Callable[[Tunnel], None],
    ) -> None:
        self._client = _Side(self, client, client=True)
        self._upstream = _Side(self, upstream, client=False)
        self._inbound = FrameCursor(max_message)  # client → upstream
        self._outbound = FrameCursor(max_message)  # upstream → client
        self._gate = gate
        self._wake = wake
        self._on_end = on_end
        self._held: list[bytes] = []  # client bytes waiting for the sandbox to wake
        self._held_at_boundary = True  # whether the first of them began a frame
        self._waking: asyncio.Task[None] | None = None
        self._closing = False
        self._ended = False

    def start(self, early_client: bytes, early_upstream: bytes) -> None:
        """Take both connections over; `early_*` arrived behind the handshake."""
        self._client.transport.set_protocol(self._client)
        self._upstream.transport.set_protocol(self._upstream)
        if early_upstream:
            self.from_upstream(early_upstream)
        if early_client:
            self.from_client(early_client)

    def other(self, side: _Side) -> _Side:
        return self._upstream if side is self._client else self._client

    def from_client(self, data: bytes) -> None:
        if self._closing:
            return
        boundary = self._inbound.at_boundary
        try:
            messages = self._inbound.advance(data)
        except BadFrame as bad:
            if bad.at:
                if self._waking is None:
                    self._upstream.transport.write(data[: bad.at])
                else:
                    self._held.append(data[: bad.at])
            self.close(bad.code)
            return
        if self._waking is not None:
            self._held.append(data)
        elif messages and not self._gate():
            # Only messages wake a sandbox and count as its activity: a ping or a close
            # from a client is no use of it.
            self._held.append(data)
            self._held_at_boundary = boundary
            self._client.transport.pause_reading()
            self._waking = asyncio.get_running_loop().create_task(self._wake_then_send())
        else:
            self._upstream.transport.write(data)

    async def _wake_then_send(self) -> None:
        try:
            await self._wake()
        except ProxyError:
            self._waking = None
            self.close(SANDBOX_GONE)
            return
        self._waking = None
        held, self._held = self._held, []
        if not self._closing:
            self._upstream.transport.write(b"".join(held))
            self._client.transport.resume_reading()

    def from_upstream(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._outbound.advance(data)
        except BadFrame as bad:
            if bad.at:
                self._client.transport.write(data[: bad.at])
            self.close(bad.code)
            return
        self._client.transport.write(data)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.other(side).transport
        if exc is None:
            other.close()  # what was relayed still goes out first
        else:
            other.abort()
        self._end()

    def close(self, code: int) -> None:
        """End the session with `code` on both sides, at frame boundaries; a side in the
        middle of a frame is cut instead (a close frame there would corrupt it)."""
        if self._closing:
            return
        self._closing = True
        if self._waking is not None:
            self._waking.cancel()
        for side, cursor, masked in (
            (self._client, self._outbound, False),
            (self._upstream, self._inbound, True),
        ):
            # Client bytes held for a wake never went out: the upstream stands where
            # the first of them would have begun.
            at_boundary = self._held_at_boundary if masked and self._held else cursor.at_boundary
            if at_boundary:
                side.transport.write(close_frame(code, masked=masked))
                side.transport.close()
            else:
                side.transport.abort()
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end(self)
