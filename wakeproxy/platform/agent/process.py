"""The sandbox's running commands and the streams of what they print.

Each command runs in its own session and process group, so a signal or a kill ends
the command together with what it started (a daemon that calls `setsid` escapes, as
it would from any shell). Its output is handed to every subscriber: the `Start`
stream that launched it and any `Connect` streams. Output printed while nobody
listens is dropped, as envd drops it; a subscriber that falls behind holds the
command back (its pipe fills up), as it does with envd.

When the command exits, what it wrote before exiting is still delivered, then its
`Exit`; output of children that keep its pipes open is not waited for (envd closes
the pipes when the command exits). A command started with a timeout is killed when
the timeout passes in running time (see `clock`), whether or not anyone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from wakeproxy.platform.agent import exits
from wakeproxy.platform.agent.clock import ActiveClock
from wakeproxy.platform.agent.errors import InputError
from wakeproxy.platform.agent.messages import (
    Exit,
    Input,
    OutputKind,
    ProcessConfig,
    PtySize,
    Selector,
)
from wakeproxy.platform.agent.spawn import (
    ChildReaper,
    Launched,
    LaunchSpec,
    launch,
    set_window_size,
)

CHUNK = 32 * 1024
QUEUE_SIZE = 64
# Once the command has exited, read at most this much more of what its pipes still hold.
_DRAIN_LIMIT = 4 * 1024 * 1024
_SHUTDOWN_GRACE = 5.0


class Output:
    __slots__ = ("data", "kind")

    def __init__(self, kind: OutputKind, data: bytes) -> None:
        self.kind = kind
        self.data = data


Event = Output | Exit


class Subscription:
    """One listener's view of a command: its output, then its `Exit`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.closed = False

    async def next(self) -> Event:
        return await self._queue.get()

    async def put(self, event: Event) -> None:
        if not self.closed:
            await self._queue.put(event)

    def close(self) -> None:
        """Stop listening; this also releases a publisher blocked on this listener."""
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()


class Process:
    """One running command; made by `ProcessTable.start`."""

    def __init__(self, launched: Launched, config: ProcessConfig, tag: str | None) -> None:
        self.pid = launched.popen.pid
        self.config = config
        self.tag = tag
        self._popen = launched.popen
        self._outputs = dict(launched.outputs)
        self._stdin_fd = launched.stdin_fd
        self._pty_fd = launched.pty_fd
        self._subscribers: set[Subscription] = set()
        self._waiters: set[asyncio.Future[None]] = set()
        self._exited = False
        self._input_lock = asyncio.Lock()

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def write(self, data: Input) -> None:
        fd = self._pty_fd if data.kind == "pty" else self._stdin_fd
        if fd is None:
            if data.kind == "pty":
                raise InputError("tty not assigned to process, write to its stdin instead")
            if self._pty_fd is not None:
                raise InputError("tty assigned to process, input should be written to the pty")
            raise InputError("stdin not enabled or closed")
        async with self._input_lock:
            await self._write_all(fd, data.data)

    def close_stdin(self) -> None:
        if self._pty_fd is not None:
            raise InputError("cannot close stdin for PTY process, send Ctrl+D (0x04) instead")
        if self._stdin_fd is not None:
            fd, self._stdin_fd = self._stdin_fd, None
            os.close(fd)

    def resize(self, size: PtySize) -> None:
        if self._pty_fd is None:
            raise InputError("tty not assigned to process")
        set_window_size(self._pty_fd, size)

    async def supervise(
        self, status: asyncio.Future[int], clock: ActiveClock, time_limit: float | None
    ) -> None:
        """Relay output until the command ends, then publish how it ended."""
        pumps = [asyncio.create_task(self._pump(fd, kind)) for fd, kind in self._outputs.items()]
        killer = asyncio.create_task(self._kill_after(clock, time_limit)) if time_limit else None
        helpers = [*pumps, *([killer] if killer else [])]
        try:
            wait_status = await status
            self._popen.returncode = os.waitstatus_to_exitcode(wait_status)
            self._exited = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            await asyncio.gather(*pumps)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._close_fds()
        await self._publish(exits.from_wait_status(wait_status))

    def _close_fds(self) -> None:
        for fd in {*self._outputs, self._stdin_fd, self._pty_fd}:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._outputs.clear()
        self._stdin_fd = self._pty_fd = None

    async def _kill_after(self, clock: ActiveClock, time_limit: float) -> None:
        await clock.sleep(time_limit)
        self.signal(signal.SIGKILL)

    async def _pump(self, fd: int, kind: OutputKind) -> None:
        drained = 0
        while drained <= _DRAIN_LIMIT:
            await self._readable(fd)
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                if self._exited:
                    return
                continue
            except OSError:  # EIO: every holder of the terminal's other side is gone
                return
            if not chunk:
                return
            if self._exited:
                drained += len(chunk)
            await self._publish(Output(kind, chunk))

    async def _publish(self, event: Event) -> None:
        for subscription in list(self._subscribers):
            await subscription.put(event)

    async def _readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        await self._ready(fd, loop.add_reader, loop.remove_reader)

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        await self._ready(fd, loop.add_writer, loop.remove_writer)

    async def _ready(
        self, fd: int, add: Callable[..., object], remove: Callable[[int], object]
    ) -> None:
        """Wait until `fd` is ready, or the command has exited (then return at once)."""
        if self._exited:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._waiters.add(waiter)
        add(fd, ready)
        try:
            await waiter
        finally:
            remove(fd)
            self._waiters.discard(waiter)

    async def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                if self._exited:
                    raise InputError("the process has exited") from None
                await self._writable(fd)
                continue
            except OSError as exc:
                raise InputError(f"error writing to process {self.pid}: {exc}") from None
            view = view[written:]


class ProcessTable:
    """The running commands by pid; owns their supervising tasks."""

    def __init__(self, reaper: ChildReaper, clock: ActiveClock) -> None:
        self._reaper = reaper
        self._clock = clock
        self._processes: dict[int, Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, spec: LaunchSpec, config: ProcessConfig, tag: str | None, time_limit: float | None
    ) -> Process:
        """Start a command. Subscribe to it before awaiting anything, or miss output."""
        process = Process(launch(spec), config, tag)
        status = self._reaper.watch(process.pid)
        self._processes[process.pid] = process
        task = asyncio.create_task(self._run(process, status, time_limit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return process

    async def _run(
        self, process: Process, status: asyncio.Future[int], time_limit: float | None
    ) -> None:
        try:
            await process.supervise(status, self._clock, time_limit)
        finally:
            self._processes.pop(process.pid, None)

    def find(self, selector: Selector) -> Process | None:
        if selector.pid is not None:
            return self._processes.get(selector.pid)
        for process in self._processes.values():
            if process.tag is not None and process.tag == selector.tag:
                return process
        return None

    def running(self) -> list[Process]:
        return list(self._processes.values())

    async def close(self) -> None:
        """Kill every command (with its process group) and wait for them to be reaped."""
        for process in self.running():
            process.signal(signal.SIGKILL)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
