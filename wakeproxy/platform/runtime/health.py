"""Whether a sandbox's agent is ready: `GET /health` answers 2xx (envd answers 204)."""

from __future__ import annotations

import asyncio
import socket

HEALTH_TIMEOUT = 2.0


async def agent_is_healthy(sock: socket.socket, token: str | None, host: str = "localhost") -> bool:
    """Send `GET /health` on the connected `sock` (which this closes) and read the status."""
    auth = "" if token is None else f"X-Access-Token: {token}\r\n"
    request = f"GET /health HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                writer.write(request.encode())
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        sock.close()
        return False
    return status_ok(status_line)


def status_ok(status_line: bytes) -> bool:
    """`HTTP/1.1 204 No Content` -> True; anything else (or nothing) -> False."""
    parts = status_line.split(None, 2)
    return (
        len(parts) >= 2
        and parts[0].startswith(b"HTTP/")
        and parts[1].isdigit()
        and 200 <= int(parts[1]) < 300
    )
