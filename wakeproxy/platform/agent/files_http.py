"""`GET /files` (download) and `POST /files` (upload), as envd serves them.

Query: `path` (relative paths are under the user's home) and `username`. Uploads are
`multipart/form-data` with `file` parts (each part's filename is its path when the
query has none; the SDKs send several files that way, absolute paths included, so the
filename is read as sent, where aiohttp's own parser would drop a leading `/`) or
`application/octet-stream` with the path in the query; a gzip `Content-Encoding` is
undone by the server. `X-Metadata-<key>` headers set the written files' metadata
(`metadata.py`). A download is gzip-compressed when the client asks for it. Bodies
stream between the socket and the disk in chunks; no file is held in memory.

Errors are envd's: `{"code": <status>, "message": "..."}` with 400 for a bad path or
a directory where a file belongs, 401 for an unknown user or a missing/invalid token
or signature, 404 for a missing file, 507 when the disk is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mimetypes
import os
import posixpath
import stat
import time
import zlib
from collections.abc import AsyncIterator, Callable
from email.message import Message
from email.utils import formatdate
from typing import BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_DISPOSITION

from wakeproxy.platform.agent import auth, identity, metadata, paths
from wakeproxy.platform.agent.errors import FilesError, PathError, UnknownUser

CHUNK = 256 * 1024
_NO_SPACE = "not enough disk space available"


def _error_response(error: FilesError) -> web.Response:
    return web.json_response({"code": error.status, "message": error.message}, status=error.status)


class FilesEndpoint:
    def __init__(
        self,
        users: paths.Users,
        token: str | None,
        workdir: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._users = users
        self._token = token
        self._workdir = workdir
        self._now = now

    def register(self, app: web.Application) -> None:
        app.router.add_get("/files", self.download, allow_head=False)
        app.router.add_post("/files", self.upload)

    async def download(self, request: web.Request) -> web.StreamResponse:
        try:
            path = self._target(request, "read")
            size = _readable_file(path)
            user = self._user(request)
        except FilesError as error:
            return _error_response(error)
        return await _send_file(request, path, size, user)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            self._authorize(request, "write")
            user = self._user(request)
            given = metadata.from_headers(request.headers.items())
            media = request.content_type
            if media == "application/octet-stream":
                written = [await self._upload_raw(request, user, given)]
            elif media.startswith("multipart/"):
                written = await self._upload_multipart(request, user, given)
            else:
                raise FilesError(
                    400,
                    f"unsupported content type: {request.headers.get('Content-Type', '')}, "
                    "expected multipart/form-data or application/octet-stream",
                )
        except FilesError as error:
            return _error_response(error)
        return web.json_response([_written(path, given) for path in written])

    def _target(self, request: web.Request, operation: str) -> str:
        self._authorize(request, operation)
        return self._resolve(request.query.get("path", ""), self._user(request))

    def _authorize(self, request: web.Request, operation: str) -> None:
        if self._token is None:
            return
        grant = auth.FileGrant(
            path=request.query.get("path", ""),
            operation=operation,
            username=request.query.get("username"),
            signature=request.query.get("signature"),
            expiration=request.query.get("signature_expiration"),
        )
        reason = auth.check_files_access(
            self._token, request.headers.get(auth.TOKEN_HEADER), grant, self._now()
        )
        if reason is not None:
            raise FilesError(401, reason)

    def _user(self, request: web.Request) -> paths.User:
        try:
            return self._users.lookup(request.query.get("username"))
        except UnknownUser as exc:
            raise FilesError(401, f"error looking up user '{exc.name}': unknown user") from None

    def _resolve(self, path: str, user: paths.User) -> str:
        try:
            return paths.resolve(path, user, self._workdir)
        except PathError as exc:
            raise FilesError(400, f"error resolving path '{path}': {exc}") from None

    async def _upload_raw(
        self, request: web.Request, user: paths.User, given: dict[str, str]
    ) -> str:
        raw = request.query.get("path")
        if raw is None:
            raise FilesError(400, "path query parameter is required for raw body upload")
        path = self._resolve(raw, user)
        await _write_file(path, request.content.iter_chunked(CHUNK), user, given)
        return path

    async def _upload_multipart(
        self, request: web.Request, user: paths.User, given: dict[str, str]
    ) -> list[str]:
        raw = request.query.get("path")
        reader = await request.multipart()
        written: list[str] = []
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name != "file":
                await part.release()
                continue
            name = raw if raw is not None else _part_path(part)
            if name is None:
                raise FilesError(400, "error getting multipart file name: the part has none")
            path = self._resolve(name, user)
            if path in written:
                raise FilesError(
                    400,
                    f"you cannot upload multiple files to the same path '{path}' in one upload "
                    "request, only the first specified file was uploaded",
                )
            await _write_file(path, _part_chunks(part), user, given)
            written.append(path)
        return written


def _part_path(part: BodyPartReader) -> str | None:
    """The part's `filename` exactly as sent, as envd reads it (`/home/user/a.txt` stays
    absolute); quoted strings and RFC 2231 `filename*` are decoded."""
    disposition = part.headers.get(CONTENT_DISPOSITION)
    if disposition is None:
        return None
    header = Message()
    header[CONTENT_DISPOSITION] = disposition
    return header.get_filename()


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


def _readable_file(path: str) -> int | None:
    """The size to announce, or None when only reading to the end tells it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FilesError(404, f"path '{path}' does not exist") from None
    except OSError as exc:
        raise FilesError(500, f"error checking if path exists '{path}': {exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FilesError(400, f"path '{path}' is a directory")
    # /proc and /sys files report size 0 (or a page) whatever they hold, and devices and
    # pipes have none: those are read to their end and sent chunked.
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    return info.st_size


def _wants_gzip(request: web.Request) -> bool:
    if any(h in request.headers for h in ("Range", "If-Modified-Since", "If-None-Match")):
        return False
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _open_for_reading(path: str) -> BinaryIO:
    return open(path, "rb")


async def _send_file(
    request: web.Request, path: str, size: int | None, user: paths.User
) -> web.StreamResponse:
    try:
        file = await identity.run_as(user, _open_for_reading, path)  # as the user may
    except OSError as exc:
        return _error_response(FilesError(500, f"error opening file '{path}': {exc}"))
    with file:
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type,
                "Last-Modified": formatdate(os.fstat(file.fileno()).st_mtime, usegmt=True),
                "Vary": "Accept-Encoding",
            }
        )
        gzip = _wants_gzip(request)
        if gzip:
            response.headers["Content-Encoding"] = "gzip"
        elif size is not None:
            response.content_length = size
        await response.prepare(request)
        # Level 1: these bytes mostly cross loopback, so speed matters more than size.
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
        remaining = size
        while remaining is None or remaining > 0:
            wanted = CHUNK if remaining is None else min(CHUNK, remaining)
            count, chunk = await asyncio.to_thread(_read, file, wanted, compressor)
            if count == 0:
                break  # the end, or the file shrank while we sent it (a short body)
            if remaining is not None:
                remaining -= count
            if chunk:
                await response.write(chunk)
        if compressor is not None:
            await response.write(compressor.flush())
        await response.write_eof()
    return response


