"""HTTP/1.1 bytes and framing: the relay's pure helpers."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.wire import (
    MAX_HEAD,
    MAX_LINE,
    Framing,
    FramingError,
    MalformedRequest,
    body_due,
    check_version,
    chunk,
    decoded_path,
    origin_form,
    over_bounds,
    request_framing,
    request_head,
    response_framing,
    response_head,
    upstream_target,
    whole_response,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("//double/%2F?a=1&a=2", "//double/%2F?a=1&a=2"),
        ("http://3000-abc.localhost:8080/p/../q?x=%20", "/p/../q?x=%20"),
        ("http://3000-abc.localhost", "/"),
        ("http://3000-abc.localhost?x=1", "/?x=1"),
        ("HTTP://h//x", "//x"),
    ],
)
def test_origin_form_keeps_path_and_query_byte_for_byte(target: str, expected: str) -> None:
    assert origin_form(target) == expected


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Host", b"h")], Framing.NONE),
        ([(b"content-length", b"3")], Framing.LENGTH),
        ([(b"Transfer-Encoding", b"chunked")], Framing.CHUNKED),
        ([(b"Transfer-Encoding", b" Chunked ")], Framing.CHUNKED),
        ([(b"Content-Length", b"%d" % (2**63 - 1))], Framing.LENGTH),
    ],
)
def test_request_framing_follows_the_headers(
    headers: list[tuple[bytes, bytes]], expected: Framing
) -> None:
    assert request_framing(headers) is expected


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, identity", b"chunked,gzip"])
def test_a_final_coding_other_than_chunked_is_refused(coding: bytes) -> None:
    with pytest.raises(FramingError, match="chunked"):
        request_framing([(b"Transfer-Encoding", coding)])


@pytest.mark.parametrize(
    ("headers", "version", "status"),
    [
        ([(b"Transfer-Encoding", b"gzip, chunked")], "1.1", 501),
        ([(b"Transfer-Encoding", b"chunked")], "1.0", 400),
        ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], "1.1", 400),
        ([(b"Content-Length", b"%d" % 2**63)], "1.1", 400),
        ([(b"Content-Length", b"-1")], "1.1", 400),
    ],
    ids=["gzip-then-chunked", "http10", "chunked-twice", "length-2^63", "negative"],
)
def test_framing_the_rfcs_or_nginx_refuse_is_refused(
    headers: list[tuple[bytes, bytes]], version: str, status: int
) -> None:
    with pytest.raises(FramingError) as refused:
        request_framing(headers, version)
    assert refused.value.status == status


@pytest.mark.parametrize(
    ("method", "target", "upstream"),
    [
        (b"GET", b"/a?b", b"/a?b"),
        (b"OPTIONS", b"*", b"*"),
        (b"GET", b"http://h:1/p?q", b"/p?q"),
        (b"GET", b"HTTPS://h", b"/"),
    ],
)
def test_the_upstream_gets_an_origin_form_target_or_options_star(
    method: bytes, target: bytes, upstream: bytes
) -> None:
    assert upstream_target(method, target) == upstream


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"CONNECT", b"example.com:443", 405),
        (b"CONNECT", b"/x", 405),
        (b"GET", b"*", 400),
        (b"GET", b"example.com:443", 400),
        (b"GET", b"ftp://h/x", 400),
    ],
)
def test_targets_the_upstream_could_read_otherwise_are_refused(
    method: bytes, target: bytes, status: int
) -> None:
    with pytest.raises(MalformedRequest) as refused:
        upstream_target(method, target)
    assert refused.value.status == status


@pytest.mark.parametrize("version", ["0.9", "2.0", "1.2"])
def test_versions_other_than_1_0_and_1_1_get_505(version: str) -> None:
    with pytest.raises(MalformedRequest) as refused:
        check_version(version)
    assert refused.value.status == 505


@pytest.mark.parametrize(
    ("status", "headers", "head", "http11", "expected"),
    [
        (200, [(b"Content-Length", b"5")], False, True, Framing.LENGTH),
        (200, [(b"Content-Length", b"5")], True, True, Framing.NONE),
        (204, [], False, True, Framing.NONE),
        (304, [(b"Content-Length", b"5")], False, True, Framing.NONE),
        (200, [(b"Transfer-Encoding", b"chunked")], False, True, Framing.CHUNKED),
        (200, [], False, True, Framing.CHUNKED),
        (200, [(b"Transfer-Encoding", b"chunked")], False, False, Framing.CLOSE),
        (200, [], False, False, Framing.CLOSE),
    ],
)
def test_response_framing_keeps_a_length_and_rechunks_the_rest(
    status: int,
    headers: list[tuple[bytes, bytes]],
    head: bool,
    http11: bool,
    expected: Framing,
) -> None:
    framing = response_framing(status, headers, head_request=head, client_http11=http11)
    assert framing is expected


def test_heads_carry_the_framing_and_the_connection_decision() -> None:
    request = request_head(b"POST", b"/u?x", [(b"Host", b"h")], Framing.CHUNKED)
    assert request == b"POST /u?x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    response = response_head("1.0", 200, b"", [(b"A", b"b")], Framing.LENGTH, True)
    assert response == b"HTTP/1.0 200 OK\r\nA: b\r\nConnection: keep-alive\r\n\r\n"
    closing = response_head("1.1", 502, b"Nope", [], Framing.CHUNKED, False)
    assert (
        closing == b"HTTP/1.1 502 Nope\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )


def test_a_proxy_made_answer_to_head_has_the_length_but_no_body() -> None:
    full = whole_response("1.1", 404, [(b"Content-Type", b"text/plain")], b"gone\n", True)
    head_only = whole_response(
        "1.1", 404, [(b"Content-Type", b"text/plain")], b"gone\n", True, head_only=True
    )
    assert full == head_only + b"gone\n"
    assert b"Content-Length: 5\r\n" in head_only


def test_chunks_are_hex_sized() -> None:
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize(
    ("origin", "path"),
    [("/a%20b?c=%20", "/a b"), ("/plain?q", "/plain"), ("/x#frag", "/x"), ("/", "/")],
)
def test_decoded_path_is_what_rules_and_logs_see(origin: str, path: str) -> None:
    assert decoded_path(origin) == path


# --- bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unreported", "head_size", "over"),
    [
        (MAX_LINE, 0, False),
        (MAX_LINE + 1, 0, True),
        (100, MAX_HEAD - 100, False),
        (100, MAX_HEAD - 99, True),
    ],
)
def test_an_unfinished_line_is_over_bounds_only_when_surely_too_long(
    unreported: int, head_size: int, over: bool
) -> None:
    assert over_bounds(unreported, head_size) is over


def test_a_body_earns_a_second_per_min_rate_bytes() -> None:
    assert body_due(100.0, 0, 60.0, 1024) == 160.0
    assert body_due(100.0, 10 * 1024, 60.0, 1024) == 170.0
