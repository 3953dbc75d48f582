"""The relay's decisions (`wakeproxy.proxy.decisions`): pure, tested without sockets."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.decisions import may_resend
from wakeproxy.proxy.wire import Framing


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])
def test_an_idempotent_bodiless_request_unanswered_on_a_reused_connection_is_resent(
    method: bytes,
) -> None:
    assert may_resend(method, Framing.NONE, reused=True, heard=False, resent=False)


@pytest.mark.parametrize("method", [b"POST", b"PATCH", b"CONNECT", b"PROPFIND"])
def test_a_request_that_is_not_idempotent_is_never_resent(method: bytes) -> None:
    assert not may_resend(method, Framing.NONE, reused=True, heard=False, resent=False)


@pytest.mark.parametrize(
    ("framing", "reused", "heard", "resent"),
    [
        (Framing.LENGTH, True, False, False),  # its body was streamed away
        (Framing.CHUNKED, True, False, False),
        (Framing.NONE, False, False, False),  # a new connection that fails is no race
        (Framing.NONE, True, True, False),  # some answer came: it may have been processed
        (Framing.NONE, True, False, True),  # once at most
    ],
)
def test_nothing_else_is_resent(framing: Framing, reused: bool, heard: bool, resent: bool) -> None:
    assert not may_resend(b"GET", framing, reused=reused, heard=heard, resent=resent)
