"""The socket broker: sockets connected to sandbox ports, for other processes on this host.

A sandbox with its own network namespace has no address a proxy in another process could
dial; only the platform can open sockets inside the namespace. The broker listens on a
unix socket (mode 0600 in a 0700 folder: only this user's processes get in). A client
sends one line, `<sandbox id> <port>\\n`; the broker connects to that port inside the
sandbox and passes the connected socket back with SCM_RIGHTS next to the line `ok`, or
answers `refused: <why>` without a socket. The client then owns a plain TCP socket: the
traffic itself never passes through the platform process.

The client side is `wakeproxy.backends.http.ask_broker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

OpenSocket = Callable[[str, int], Awaitable[socket.socket]]

_REQUEST_TIMEOUT: Final = 5.0
_MAX_REQUEST: Final = 256
_SUN_PATH_ROOM: Final = 100  # sun_path holds 108 bytes


class PortBroker:
    def __init__(self, open_socket: OpenSocket, path: Path) -> None:
        self._open_socket = open_socket
        self.path = path
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left over by a platform that did not stop cleanly
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._spawn(self._accept(listener))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._spawn(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            conn.setblocking(False)
            try:
                async with asyncio.timeout(_REQUEST_TIMEOUT):
                    sandbox_id, port = _parse(await _read_line(loop, conn))
                    sock = await self._open_socket(sandbox_id, port)
            except (OSError, TimeoutError, ValueError) as exc:
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(
                        conn, f"refused: {str(exc) or type(exc).__name__}\n".encode()
                    )
                return
            with sock:
                try:
                    socket.send_fds(conn, [b"ok\n"], [sock.fileno()])
                except OSError as exc:  # the client left, or its buffer is full: its loss
                    log.debug("passing a sandbox socket failed: %s", exc)

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await loop.sock_recv(conn, _MAX_REQUEST)
        if not chunk:
            raise ValueError("the request ended early")
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError("the request is too long")
    return data.partition(b"\n")[0]


def _parse(line: bytes) -> tuple[str, int]:
    sandbox_id, _, port = line.decode("ascii").partition(" ")
    if not sandbox_id or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected '<sandbox id> <port>'")
    return sandbox_id, int(port)


@asynccontextmanager
async def running_broker(open_socket: OpenSocket, data_dir: Path) -> AsyncIterator[PortBroker]:
    """A broker at `<data_dir>/ports.sock`, or in a private temporary folder when that
    path is too long for a unix socket; stopped and removed on exit."""
    path = data_dir / "ports.sock"
    temporary: Path | None = None
    if len(os.fsencode(path)) >= _SUN_PATH_ROOM:
        temporary = Path(tempfile.mkdtemp(prefix="wakeproxy-"))  # mode 0700
        path = temporary / "ports.sock"
    broker = PortBroker(open_socket, path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
