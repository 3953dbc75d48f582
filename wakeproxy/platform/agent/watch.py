"""Directory watches, as envd serves them: inotify through `asyncinotify`.

One `Watch` is one inotify instance over a directory (and, when recursive, every directory
under it, including ones created later). Kernel events become envd's `FilesystemEvent`s the
way envd's fsnotify maps them: a file created or moved in is `CREATE`, written `WRITE`,
deleted `REMOVE`, moved away `RENAME`, its attributes changed `CHMOD`; the event's `name`
is the path relative to the watched directory (`sub/file.txt`).

A followed watch reads the kernel's queue as events arrive (an overflow of the kernel queue
is logged and the watch goes on) and keeps them until they are taken: by `next()` for a
`WatchDir` stream, or by `drain()` for `GetWatcherEvents`, which first reads what the
kernel holds, so the events of a write that was answered before the call are in its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
from dataclasses import dataclass

from asyncinotify import Event, Inotify, Mask

from wakeproxy.platform.agent import entries, jsonpb, messages
from wakeproxy.platform.agent.errors import RpcError
from wakeproxy.platform.agent.jsonpb import JsonObject

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Events a watch keeps for a client that has not taken them; older ones are dropped."""

_WATCHED = Mask.CREATE | Mask.MODIFY | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.ATTRIB
# Most significant first: a kernel event carries one of these.
_TYPES: tuple[tuple[Mask, str], ...] = (
    (Mask.CREATE | Mask.MOVED_TO, "EVENT_TYPE_CREATE"),
    (Mask.MODIFY, "EVENT_TYPE_WRITE"),
    (Mask.DELETE, "EVENT_TYPE_REMOVE"),
    (Mask.MOVED_FROM, "EVENT_TYPE_RENAME"),
    (Mask.ATTRIB, "EVENT_TYPE_CHMOD"),
)


def event_type(mask: Mask) -> str | None:
    """envd's event type for a kernel event's mask; None for one that is not reported."""
    return next((name for bits, name in _TYPES if mask & bits), None)


@dataclass(frozen=True, slots=True)
class WatchOptions:
    path: str
    recursive: bool = False
    include_entry: bool = False


def parse_options(message: JsonObject, path: str) -> WatchOptions:
    """`WatchDirRequest`/`CreateWatcherRequest`; `allow_network_mounts` needs nothing here:
    a network mount's events are whatever its filesystem gives inotify."""
    return WatchOptions(
        path=path,
        recursive=bool(jsonpb.boolean(message.get("recursive"), "recursive")),
        include_entry=bool(jsonpb.boolean(message.get("includeEntry"), "includeEntry")),
    )


class Watch:
    """One directory watched; close it (or use `with`) to free the inotify instance.

    Once `follow` has registered it with the event loop, kernel events are read as they
    come (so a directory made under a recursive watch is watched at once, before the next
    request can write into it) and kept until taken, at most `MAX_PENDING`.
    """

    def __init__(self, options: WatchOptions) -> None:
        self._options = options
        self._root = options.path.rstrip("/") or "/"
        _check_directory(self._root)
        try:
            self._inotify = Inotify(sync_timeout=0)
        except OSError as exc:  # EMFILE: fs.inotify.max_user_instances reached
            raise RpcError("resource_exhausted", f"cannot watch {self._root}: {exc}") from None
        self._ready: list[JsonObject] = []
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._add_tree(self._root, initial=True)
        except BaseException:
            self._inotify.close()
            raise

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read events as the kernel queues them, on `loop`."""
        self._loop = loop
        self._arrived = asyncio.Event()
        loop.add_reader(self._inotify.fd, self._pump)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)
            self._loop = None
        self._inotify.close()

    async def next(self) -> JsonObject:
        """The next reported event as a `FilesystemEvent`, waiting for it (needs `follow`)."""
        assert self._arrived is not None, "follow() first"
        while not self._ready:
            self._arrived.clear()
            self._pump()
            if not self._ready:
                await self._arrived.wait()
        return self._ready.pop(0)

    def drain(self) -> list[JsonObject]:
        """Every event that happened until now, without waiting."""
        self._pump()
        found, self._ready = self._ready, []
        return found

    def _pump(self) -> None:
        while (event := self._inotify.sync_get()) is not None:
            self._ready.extend(self._report(event))
        if len(self._ready) > MAX_PENDING:
            dropped = len(self._ready) - MAX_PENDING
            del self._ready[:dropped]
            log.warning("%d events under %s were dropped: nobody took them", dropped, self._root)
        if self._ready and self._arrived is not None:
            self._arrived.set()

    def _report(self, event: Event) -> list[JsonObject]:
        if event.mask & Mask.Q_OVERFLOW:
            log.warning("inotify queue overflowed under %s: events were lost", self._root)
            return []
        kind = event_type(event.mask)
        path = None if event.path is None else str(event.path)
        if kind is None or path is None:
            return []
        found = [self._event(path, kind)]
        if (
            self._options.recursive
            and event.mask & Mask.ISDIR
            and event.mask & (Mask.CREATE | Mask.MOVED_TO)
        ):
            # What was made in the new directory before its watch existed is reported as
            # created, so a `mkdir -p a/b; echo > a/b/f` is seen whole.
            found.extend(self._event(made, "EVENT_TYPE_CREATE") for made in self._add_tree(path))
        return found

    def _event(self, path: str, kind: str) -> JsonObject:
        report: JsonObject = {"name": posixpath.relpath(path, self._root), "type": kind}
        if self._options.include_entry and kind not in ("EVENT_TYPE_REMOVE", "EVENT_TYPE_RENAME"):
            # Best-effort, as in envd: the entry may be gone again already.
            with contextlib.suppress(OSError):
                report["entry"] = messages.entry_info(entries.entry(path))
        return report

    def _add_tree(self, top: str, *, initial: bool = False) -> list[str]:
        """Watch `top` (and, when recursive, the directories under it); the paths found
        under it, which a later watch of a new directory has missed the creation of."""
        self._add(top, initial=initial)
        found: list[str] = []
        if not self._options.recursive:
            return found
        for directory, subdirectories, files in os.walk(top):
            for name in subdirectories:
                self._add(posixpath.join(directory, name), initial=False)
            found.extend(posixpath.join(directory, name) for name in (*subdirectories, *files))
        return found

    def _add(self, directory: str, *, initial: bool) -> None:
        try:
            self._inotify.add_watch(directory, _WATCHED | Mask.ONLYDIR | Mask.DONT_FOLLOW)
        except OSError as exc:
            if initial:
                raise RpcError("internal", f"error watching {directory}: {exc}") from None
            # A directory that went away or was replaced before it could be watched.
            log.debug("not watching %s: %s", directory, exc)


def _check_directory(path: str) -> None:
    if os.path.isdir(path):
        return
    if not os.path.lexists(path):
        raise RpcError("not_found", f"path {path} not found")
    raise RpcError("invalid_argument", f"path {path} not a directory")
