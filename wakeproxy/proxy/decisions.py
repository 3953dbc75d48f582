"""The relay's decisions about one exchange, as pure functions of what is known.

No I/O and no state: `Exchange` asks, then acts. Each rule cites what it keeps.
"""

from __future__ import annotations

from wakeproxy.proxy.wire import Framing

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
