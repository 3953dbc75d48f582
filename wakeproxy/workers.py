"""`--workers N`: N proxy processes share one port through SO_REUSEPORT.

The supervisor binds nothing that serves traffic: it reserves the port number (when
asked for port 0), starts the workers, serves the admin listener, restarts a worker
that dies, and on SIGTERM/SIGINT passes the signal on and waits for every worker's
graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from wakeproxy.admin import running_admin
from wakeproxy.config import Config
from wakeproxy.server import split_listen

log = logging.getLogger("wakeproxy.workers")
_RESTART_DELAY = 1.0


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so port 0 becomes one number all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, sock.getsockname()[1]


class Supervisor:
    def __init__(self, config: Config, worker_argv: Sequence[str]) -> None:
        self._config = config
        self._argv = list(worker_argv)
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    async def run(self) -> int:
        host, port = split_listen(self._config.proxy.listen)
        reservation, port = reserve_port(host, port)
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running_admin(self._config.admin.listen, self._readiness) as admin:
            keepers = [
                asyncio.create_task(self._keep(index, listen))
                for index in range(self._config.proxy.workers)
            ]
            log.info(
                "supervisor started",
                extra={"event": "supervisor", "listen": listen, "admin": admin.url},
            )
            await stop.wait()
            self._stopping = True
            await self._stop_all()
            await asyncio.gather(*keepers, return_exceptions=True)
        reservation.close()
        return 0

    async def _readiness(self) -> dict[str, str]:
        alive = sum(1 for proc in self._procs.values() if proc.returncode is None)
        return {"workers": "ok" if alive == self._config.proxy.workers else "degraded"}

    async def _keep(self, index: int, listen: str) -> None:
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wakeproxy", *self._argv,
                "--proxy-listen", listen, "--as-worker",
            )  # fmt: skip
            self._procs[index] = proc
            code = await proc.wait()
            if not self._stopping:
                log.warning("worker exited, restarting", extra={"worker": index, "code": code})
                await asyncio.sleep(_RESTART_DELAY)

    async def _stop_all(self) -> None:
        procs = [p for p in self._procs.values() if p.returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = self._config.proxy.shutdown_grace + 5.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), deadline)
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
