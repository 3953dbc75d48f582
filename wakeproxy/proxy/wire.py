"""HTTP/1.1 messages as bytes: what the relay writes, and how each body is framed.

Pure: no I/O. The relay parses with llhttp (`httptools`), which already rejects what
request smuggling is made of (Content-Length with Transfer-Encoding, duplicate
Content-Lengths, bare LF, obs-fold, a final coding other than chunked); this module
decides how every body it passes on is delimited, so each hop's framing is the
proxy's own and never a copy of a peer's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from urllib.parse import unquote

Headers = list[tuple[str, str]]

MAX_HEAD = 64 * 1024
"""Bytes a request head may take (request line and headers); more is answered 431."""

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Framing(enum.Enum):
    """How a body is delimited on one hop."""

    NONE = 0  # no body at all (HEAD, 1xx, 204, 304, a request without one)
    LENGTH = 1  # Content-Length: passed on byte for byte
    CHUNKED = 2  # re-chunked by the proxy as the pieces arrive
    CLOSE = 3  # ends when the connection does (a response only)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class FramingError(ValueError):
    """A request whose body cannot be delimited safely."""


def request_framing(headers: Iterable[tuple[str, str]]) -> Framing:
    """How a request's body is delimited; raises `FramingError` when unsafely.

    llhttp refuses a Transfer-Encoding that comes with a Content-Length, and an invalid
    one, but only after reporting the head complete: the final coding is checked here
    too, so such a request is refused before anything is done with it.
    """
    framing = Framing.NONE
    for name, value in headers:
        lowered = name.lower()
        if lowered == "transfer-encoding":
            if value.rpartition(",")[2].strip().lower() != "chunked":
                raise FramingError("Transfer-Encoding must end in chunked")
            return Framing.CHUNKED
        if lowered == "content-length":
            framing = Framing.LENGTH
    return framing


def response_framing(
    status: int,
    upstream_headers: Iterable[tuple[str, str]],
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
        if len(name) == 14 and name.lower() == "content-length":
            return Framing.LENGTH
    return Framing.CHUNKED if client_http11 else Framing.CLOSE


def request_head(method: str, target: str, headers: Headers, framing: Framing) -> bytes:
    """An HTTP/1.1 request head; the upstream connection is always kept alive."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if framing is Framing.CHUNKED:
        lines.append("Transfer-Encoding: chunked")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def response_head(
    version: str,
    status: int,
    reason: str,
    headers: Iterable[tuple[str, str]],
    framing: Framing,
    keep_alive: bool,
) -> bytes:
    """A response head for a client that spoke HTTP/`version`."""
    lines = [f"HTTP/{version} {status} {reason or _REASONS.get(status, '')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if framing is Framing.CHUNKED:
        lines.append("Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "1.0":
        lines.append("Connection: keep-alive")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def whole_response(
    version: str,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    keep_alive: bool,
    *,
    head_only: bool = False,
) -> bytes:
    """A response the proxy makes itself (an error, the waiting page, a long-poll answer);
    `head_only` for a HEAD request: the head says what the body would be, and ends it."""
    pairs = [*headers, ("Content-Length", str(len(body)))]
    head = response_head(version, status, "", pairs, Framing.LENGTH, keep_alive)
    return head if head_only else head + body


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
