"""The relay's decisions (`wakeproxy.proxy.decisions`): pure, tested without sockets."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.decisions import client_keeps_alive, continue_expected, may_resend
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


EXPECT = [(b"Host", b"h"), (b"expect", b"100-Continue")]


@pytest.mark.parametrize(
    ("headers", "version", "body_to_come", "expected"),
    [
        (EXPECT, "1.1", True, True),
        (EXPECT, "1.0", True, False),  # HTTP/1.0 has no interim responses
        (EXPECT, "1.1", False, False),  # the body came anyway
        ([(b"Host", b"h")], "1.1", True, False),
        ([(b"Expect", b"something-else")], "1.1", True, False),
    ],
)
def test_100_continue_is_answered_only_when_asked_and_useful(
    headers: list[tuple[bytes, bytes]], version: str, body_to_come: bool, expected: bool
) -> None:
    assert continue_expected(headers, version, body_to_come=body_to_come) is expected


@pytest.mark.parametrize(
    ("wants", "websocket", "closing", "idle", "expected"),
    [
        (True, False, False, 75.0, True),
        (False, False, False, 75.0, False),
        (True, True, False, 75.0, False),
        (True, False, True, 75.0, False),
        (True, False, False, 0.0, False),
    ],
)
def test_the_client_connection_is_kept_alive_only_when_nothing_forbids_it(
    wants: bool, websocket: bool, closing: bool, idle: float, expected: bool
) -> None:
    assert (
        client_keeps_alive(wants, websocket=websocket, closing=closing, idle_timeout=idle)
        is expected
    )
