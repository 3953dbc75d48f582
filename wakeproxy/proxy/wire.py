"""HTTP/1.1 messages as bytes: what the relay writes, and how each body is framed.

Pure: no I/O. The relay parses with llhttp (`httptools`), which already rejects what
request smuggling is made of (Content-Length with Transfer-Encoding, duplicate
Content-Lengths, bare LF, obs-fold, a final coding other than chunked); this module
decides how every body it passes on is delimited, so each hop's framing is the
proxy's own and never a copy of a peer's.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

Headers = list[tuple[bytes, bytes]]

MAX_HEAD = 64 * 1024
"""Bytes a request head may take (request line and headers); more is answered 431."""

MAX_LINE = 16 * 1024
"""Bytes one header line (or chunk-size line, or trailer line) may take; more is refused
like a head over `MAX_HEAD`. nginx refuses a request header line over 8 KiB by default."""

FEED_SLICE = 4 * 1024
"""Outside a body, bytes are handed to llhttp at most this many at a time: its binding
keeps an unfinished header line to itself, so the size of one is known only to within
a slice, and an endless line is refused once it is surely over `MAX_LINE`."""


def over_bounds(unreported: int, head_size: int) -> bool:
    """Whether an unfinished line of at least `unreported` bytes, behind `head_size`
    bytes of head already parsed, is surely over `MAX_LINE` or `MAX_HEAD`."""
    return unreported > MAX_LINE or unreported + head_size > MAX_HEAD


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    431: b"Request Header Fields Too Large",
    499: b"Client Closed Request",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class Framing(enum.Enum):
    """How a body is delimited on one hop."""

    NONE = 0  # no body at all (HEAD, 1xx, 204, 304, a request without one)
    LENGTH = 1  # Content-Length: passed on byte for byte
    CHUNKED = 2  # re-chunked by the proxy as the pieces arrive
    CLOSE = 3  # ends when the connection does (a response only)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head, as the client connection hands it to its exchange."""

    method: bytes
    target: bytes
    """As the upstream gets it (`upstream_target`)."""
    version: str
    headers: Headers
    host: bytes | None
    """The Host header as sent; None without one."""
    keep_alive: bool
    """Whether the client's connection may carry another request after this one."""
    framing: Framing
    websocket: bool = False
    """A WebSocket handshake: answered by a tunnel, or refused."""


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class MalformedRequest(ValueError):
    """A request the proxy must refuse before anything of it goes upstream; `status`
    is the answer (400 unless the RFCs name another), and the connection then closes."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class FramingError(MalformedRequest):
    """A request whose body cannot be delimited safely."""


_MAX_LENGTH = 2**63 - 1


def request_framing(headers: Iterable[tuple[bytes, bytes]], version: str = "1.1") -> Framing:
    """How a request's body is delimited; raises `FramingError` when unsafely.

    llhttp refuses a Transfer-Encoding that comes with a Content-Length, and an invalid
    one, but only after reporting the head complete: the codings are checked here too,
    so such a request is refused before anything is done with it. Only chunked is
    supported (501 for another coding, as nginx answers: passing one on while the
    proxy re-chunks the body would drop its label); HTTP/1.0 has no Transfer-Encoding
    (RFC 9112 §6.1); a length must fit in 63 bits.
    """
    framing = Framing.NONE
    for name, value in headers:
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            if version == "1.0":
                raise FramingError("an HTTP/1.0 request cannot have a Transfer-Encoding")
            codings = [coding.strip().lower() for coding in value.split(b",")]
            if framing is Framing.CHUNKED or codings[-1] != b"chunked":
                raise FramingError("Transfer-Encoding must end in chunked, once")
            if len(codings) > 1:
                raise FramingError(
                    "only the chunked Transfer-Encoding is supported; send the body "
                    "with Content-Encoding instead",
                    status=501,
                )
            framing = Framing.CHUNKED
        elif len(name) == 14 and name.lower() == b"content-length":
            if not value.isdigit() or int(value) > _MAX_LENGTH:
                raise FramingError("Content-Length must be a number below 2^63")
            if framing is Framing.NONE:
                framing = Framing.LENGTH
    return framing


def upstream_target(method: bytes, target: bytes) -> bytes:
    """The request target as the upstream gets it; raises `MalformedRequest` for one the
    upstream could read differently than the proxy did.

    The origin form (``/path?q``) passes byte for byte; the absolute form loses its scheme
    and authority (`origin_form`); ``*`` is OPTIONS's alone (RFC 9112 §3.2.4). CONNECT
    asks for a tunnel this reverse proxy does not make (405, as nginx answers).
    """
    if method == b"CONNECT":
        raise MalformedRequest("CONNECT is not supported: this is a reverse proxy", status=405)
    if target.startswith(b"/"):
        return target
    if target == b"*":
        if method == b"OPTIONS":
            return target
        raise MalformedRequest("only OPTIONS may have the request target *")
    scheme, separator, _ = target.partition(b"://")
    if separator and scheme.lower() in (b"http", b"https"):
        return origin_form(target.decode("latin-1")).encode("latin-1")
    raise MalformedRequest("the request target must be a path (/...) or an http(s) URL")


def check_version(version: str) -> None:
    """HTTP/1.0 and HTTP/1.1 only: an answer in another version's syntax would be a lie,
    and HTTP/0.9 has no headers to route by (505)."""
    if version not in ("1.1", "1.0"):
        raise MalformedRequest(f"HTTP/{version} is not supported; use HTTP/1.1", status=505)


def response_framing(
    status: int,
    upstream_headers: Iterable[tuple[bytes, bytes]],
    *,
    head_request: bool,
    client_http11: bool,
) -> Framing:
    """How the proxy delimits a response to its client.

    A length the upstream declared is kept; anything else (chunked, or until close) is
    re-chunked for an HTTP/1.1 client, and delimited by closing for an HTTP/1.0 one.
    """
    if head_request or status < 200 or status in (204, 304):
        return Framing.NONE
    for name, _ in upstream_headers:
        if len(name) == 14 and name.lower() == b"content-length":
            return Framing.LENGTH
    return Framing.CHUNKED if client_http11 else Framing.CLOSE


def body_due(since: float, received: int, timeout: float, min_rate: int) -> float:
    """When a request body that began at `since` (paused time excluded) and has brought
    `received` bytes so far must be complete: `timeout`, plus a second per `min_rate`
    bytes, so a body that keeps up a minimal rate is never cut, and a trickle is."""
    return since + timeout + received / min_rate


def request_head(method: bytes, target: bytes, headers: Headers, framing: Framing) -> bytes:
    """An HTTP/1.1 request head; the upstream connection is always kept alive."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    _add_fields(parts, headers)
    if framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(
    version: str,
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    framing: Framing,
    keep_alive: bool,
) -> bytes:
    """A response head for a client that spoke HTTP/`version`."""
    parts = [_status_line(version, status, reason)]
    _add_fields(parts, headers)
    if framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _add_fields(parts: list[bytes], headers: Iterable[tuple[bytes, bytes]]) -> None:
    # One join over the pieces: no formatted string per header line.
    append = parts.append
    for name, value in headers:
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")


