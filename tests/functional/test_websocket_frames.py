"""WebSocket frames the proxy refuses, written by hand: a close frame the proxy adds goes
between two frames, never inside one, even when the end of one frame and the header of a
refused one arrive in the same read; control frames over 125 bytes, or fragmented, end
the session with 1002 (RFC 6455 §5.5)."""

from __future__ import annotations

import asyncio
import os

import pytest
from rawhttp import GUARD, RawClient, raw_upstream, read_head
from support import StartProxy, host_for
from upstream import Upstream

from wakeproxy.server import Listening


def client_frame(payload: bytes, *, opcode: int = 2, fin: bool = True, length: int = -1) -> bytes:
    """A masked frame; `length` declares another length than the payload's."""
    size = len(payload) if length < 0 else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes([first, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def handshake(raw: RawClient, host: str) -> None:
    await raw.send(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    async with asyncio.timeout(GUARD):
        head = await raw.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head


async def server_frame(raw: RawClient) -> tuple[int, bytes]:
    """The next frame from the server: (opcode, payload)."""
    async with asyncio.timeout(GUARD):
        first, second = await raw.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(await raw.reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await raw.reader.readexactly(8), "big")
        return first & 0x0F, await raw.reader.readexactly(size)


async def assert_closed_with(raw: RawClient, upstream: Upstream, code: int, echo: bytes) -> None:
    """Both sides get `code` in a close frame of their own: the upstream parsed it as one,
    so it came between two frames. The echo of what preceded it may come first."""
    opcode, payload = await server_frame(raw)
    if opcode == 2:
        assert payload == echo
        opcode, payload = await server_frame(raw)
    assert opcode == 8, f"expected a close frame, got opcode {opcode}"
    assert int.from_bytes(payload[:2], "big") == code
    await upstream.wait_until(lambda: upstream.ws_close_codes == [code])


class RecordingSession:
    """A scripted WebSocket upstream that records every byte after its 101."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.changed = asyncio.Event()
        self.ended = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        await writer.drain()
        while piece := await reader.read(65536):
            self.received += piece
            self.changed.set()
        self.ended.set()

    async def until_received(self, size: int) -> None:
        async with asyncio.timeout(GUARD):
            while len(self.received) < size:
                self.changed.clear()
                await self.changed.wait()


async def test_1009_follows_the_end_of_the_frame_read_together_with_the_oversize_header(
    start_proxy: StartProxy,
) -> None:
    whole = client_frame(b"0123456789")
    oversize = client_frame(b"", length=2000)[:8]  # its header alone
    session = RecordingSession()
    async with (
        start_proxy(websocket_max_message=1000) as proxy,
        raw_upstream(session.serve) as port,
        RawClient(proxy.port) as raw,
    ):
        await handshake(raw, host_for(port))
        await raw.send(whole[:10])  # the header and the first 4 payload bytes
        await session.until_received(10)  # relayed: the proxy is inside that frame now
        await raw.send(whole[10:] + oversize)  # its end, and a header to refuse, in one
        opcode, payload = await server_frame(raw)
        assert (opcode, payload[:2]) == (8, (1009).to_bytes(2, "big"))
        async with asyncio.timeout(GUARD):
            await session.ended.wait()
    # The frame whole, then a masked close frame of its own: never one inside the other.
    assert bytes(session.received[: len(whole)]) == whole
    close = session.received[len(whole) :]
    assert close[:2] == b"\x88\x82"
    assert len(close) == 8
    assert bytes(b ^ close[2 + i % 4] for i, b in enumerate(close[6:])) == b"\x03\xf1"


@pytest.mark.parametrize(
    "refused",
    [
        client_frame(b"", opcode=9, length=1 << 40)[:14],  # a ping declaring 1 TiB
        client_frame(b"p" * 126, opcode=9),
        client_frame(b"pong", opcode=10, fin=False),
    ],
    ids=["ping-1-tib", "ping-126-bytes", "fragmented-pong"],
)
async def test_a_control_frame_rfc_6455_forbids_ends_the_session_with_1002(
    proxy: Listening, upstream: Upstream, refused: bytes
) -> None:
    async with RawClient(proxy.port) as raw:
        await handshake(raw, host_for(upstream.port))
        await raw.send(client_frame(b"before", opcode=2) + refused)
        await assert_closed_with(raw, upstream, 1002, b"before")
