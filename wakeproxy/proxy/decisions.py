"""The relay's decisions about one exchange, as pure functions of what is known.

No I/O and no state: `Exchange` asks, then acts. Each rule cites what it keeps.
"""

from __future__ import annotations

from wakeproxy.proxy.wire import Framing, Headers

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
"""Methods a client may expect to be applied more than once (RFC 9110 §9.2.2)."""


def may_resend(method: bytes, framing: Framing, *, reused: bool, heard: bool, resent: bool) -> bool:
    """Whether a request whose upstream connection failed goes out again, on a new one.

    Only what RFC 9112 §9.3.1.1 allows a proxy to retry by itself: an idempotent request
    (a POST or PATCH may already have taken effect), without a body (it was streamed
    away and cannot be sent again), on a kept-alive connection that closed before a
    single byte of an answer (a partial or garbled answer may follow a request that
    was processed) — the upstream closed an idle connection as the request went out.
    Once at most.
    """
    return reused and not heard and not resent and framing is Framing.NONE and method in IDEMPOTENT


def continue_expected(headers: Headers, version: str, *, body_to_come: bool) -> bool:
    """Whether the proxy answers `100 Continue` as it forwards: the client asked for it
    (HTTP/1.1 only, RFC 9110 §10.1.1) and has not sent its body anyway. The proxy says
    it only once it forwards, so a held or refused upload never sends its body."""
    if version == "1.0" or not body_to_come:
        return False
    return any(
        name.lower() == b"expect" and value.lower() == b"100-continue" for name, value in headers
    )


def client_keeps_alive(
    client_wants: bool, *, websocket: bool, closing: bool, idle_timeout: float
) -> bool:
    """Whether the client's connection may carry another request after this one: not
    after a WebSocket handshake (the connection becomes the session's), nor while the
    proxy shuts down, nor with keep-alive turned off (`proxy.idle_timeout = 0`)."""
    return client_wants and not websocket and not closing and idle_timeout > 0
