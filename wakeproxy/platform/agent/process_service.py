"""`process.Process`: start commands, attach to them, feed them, signal them.

`Start` and `Connect` are server streams: a start event with the pid, data events with
stdout/stderr (or pty) bytes, then an end event with the exit code. When nothing has
been sent for the client's `Keepalive-Ping-Interval` seconds a keepalive event goes
out, so proxies on the way do not drop a quiet stream. A command outlives its stream:
the SDKs' `background=True` reads the stream in a task and may drop it, and the
command runs on until it ends or its `timeout` (`Connect-Timeout-Ms`) passes.

A command's environment is the agent's own (the platform passes the sandbox's
`envs` to the agent), then `HOME`, `USER` and `LOGNAME` of the user it runs as, then
the request's `envs`; its working directory is the request's `cwd`, resolved like any
path, defaulting to the user's home.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Mapping

from wakeproxy.platform.agent import connect, messages, paths
from wakeproxy.platform.agent.errors import InputError, PathError, RpcError, SpawnError, UnknownUser
from wakeproxy.platform.agent.jsonpb import JsonObject
from wakeproxy.platform.agent.messages import Exit, StartRequest
from wakeproxy.platform.agent.process import Process, ProcessTable, Subscription
from wakeproxy.platform.agent.rpc import Call, RpcRouter, StreamSender
from wakeproxy.platform.agent.spawn import LaunchSpec

KEEPALIVE_HEADER = "Keepalive-Ping-Interval"
DEFAULT_KEEPALIVE = 90.0
_SIGNALS = {signal.SIGKILL.value: signal.SIGKILL, signal.SIGTERM.value: signal.SIGTERM}


def user_of(call: Call, users: paths.Users) -> paths.User:
    try:
        return users.from_basic_auth(call.headers.get("Authorization"))
    except UnknownUser as exc:
        raise RpcError("unauthenticated", f"invalid username: '{exc.name}'") from None


class ProcessService:
    def __init__(
        self,
        table: ProcessTable,
        users: paths.Users,
        base_env: Mapping[str, str],
        workdir: str | None = None,
    ) -> None:
        self._table = table
        self._users = users
        self._base_env = dict(base_env)
        self._workdir = workdir

    def register(self, router: RpcRouter) -> None:
        router.server_stream("process.Process/Start", self.start)
        router.server_stream("process.Process/Connect", self.connect)
        router.unary("process.Process/List", self.list)
        router.unary("process.Process/SendInput", self.send_input)
        router.unary("process.Process/SendSignal", self.send_signal)
        router.unary("process.Process/CloseStdin", self.close_stdin)
        router.unary("process.Process/Update", self.update)
        router.client_stream("process.Process/StreamInput", self.stream_input)

    async def start(self, call: Call, message: JsonObject, sender: StreamSender) -> None:
        request = messages.parse_start(message)
        spec = self._launch_spec(request, user_of(call, self._users))
        try:
            process = self._table.start(spec, request.process, request.tag, call.timeout)
        except SpawnError as exc:
            raise RpcError("invalid_argument", str(exc)) from None
        await self._follow(call, process, sender)

    async def connect(self, call: Call, message: JsonObject, sender: StreamSender) -> None:
        process = self._find(message)
        await self._follow(call, process, sender)

    async def list(self, call: Call, message: JsonObject) -> JsonObject:
        return {
            "processes": [
                messages.process_info(p.pid, p.config, p.tag) for p in self._table.running()
            ]
        }

    async def send_input(self, call: Call, message: JsonObject) -> JsonObject:
        process = self._find(message)
        await _write(process, messages.parse_input(message.get("input")))
        return {}

    async def send_signal(self, call: Call, message: JsonObject) -> JsonObject:
        process = self._find(message)
        number = messages.parse_signal(message)
        signum = _SIGNALS.get(number)
        if signum is None:
            raise RpcError("unimplemented", f"invalid signal: {number}")
        process.signal(signum)
        return {}

    async def close_stdin(self, call: Call, message: JsonObject) -> JsonObject:
        process = self._find(message)
        try:
            process.close_stdin()
        except InputError as exc:
            raise RpcError("unknown", f"error closing stdin: {exc}") from None
        return {}

    async def update(self, call: Call, message: JsonObject) -> JsonObject:
        process = self._find(message)
        size = messages.parse_pty(message.get("pty"))
        if size is not None:
            try:
                process.resize(size)
            except InputError as exc:
                raise RpcError("internal", f"error resizing tty: {exc}") from None
        return {}

    async def stream_input(self, call: Call, requests: AsyncIterator[JsonObject]) -> JsonObject:
        process: Process | None = None
        async for request in requests:
            if "start" in request:
                start = request["start"]
                process = self._find(start if isinstance(start, dict) else {})
            elif "data" in request:
                data = request["data"]
                if process is None:
                    raise RpcError("failed_precondition", "input before a start event")
                body = data if isinstance(data, dict) else {}
                await _write(process, messages.parse_input(body.get("input")))
            elif "keepalive" not in request:
                raise RpcError("unimplemented", "invalid event type")
        return {}

    def _find(self, message: Mapping[str, object]) -> Process:
        selector = messages.parse_selector(message.get("process"))
        process = self._table.find(selector)
        if process is None:
            what = f"pid {selector.pid}" if selector.pid is not None else f"tag {selector.tag}"
            raise RpcError("not_found", f"process with {what} not found")
        return process

    def _launch_spec(self, request: StartRequest, user: paths.User) -> LaunchSpec:
        config = request.process
        try:
            cwd = paths.resolve(config.cwd or "", user, self._workdir)
        except PathError as exc:
            raise RpcError("invalid_argument", str(exc)) from None
        if not os.path.exists(cwd):
            raise RpcError("invalid_argument", f"cwd '{cwd}' does not exist")
        env = {
            **self._base_env,
            "HOME": user.home,
            "USER": user.name,
            "LOGNAME": user.name,
            **config.envs,
        }
        return LaunchSpec(
            argv=[config.cmd, *config.args],
            cwd=cwd,
            env=env,
            stdin=request.stdin is not False,
            pty=request.pty,
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
        )

    async def _follow(self, call: Call, process: Process, sender: StreamSender) -> None:
        # Subscribe before the first await, so no output slips past unseen.
        subscription = process.subscribe()
        try:
            await sender.send(messages.start_event(process.pid))
            interval = connect.parse_keepalive(
                call.headers.get(KEEPALIVE_HEADER), DEFAULT_KEEPALIVE
            )
            await _relay(subscription, sender, interval)
        finally:
            process.unsubscribe(subscription)


async def _relay(subscription: Subscription, sender: StreamSender, keepalive: float) -> None:
    while True:
        try:
            async with asyncio.timeout(keepalive):
                event = await subscription.next()
        except TimeoutError:
            await sender.send(messages.keepalive_event())
            continue
        if isinstance(event, Exit):
            await sender.send(messages.end_event(event))
            return
        await sender.send(messages.data_event(event.kind, event.data))


async def _write(process: Process, data: messages.Input) -> None:
    try:
        await process.write(data)
    except InputError as exc:
        target = "tty" if data.kind == "pty" else "stdin"
        raise RpcError("internal", f"error writing to {target}: {exc}") from None
