"""A WebSocket echo server on the standard library alone, for a container that runs the
host's /usr/bin/python3 (tests/docker_daemon.py): `python3 ws_echo_server.py PORT`.

A GET with `Upgrade: websocket` gets 101 and then every text or binary message back,
pongs for pings and the close frame echoed; any other request gets 200 "ok".
"""

import asyncio
import base64
import hashlib
import struct
import sys

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _frame(reader):
    head = await reader.readexactly(2)
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _encode(opcode, data):
    if len(data) < 126:
        head = struct.pack("!BB", 0x80 | opcode, len(data))
    elif len(data) < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, len(data))
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, len(data))
    return head + data


async def _serve(reader, writer):
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
            return
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )
        while True:
            opcode, data = await _frame(reader)
            if opcode == 0x8:
                writer.write(_encode(0x8, data))
                await writer.drain()
                return
            writer.write(_encode(0xA if opcode == 0x9 else opcode, data))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, KeyError):
        return
    finally:
        writer.close()


async def _main(port):
    server = await asyncio.start_server(_serve, "0.0.0.0", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
