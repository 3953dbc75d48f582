"""A small typed client of the Docker Engine API over aiohttp: the calls the docker
backend makes, and nothing else.

    containers(label)    GET  /containers/json?all=1&filters={"label": [...]}
    inspect(id)          GET  /containers/{id}/json
    pause / unpause      POST /containers/{id}/pause | unpause
    start / stop / kill  POST /containers/{id}/start | stop?t=N | kill
    ping                 GET  /_ping
    events(filters)      GET  /events?filters=...   (a stream that never ends by itself)

Paths carry no API version, so the engine answers in its own current one: engines from
Docker 20.10 to today accept them (a pinned old version is refused by newer engines).
The engine is reached on a unix socket (`unix:///var/run/docker.sock`) or over TCP
(`tcp://host:2376`, `https://…`), with TLS when a CA or a client certificate is given.

aiohttp errors and timeouts become `EngineDown` here, at the edge; an answer the engine
gives with an error status is `EngineRefused` with that status and its message.
"""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp

DEFAULT_HOST: Final = "unix:///var/run/docker.sock"
# An event line is a few hundred bytes plus the container's labels; anything near this
# is not an event (aiohttp raises ValueError past it).
_EVENT_LINE_MAX: Final = 1 << 20


class EngineError(Exception):
    """The engine could not be asked, or refused."""


class EngineDown(EngineError):
    """No answer: the engine is unreachable, or did not answer in time."""


class EngineRefused(EngineError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class EngineAddress:
    """Where the engine listens, parsed from a DOCKER_HOST-style URL."""

    base: str  # what request paths are appended to
    unix_path: str | None
    host: str  # where the engine's published ports are: its host, or loopback for a socket
    tls: bool

    @classmethod
    def parse(cls, url: str, *, tls: bool = False) -> EngineAddress:
        """`unix:///path`, `tcp://host:port`, `http://…` or `https://…` (ValueError if not)."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"{url!r} names no socket: write unix:///var/run/docker.sock")
            return cls("http://docker", parts.path, "127.0.0.1", False)
        if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not unix:///path, tcp://host:port or https://host:port")
        secure = tls or parts.scheme == "https"
        port = parts.port or (2376 if secure else 2375)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(f"{'https' if secure else 'http'}://{shown}:{port}", None, host, secure)


def tls_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """Verify the engine against `ca` (the system's CAs when empty), and present the
    client certificate `cert`/`key` when given (docker's `--tlsverify` setup)."""
    context = ssl.create_default_context(cafile=ca or None)
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


class Engine:
    """Use as `async with Engine(address) as engine:` (it owns one ClientSession)."""

    def __init__(
        self,
        address: EngineAddress,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.address = address
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Engine:
        connector: aiohttp.BaseConnector
        if self.address.unix_path is not None:
            connector = aiohttp.UnixConnector(self.address.unix_path)
        else:
            secure: ssl.SSLContext | bool = self.address.tls
            if secure and self._ssl is not None:
                secure = self._ssl
            connector = aiohttp.TCPConnector(ssl=secure)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    # -- calls ------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("GET", "/_ping")

    async def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) carrying `label` (`key` or `key=value`)."""
        filters = json.dumps({"label": [label]})
        found = await self._call("GET", "/containers/json", params={"all": "1", "filters": filters})
        return list(found) if isinstance(found, list) else []

    async def inspect(self, container_id: str) -> dict[str, Any]:
        found = await self._call("GET", f"/containers/{_id(container_id)}/json")
        if not isinstance(found, dict):
            raise EngineDown(f"the engine's answer about container {container_id} is not an object")
        return found

    async def act(
        self,
        container_id: str,
        action: str,
        *,
        wait: float | None = None,
        limit: float | None = None,
    ) -> None:
        """POST `/containers/{id}/{action}` (pause, unpause, start, stop, kill), within
        `limit` seconds (default: the client's timeout). `stop` waits up to `wait` seconds
        for the container to exit before the engine kills it."""
        params = None
        if wait is not None:
            params = {"t": str(math.ceil(wait))}
            limit = wait + (limit or self._limit())
        bound = None if limit is None else aiohttp.ClientTimeout(total=limit)
        await self._call("POST", f"/containers/{_id(container_id)}/{action}", params, bound)

    @asynccontextmanager
    async def events(
        self, filters: Mapping[str, list[str]], *, silence: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The event stream, open once the engine has answered (from then on no event is
        missed). Iterating ends with `EngineDown` when the stream breaks or says nothing
        for `silence` seconds (the engine sends nothing while nothing happens, so the
        caller reconnects: that also finds a dead TCP connection)."""
        session = self._started()
        limits = aiohttp.ClientTimeout(total=None, sock_connect=self._limit(), sock_read=silence)
        params = {"filters": json.dumps(dict(filters))}
        try:
            async with session.get(self._url("/events"), params=params, timeout=limits) as reply:
                if reply.status != 200:
                    raise EngineRefused(reply.status, _message(await reply.read()))
                yield _lines(reply)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineDown(f"the engine's event stream broke: {exc!r}") from exc

    # -- HTTP -------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        session = self._started()
        try:
            async with session.request(
                method, self._url(path), params=params, timeout=limit or self._timeout
            ) as reply:
                raw = await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineDown(f"the Docker engine did not answer: {exc!r}") from exc
        if status >= 400:
            raise EngineRefused(status, _message(raw))
        if not raw.strip() or status == 204 or status == 304:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _started(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise EngineDown("the Docker engine client is not started")
        return self._session

    def _url(self, path: str) -> str:
        return self.address.base + path

    def _limit(self) -> float:
        return self._timeout.total or 5.0


async def _lines(reply: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    try:
        while line := await reply.content.readuntil(b"\n", max_size=_EVENT_LINE_MAX):
            if not line.strip():
                continue
            event = json.loads(line)
            if isinstance(event, dict):
                yield event
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise EngineDown(f"the engine's event stream broke: {exc!r}") from exc
    raise EngineDown("the engine closed its event stream")


def _message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip() or "no message"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return "no message"


def _id(container_id: str) -> str:
    return quote(container_id, safe="")
