"""`filesystem.Filesystem`: `Stat`, `ListDir`, `MakeDir`, `Move`, `Remove`.

Paths resolve against the calling user (`paths.resolve`); errors carry envd's codes,
which the SDKs turn into exceptions: `not_found` (FileNotFoundException, and `False`
from `exists`), `already_exists` (`False` from `make_dir`), `invalid_argument`.
Directory walks, moves and removals run in a worker thread, because a large tree
would otherwise stall every other call for as long as they take.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
import shutil

from wakeproxy.platform.agent import entries, identity, messages, paths
from wakeproxy.platform.agent.errors import PathError, RpcError
from wakeproxy.platform.agent.jsonpb import JsonObject
from wakeproxy.platform.agent.process_service import user_of
from wakeproxy.platform.agent.rpc import Call, RpcRouter


class FilesystemService:
    def __init__(self, users: paths.Users, workdir: str | None = None) -> None:
        self._users = users
        self._workdir = workdir

    def register(self, router: RpcRouter) -> None:
        router.unary("filesystem.Filesystem/Stat", self.stat)
        router.unary("filesystem.Filesystem/ListDir", self.list_dir)
        router.unary("filesystem.Filesystem/MakeDir", self.make_dir)
        router.unary("filesystem.Filesystem/Move", self.move)
        router.unary("filesystem.Filesystem/Remove", self.remove)

    def _path(self, call: Call, message: JsonObject, name: str = "path") -> str:
        user = user_of(call, self._users)
        try:
            return paths.resolve(messages.parse_path(message, name), user, self._workdir)
        except PathError as exc:
            raise RpcError("invalid_argument", str(exc)) from None

    async def stat(self, call: Call, message: JsonObject) -> JsonObject:
        path = self._path(call, message)
        return {"entry": messages.entry_info(_entry(path))}

    async def list_dir(self, call: Call, message: JsonObject) -> JsonObject:
        path = self._path(call, message)
        depth = messages.parse_depth(message) or 1
        found = await identity.run_as(user_of(call, self._users), _walk, path, depth)
        return {"entries": [messages.entry_info(entry) for entry in found]}

    async def make_dir(self, call: Call, message: JsonObject) -> JsonObject:
        path = self._path(call, message)
        await identity.run_as(user_of(call, self._users), _make_dir, path)
        name = posixpath.basename(path.rstrip("/")) or "/"
        entry = messages.Entry(name=name, type="FILE_TYPE_DIRECTORY", path=path)
        return {"entry": messages.entry_info(entry)}

    async def move(self, call: Call, message: JsonObject) -> JsonObject:
        source = self._path(call, message, "source")
        destination = self._path(call, message, "destination")
        await identity.run_as(user_of(call, self._users), _move, source, destination)
        return {"entry": messages.entry_info(_entry(destination))}

    async def remove(self, call: Call, message: JsonObject) -> JsonObject:
        path = self._path(call, message)
        await identity.run_as(user_of(call, self._users), _remove, path)
        return {}


def _entry(path: str) -> messages.Entry:
    try:
        return entries.entry(path)
    except FileNotFoundError as exc:
        raise RpcError("not_found", f"file not found: {exc}") from None
    except OSError as exc:
        raise RpcError("internal", f"error getting file info: {exc}") from None


def _walk(path: str, depth: int) -> list[messages.Entry]:
    """envd's ListDir: entries under `path` down to `depth` levels, symlinks not followed."""
    try:
        resolved = os.path.realpath(path, strict=True)
    except FileNotFoundError as exc:
        raise RpcError("not_found", f"path not found: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RpcError("failed_precondition", f"cyclic symlink at {path!r}") from None
        raise RpcError("internal", f"error resolving symlink: {exc}") from None
    if not os.path.isdir(resolved):
        raise RpcError("invalid_argument", f"path is not a directory: {path}")
    found: list[messages.Entry] = []
    try:
        _collect(resolved, path, depth, found)
    except OSError as exc:
        raise RpcError("internal", f"error reading directory {path}: {exc}") from None
    return found


def _collect(directory: str, shown_as: str, depth: int, found: list[messages.Entry]) -> None:
    with os.scandir(directory) as listing:
        children = sorted(listing, key=lambda child: child.name)
    for child in children:
        shown = posixpath.join(shown_as, child.name)
        try:
            found.append(dataclasses.replace(entries.entry(child.path), path=shown))
        except FileNotFoundError:
            continue  # removed while we were looking
        if depth > 1 and child.is_dir(follow_symlinks=False):
            _collect(child.path, shown, depth - 1, found)


def _make_dir(path: str) -> None:
    if os.path.isdir(path):
        raise RpcError("already_exists", f"directory already exists: {path}")
    if os.path.lexists(path):
        raise RpcError("invalid_argument", f"path already exists but it is not a directory: {path}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RpcError("internal", f"error creating directory: {exc}") from None


def _move(source: str, destination: str) -> None:
    try:
        os.makedirs(posixpath.dirname(destination) or "/", exist_ok=True)
        os.rename(source, destination)
    except FileNotFoundError as exc:
        raise RpcError("not_found", f"source file not found: {exc}") from None
    except OSError as exc:
        raise RpcError("internal", f"error renaming: {exc}") from None


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return  # envd removes with RemoveAll, to which a missing path is success
    except OSError as exc:
        raise RpcError("internal", f"error removing file or directory: {exc}") from None
