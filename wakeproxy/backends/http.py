"""The `http` backend: a remote control plane speaking E2B's REST shape plus a small
extension (docs/backend-protocol.md), e.g. `wakeproxy serve-api`.

    get       GET  /sandboxes/{id}                  E2B's SandboxDetail + "wakeproxy" object
    resume    POST /sandboxes/{id}/connect          {"autoResume": true}; then a GET
    upstream  GET  /sandboxes/{id}/ports/{port}     {"host", "port"} | {"unixSocket"} |
                                                    {"socketBroker"}
    touch     POST /wakeproxy/activity              {"activity": {id: epoch seconds}}
    watch     GET  /wakeproxy/events                one JSON line per state change, followed
                                                    in the background (reconnecting); a
                                                    control plane without it is only asked

`aiohttp` errors, timeouts and unexpected answers become `Unavailable` here, at the edge;
a 404 is `NotFound` (or None from `get`), a refused auto-resume `NotAllowed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import aiohttp

from wakeproxy.backends.base import (
    AGENT_PORT,
    Lifecycle,
    SandboxInfo,
    SandboxState,
    SocketOpener,
    StateListener,
    Upstream,
)
from wakeproxy.discovery import Discovered
from wakeproxy.errors import (
    BackendError,
    Conflict,
    LimitExceeded,
    NotAllowed,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# The event stream sends an empty line every 10 s when idle; three missed ones mean it died.
_EVENTS_SILENCE: Final = 30.0
_RECONNECT_FIRST: Final = 0.1
_RECONNECT_MOST: Final = 5.0
_STATES: Final = {state.value: state for state in SandboxState}
_BROKER_TIMEOUT: Final = 5.0
_LIST_PAGE = 100  # sandboxes per page of the list, E2B's most
_MAX_LIST_PAGES: Final = 100  # a bound on one discovery refresh


class HttpBackend:
    """Use as `async with HttpBackend(url) as backend:` (it owns one ClientSession)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        request_timeout: float = 5.0,
        resume_timeout: float = 60.0,
    ) -> None:
        self._base = url.rstrip("/")
        self._headers = {"X-API-KEY": api_key} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._resume_timeout = aiohttp.ClientTimeout(total=resume_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._listeners: list[StateListener] = []
        self._events: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HttpBackend:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._events is not None:
            self._events.cancel()
            await asyncio.gather(self._events, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- the Backend contract ---------------------------------------------------------------

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        status, body = await self._call("GET", f"/sandboxes/{_id(sandbox_id)}")
        if status == 404:
            return None
        _raise_for(status, body, sandbox_id, "looking up")
        return _parsed(info_from_detail, sandbox_id, body)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        status, body = await self._call(
            "POST",
            f"/sandboxes/{_id(sandbox_id)}/connect",
            json={"autoResume": True},
            limit=self._resume_timeout,
        )
        if status == 409:
            refused = _message(body, "the control plane refused to resume it")
            raise NotAllowed(refused, sandbox_id=sandbox_id)
        _raise_for(status, body, sandbox_id, "resuming")
        info = await self.get(sandbox_id)
        if info is None:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        return info

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        sandbox_id = info.sandbox_id
        status, body = await self._call("GET", f"/sandboxes/{_id(sandbox_id)}/ports/{port}")
        if status == 409:
            raise Conflict(_message(body, "the sandbox is not running"), sandbox_id=sandbox_id)
        _raise_for(status, body, sandbox_id, "locating a port of")
        return _parsed(lambda sid, data: upstream_from_json(sid, port, data), sandbox_id, body)

    async def running(self) -> list[Discovered]:
        """Every running sandbox, from the control plane's E2B list (`GET /v2/sandboxes`,
        paged by `x-next-token`), for Prometheus service discovery; touches none."""
        found: list[Discovered] = []
        token = ""
        for _ in range(_MAX_LIST_PAGES):
            query = {"state": "running", "limit": str(_LIST_PAGE)}
            if token:
                query["nextToken"] = token
            status, body, token = await self._list_page(query)
            _raise_for(status, body, None, "listing")
            try:
                found.extend(_listed(body))
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                raise Unavailable(f"the control plane's list is malformed ({reason})") from exc
            if not token:
                break
        return found

    async def touch(self, activity: Mapping[str, float]) -> None:
        status, body = await self._call(
            "POST", "/wakeproxy/activity", json={"activity": dict(activity)}
        )
        _raise_for(status, body, None, "reporting activity of")

    def watch(self, listener: StateListener) -> None:
        """Tell `listener` of every change the control plane's event stream reports."""
        self._listeners.append(listener)
        if self._events is None and self._session is not None:
            self._events = asyncio.get_running_loop().create_task(self._follow_events())

    async def _follow_events(self) -> None:
        delay = _RECONNECT_FIRST
        while True:
            try:
                followed = await self._read_events()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.info("the control plane's event stream ended: %r", exc)
                followed = False
            if followed is None:
                return
            if followed:
                delay = _RECONNECT_FIRST
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _RECONNECT_MOST)

    async def _read_events(self) -> bool | None:
        """Follow the stream until it ends; None when the control plane has none."""
        assert self._session is not None
        limits = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.total, sock_read=_EVENTS_SILENCE
        )
        async with self._session.get(self._base + "/wakeproxy/events", timeout=limits) as reply:
            if reply.status == 404:
                log.info("the control plane has no event stream: changes are learned by lookups")
                return None
            if reply.status != 200:
                raise ValueError(f"the event stream answered HTTP {reply.status}")
            async for line in reply.content:
                if line.strip():
                    self._deliver(line)
        return True

    def _deliver(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            sandbox_id = str(event["sandboxID"])
            info = None if event.get("killed") else info_from_detail(sandbox_id, event)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed event from the control plane: %r", exc)
            return
        for listener in list(self._listeners):
            try:
                listener(sandbox_id, info)
            except Exception:
                log.exception("a sandbox state listener failed")

    # -- HTTP -------------------------------------------------------------------------------

    async def _list_page(self, query: Mapping[str, str]) -> tuple[int, Any, str]:
        if self._session is None:
            raise Unavailable("the http backend is not started")
        try:
            async with self._session.get(self._base + "/v2/sandboxes", params=query) as response:
                raw = await response.read()
                return response.status, _json(raw), response.headers.get("x-next-token", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("the control plane did not answer its list: %r", exc)
            raise Unavailable(f"the control plane did not answer ({_why(exc)})") from exc

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> tuple[int, Any]:
        if self._session is None:
            raise Unavailable("the http backend is not started")
        try:
            async with self._session.request(
                method, self._base + path, json=json, timeout=limit or self._timeout
            ) as response:
                raw = await response.read()
                return response.status, _json(raw)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("the control plane did not answer %s %s: %r", method, path, exc)
            raise Unavailable(f"the control plane did not answer ({_why(exc)})") from exc


def _why(exc: BaseException) -> str:
    """A client error in words a user of the proxy can act on; the repr is for the log."""
    if isinstance(exc, TimeoutError):
        return "it took too long"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's strerror names the address ("Connect call failed (...)"); errno does not.
        number = exc.os_error.errno
        return f"cannot connect: {os.strerror(number) if number else 'refused'}".lower()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "the connection failed"


# -- the wire format (pure) -----------------------------------------------------------------


def _listed(body: Any) -> list[Discovered]:
    """E2B's list items: `sandboxID`, `templateID`, `metadata` (KeyError, TypeError when
    malformed)."""
    return [
        Discovered(
            str(item["sandboxID"]), str(item.get("templateID", "")), True,
            {str(k): str(v) for k, v in (item.get("metadata") or {}).items()},
        )
        for item in body
    ]  # fmt: skip


def info_from_detail(sandbox_id: str, body: Mapping[str, Any]) -> SandboxInfo:
    """E2B's `SandboxDetail` with the optional "wakeproxy" object → `SandboxInfo`."""
    extension = body.get("wakeproxy") or {}
    state = _STATES[str(extension.get("state") or body["state"])]
    lifecycle = body.get("lifecycle") or {}
    on_timeout: Literal["pause", "kill"] = (
        "pause" if lifecycle.get("onTimeout") == "pause" else "kill"
    )
    token = extension.get("trafficAccessToken")
    if token is None and (body.get("network") or {}).get("allowPublicTraffic") is False:
        # Private, but the token was not shared: a secret nobody knows lets nobody in.
        token = secrets.token_urlsafe(32)
    end_at = body.get("endAt")
    return SandboxInfo(
        sandbox_id=sandbox_id,
        state=state,
        lifecycle=Lifecycle(on_timeout, bool(lifecycle.get("autoResume", False))),
        version=int(extension.get("version", 0)),
        end_at=None if end_at is None else _epoch(str(end_at)),
        traffic_token=None if token is None else str(token),
        agent_port=int(extension.get("agentPort", AGENT_PORT)),
        agent_token=None if body.get("envdAccessToken") is None else str(body["envdAccessToken"]),
    )


def upstream_from_json(sandbox_id: str, port: int, body: Mapping[str, Any]) -> Upstream:
    """Where a port is reached: TCP, a unix socket, or a socket broker on this host."""
    placeholder = f"{sandbox_id}.sandbox.invalid"  # names the pool; never dialled
    if "host" in body:
        return Upstream(host=str(body["host"]), port=int(body.get("port", port)))
    if "unixSocket" in body:
        path = str(body["unixSocket"])
        return Upstream(host=placeholder, port=port, opener=_unix_opener(path))
    if "socketBroker" in body:
        broker = str(body["socketBroker"])
        opener = _broker_opener(broker, sandbox_id, port)
        return Upstream(host=placeholder, port=port, opener=opener)
    raise ValueError("expected host, unixSocket or socketBroker")


def _unix_opener(path: str) -> SocketOpener:
    async def opener() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return sock

    return opener


def _broker_opener(path: str, sandbox_id: str, port: int) -> SocketOpener:
    async def opener() -> socket.socket:
        async with asyncio.timeout(_BROKER_TIMEOUT):
            return await ask_broker(path, sandbox_id, port)

    return opener


async def ask_broker(path: str, sandbox_id: str, port: int) -> socket.socket:
    """A socket connected to `port` of the sandbox, from the platform's socket broker
    (`wakeproxy.platform.runtime.portbroker`): ConnectionRefusedError when nothing accepts there."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.setblocking(False)
        await loop.sock_connect(conn, path)
        await loop.sock_sendall(conn, f"{sandbox_id} {port}\n".encode())
        message, fds = await _recv_fds(conn)
    if not fds:
        raise ConnectionRefusedError(message.decode(errors="replace").strip() or "refused")
    sock = socket.socket(fileno=fds[0])
    for extra in fds[1:]:
        socket.close(extra)
    sock.setblocking(False)
    return sock


async def _recv_fds(conn: socket.socket) -> tuple[bytes, list[int]]:
    loop = asyncio.get_running_loop()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(conn, 1024, 2)
        except BlockingIOError:
            await _readable(loop, conn)
            continue
        return message, list(fds)


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def _raise_for(status: int, body: Any, sandbox_id: str | None, doing: str) -> None:
    if 200 <= status < 300:
        return
    what = f"{doing} sandbox {sandbox_id}" if sandbox_id else f"{doing} sandboxes"
    message = _message(body, f"HTTP {status}")
    error: type[BackendError]
    if status == 404:
        error, message = NotFound, "The sandbox was not found"
    elif status in (401, 403):
        error, message = NotAllowed, f"the control plane refused {what}: {message}"
    elif status == 429:
        error, message = LimitExceeded, f"the control plane is at a limit: {message}"
    else:
        error, message = Unavailable, f"the control plane failed {what}: {message}"
    raise error(message, sandbox_id=sandbox_id)


def _parsed(parse: Callable[[str, Any], T], sandbox_id: str, body: Any) -> T:
    try:
        return parse(sandbox_id, body)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise Unavailable(
            f"the control plane's answer about sandbox {sandbox_id} is malformed "
            f"({type(exc).__name__}: {exc})",
            sandbox_id=sandbox_id,
        ) from exc


def _message(body: Any, default: str) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return default


def _json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _id(sandbox_id: str) -> str:
    return quote(sandbox_id, safe="")
