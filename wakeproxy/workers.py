"""`--workers N`: N proxy processes share one port through SO_REUSEPORT.

The supervisor binds nothing that serves traffic: it reserves the port number (when
asked for port 0), starts the workers, serves the admin listener, restarts a worker
that dies, and on SIGTERM/SIGINT passes the signal on and waits for every worker's
graceful shutdown.

Metrics: the workers run prometheus-client's multiprocess mode, writing their values to
files in a fresh directory the supervisor makes and names in `PROMETHEUS_MULTIPROC_DIR`;
its `/metrics` sums them, so one scrape reports every worker. Counters of a worker that
died stay in the sum (counters must not go back); its live gauges are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence

from prometheus_client.multiprocess import mark_process_dead

from wakeproxy.admin import running_admin
from wakeproxy.backends.factory import opened_backend
from wakeproxy.config import Config
from wakeproxy.discovery import targets_of
from wakeproxy.metrics import multiprocess_registry
from wakeproxy.readiness import Readiness, backend_check
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
        self._metrics_dir = ""
        self._pipes: dict[int, int] = {}  # worker → read end, until it says it listens
        self._listening: set[int] = set()

    async def run(self) -> int:
        host, port = split_listen(self._config.proxy.listen)
        reservation, port = reserve_port(host, port)
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._metrics_dir = tempfile.mkdtemp(prefix="wakeproxy-metrics-")
        readiness = Readiness()
        readiness.check("workers", self._workers_state)
        registry = multiprocess_registry(self._metrics_dir, self._worker_pids)
        try:
            async with (
                opened_backend(self._config.backend) as backend,
                running_admin(
                    self._config.admin.listen,
                    readiness,
                    registry,
                    targets_of(backend, self._config.proxy.domains[0]),
                ) as admin,
            ):
                readiness.check("backend", backend_check(backend))
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
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        reservation.close()
        return 0

    def _worker_pids(self) -> list[int]:
        return [proc.pid for proc in self._procs.values() if proc.returncode is None]

    async def _workers_state(self) -> str:
        """ok: every worker listens; degraded: some do; down: none."""
        for index, read_end in list(self._pipes.items()):
            try:
                said = os.read(read_end, 1)
            except BlockingIOError:
                continue  # not listening yet
            if said:
                self._listening.add(index)
            self._close_pipe(index)
        listening = sum(
            1
            for index, proc in self._procs.items()
            if proc.returncode is None and index in self._listening
        )
        if listening == self._config.proxy.workers:
            return "ok"
        return "degraded" if listening else "down"

    async def _keep(self, index: int, listen: str) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        while not self._stopping:
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "wakeproxy", *self._argv,
                    "--proxy-listen", listen, "--as-worker", "--ready-fd", str(write_end),
                    env=env, pass_fds=(write_end,),
                )  # fmt: skip
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
            self._procs[index] = proc
            self._listening.discard(index)
            self._pipes[index] = read_end
            code = await proc.wait()
            self._close_pipe(index)
            self._listening.discard(index)
            mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
            if not self._stopping:
                log.warning("worker exited, restarting", extra={"worker": index, "code": code})
                await asyncio.sleep(_RESTART_DELAY)

    def _close_pipe(self, index: int) -> None:
        read_end = self._pipes.pop(index, None)
        if read_end is not None:
            os.close(read_end)

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
