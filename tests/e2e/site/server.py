"""The app the browser tests run inside a sandbox: standard library only.

    python3 server.py PORT [--after FILE]

Serves the files next to it over HTTP/1.1 and answers `GET /ws` with a WebSocket that
echoes every text message back as "echo: <message>" (a minimal RFC 6455 server: one
unfragmented frame at a time, which is what a browser sends for short messages).
With `--after FILE` it starts listening only once FILE exists: a stand-in for an app
whose start-up takes as long as the test wants.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def read_frame(stream: BufferedIOBase) -> tuple[int, bytes] | None:
    """One client frame as (opcode, unmasked payload); None when the peer is gone."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", stream.read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", stream.read(8))
    mask = stream.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = stream.read(length)
    return opcode, bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.echo()
        else:
            super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def echo(self) -> None:
        key = self.headers["Sec-WebSocket-Key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        super().end_headers()
        self.wfile.flush()
        self.close_connection = True
        while (received := read_frame(self.rfile)) is not None:
            opcode, payload = received
            if opcode == _TEXT:
                self.wfile.write(frame(_TEXT, b"echo: " + payload))
            elif opcode == _PING:
                self.wfile.write(frame(_PONG, payload))
            elif opcode == _CLOSE:
                self.wfile.write(frame(_CLOSE, payload[:2]))
                return
            self.wfile.flush()


def main() -> None:
    port = int(sys.argv[1])
    if sys.argv[2:3] == ["--after"]:
        while not Path(sys.argv[3]).exists():
            time.sleep(0.05)
    handler = partial(Handler, directory=str(Path(__file__).parent))
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    print(f"serving on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
