"""`filesystem.Filesystem` watches: `WatchDir` (a server stream) and the polled
`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`, which the synchronous Python SDK
uses. Both are `watch.Watch`es; a polled one lives in a table until removed or until the
agent stops, and the table is bounded so a client that never removes its watchers cannot
exhaust the sandbox's inotify instances.
"""

from __future__ import annotations

import asyncio
import secrets

from wakeproxy.platform.agent import connect, jsonpb, messages, paths
from wakeproxy.platform.agent.errors import PathError, RpcError
from wakeproxy.platform.agent.jsonpb import JsonObject
from wakeproxy.platform.agent.process_service import DEFAULT_KEEPALIVE, KEEPALIVE_HEADER, user_of
from wakeproxy.platform.agent.rpc import Call, RpcRouter, StreamSender
from wakeproxy.platform.agent.watch import Watch, parse_options

MAX_WATCHERS = 128


class WatchService:
    def __init__(self, users: paths.Users, workdir: str | None = None) -> None:
        self._users = users
        self._workdir = workdir
        self._watchers: dict[str, Watch] = {}

    def register(self, router: RpcRouter) -> None:
        router.server_stream("filesystem.Filesystem/WatchDir", self.watch_dir)
        router.unary("filesystem.Filesystem/CreateWatcher", self.create_watcher)
        router.unary("filesystem.Filesystem/GetWatcherEvents", self.get_watcher_events)
        router.unary("filesystem.Filesystem/RemoveWatcher", self.remove_watcher)

    def close(self) -> None:
        for watch in self._watchers.values():
            watch.close()
        self._watchers.clear()

    async def watch_dir(self, call: Call, message: JsonObject, sender: StreamSender) -> None:
        options = parse_options(message, self._path(call, message))
        with await asyncio.to_thread(Watch, options) as watch:
            watch.follow(asyncio.get_running_loop())
            await sender.send({"start": {}})
            interval = connect.parse_keepalive(
                call.headers.get(KEEPALIVE_HEADER), DEFAULT_KEEPALIVE
            )
            while True:
                try:
                    async with asyncio.timeout(interval):
                        event = await watch.next()
                except TimeoutError:
                    await sender.send({"keepalive": {}})
                    continue
                await sender.send({"filesystem": event})

    async def create_watcher(self, call: Call, message: JsonObject) -> JsonObject:
        if len(self._watchers) >= MAX_WATCHERS:
            raise RpcError(
                "resource_exhausted",
                f"{MAX_WATCHERS} watchers are open; remove one (RemoveWatcher) first",
            )
        options = parse_options(message, self._path(call, message))
        watch = await asyncio.to_thread(Watch, options)
        watch.follow(asyncio.get_running_loop())
        watcher_id = secrets.token_hex(8)
        self._watchers[watcher_id] = watch
        return {"watcherId": watcher_id}

    async def get_watcher_events(self, call: Call, message: JsonObject) -> JsonObject:
        return {"events": self._find(message).drain()}

    async def remove_watcher(self, call: Call, message: JsonObject) -> JsonObject:
        self._find(message)
        self._watchers.pop(_watcher_id(message)).close()
        return {}

    def _find(self, message: JsonObject) -> Watch:
        watcher_id = _watcher_id(message)
        watch = self._watchers.get(watcher_id)
        if watch is None:
            raise RpcError("not_found", f"watcher with id {watcher_id} not found")
        return watch

    def _path(self, call: Call, message: JsonObject) -> str:
        user = user_of(call, self._users)
        try:
            return paths.resolve(messages.parse_path(message), user, self._workdir)
        except PathError as exc:
            raise RpcError("invalid_argument", str(exc)) from None


def _watcher_id(message: JsonObject) -> str:
    return jsonpb.string(message.get("watcherId"), "watcherId") or ""