def _read(file: BinaryIO, size: int, compressor: zlib._Compress | None) -> tuple[int, bytes]:
    """Up to `size` bytes of `file` (compressed, with a compressor): (bytes read, output)."""
    data = file.read(size)
    return len(data), compressor.compress(data) if compressor is not None and data else data


def _written(path: str, given: dict[str, str]) -> dict[str, object]:
    """What an upload reports of a file it wrote (with its metadata, as envd 0.6.2+)."""
    info: dict[str, object] = {"path": path, "name": posixpath.basename(path), "type": "file"}
    if given:
        info["metadata"] = given
    return info


async def _write_file(
    path: str, chunks: AsyncIterator[bytes], user: paths.User, given: dict[str, str]
) -> None:
    """Create or truncate `path` (and its missing parent directories) as `user`, stream
    into it, and make `given` its whole metadata. A write that fails (a full disk: 507)
    removes what it wrote: no partial file stays."""
    file = await identity.run_as(user, _create, path, user)
    try:
        try:
            metadata.replace(path, given)
            async for chunk in chunks:
                file.write(chunk)
        finally:
            file.close()  # flushes: a full disk may show only here
    except OSError as exc:
        _remove_partial(path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FilesError(507, _NO_SPACE) from None
        raise FilesError(500, f"error writing file: {exc}") from None
    except BaseException:  # bad metadata, or the request was cancelled mid-body
        _remove_partial(path)
        raise


def _remove_partial(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _create(path: str, user: paths.User) -> BinaryIO:
    _ensure_parents(path)
    if os.path.isdir(path):
        raise FilesError(400, f"path is a directory: {path}")
    try:
        file = open(path, "wb")  # noqa: SIM115  (the caller closes it)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FilesError(507, f"not enough inodes available: {exc}") from None
        raise FilesError(500, f"error opening file: {exc}") from None
    _own(path, user)
    return file


def _own(path: str, user: paths.User) -> None:
    """Give the file to `user` as envd does once it is open. Created as `user` it is theirs
    already, but the change is what a watch sees between the create and the first write
    (envd's create, chmod, write), and a file someone else owns stays theirs."""
    if user.uid is None or user.gid is None:
        return
    with contextlib.suppress(PermissionError):
        os.chown(path, user.uid, user.gid)


def _ensure_parents(path: str) -> None:
    parent = posixpath.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError:
        raise FilesError(500, f"error ensuring directories: path is a file: {parent}") from None
    except NotADirectoryError as exc:
        raise FilesError(500, f"error ensuring directories: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FilesError(507, _NO_SPACE) from None
        raise FilesError(500, f"error ensuring directories: {exc}") from None