@functools.lru_cache(maxsize=256)  # a few statuses and reasons recur; bounded for odd ones
def _status_line(version: str, status: int, reason: bytes) -> bytes:
    said = reason or _REASONS.get(status, b"")
    return b"HTTP/%s %d %s\r\n" % (version.encode(), status, said)


def whole_response(
    version: str,
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    keep_alive: bool,
    *,
    head_only: bool = False,
) -> bytes:
    """A response the proxy makes itself (an error, the waiting page, a long-poll answer);
    `head_only` for a HEAD request: the head says what the body would be, and ends it."""
    pairs = [*headers, (b"Content-Length", b"%d" % len(body))]
    head = response_head(version, status, b"", pairs, Framing.LENGTH, keep_alive)
    return head if head_only else head + body


def encoded(headers: Iterable[tuple[str, str]]) -> Headers:
    """Headers made as text (error pages, the waiting page), as the wire carries them."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def origin_form(raw_target: str) -> str:
    """The path and query of a request target, byte for byte, as an upstream gets it.

    Clients may send the absolute form, ``http://host/path?q`` (RFC 9112 §3.2.2 says a
    server must accept it); the upstream always gets the origin form, ``/path?q``.
    """
    if raw_target.startswith("/"):
        return raw_target
    _, separator, rest = raw_target.partition("://")
    if not separator:
        return "/" + raw_target
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path = rest[authority_end:]
    return path if path.startswith("/") else "/" + path


def decoded_path(origin: str) -> str:
    """The path of an origin-form target, percent-decoded, without its query: what
    no-wake rules match and the access log shows."""
    path = origin.partition("?")[0].partition("#")[0]
    return unquote(path) if "%" in path else path
