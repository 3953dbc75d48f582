"""Connect framing, codecs and headers of the in-sandbox agent (no sockets)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wakeproxy.platform.agent import connect
from wakeproxy.platform.agent.connect import ContentType, EnvelopeDecoder, Framing
from wakeproxy.platform.agent.errors import RpcError


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def test_an_envelope_is_a_flags_byte_a_big_endian_length_and_the_payload() -> None:
    assert connect.envelope(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert connect.envelope(b"", connect.FLAG_END_STREAM) == b"\x02\x00\x00\x00\x00"


@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=10),
)
def test_the_decoder_yields_every_envelope_however_the_bytes_are_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(connect.envelope(p) for p in payloads)
    decoder = EnvelopeDecoder(max_message=1000)
    got = [item for piece in split_at(stream, cuts) for item in decoder.feed(piece)]
    decoder.finish()
    assert got == [(0, p) for p in payloads]


def test_a_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    decoder = EnvelopeDecoder(max_message=10)
    with pytest.raises(RpcError) as caught:
        list(decoder.feed(struct.pack(">BI", 0, 11)))
    assert caught.value.code == "resource_exhausted"


def test_a_compressed_message_is_refused_since_no_compression_was_negotiated() -> None:
    with pytest.raises(RpcError) as caught:
        list(EnvelopeDecoder(100).feed(connect.envelope(b"x", connect.FLAG_COMPRESSED)))
    assert caught.value.code == "internal"


def test_a_body_that_ends_inside_an_envelope_is_invalid() -> None:
    decoder = EnvelopeDecoder(100)
    assert list(decoder.feed(connect.envelope(b"abcdef")[:-2])) == []
    with pytest.raises(RpcError) as caught:
        decoder.finish()
    assert caught.value.code == "invalid_argument"


def test_the_end_of_a_stream_carries_an_empty_object_or_the_error() -> None:
    ok = connect.end_stream()
    assert ok[0] == connect.FLAG_END_STREAM
    assert json.loads(ok[5:]) == {}
    failed = connect.end_stream(RpcError("not_found", "process with pid 7 not found"))
    assert json.loads(failed[5:]) == {
        "error": {"code": "not_found", "message": "process with pid 7 not found"}
    }


def test_a_unary_error_body_names_the_code_and_leaves_out_an_empty_message() -> None:
    assert json.loads(connect.error_body(RpcError("unimplemented", ""))) == {
        "code": "unimplemented"
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("not_found", 404),
        ("invalid_argument", 400),
        ("already_exists", 409),
        ("unauthenticated", 401),
        ("unimplemented", 501),
        ("deadline_exceeded", 504),
        ("internal", 500),
        ("no_such_code", 500),
    ],
)
def test_codes_map_to_the_http_statuses_of_the_connect_spec(code: str, status: int) -> None:
    assert connect.http_status(code) == status


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", ContentType(Framing.UNARY, "json")),
        ("application/json; charset=utf-8", ContentType(Framing.UNARY, "json")),
        ("application/proto", ContentType(Framing.UNARY, "proto")),
        ("application/connect+json", ContentType(Framing.STREAM, "json")),
        ("Application/Connect+Proto", ContentType(Framing.STREAM, "proto")),
        ("text/plain", None),
        ("", None),
    ],
)
def test_content_types_say_framing_and_codec(header: str, expected: ContentType | None) -> None:
    assert connect.parse_content_type(header) == expected


def test_the_timeout_header_is_milliseconds() -> None:
    assert connect.parse_timeout(None) is None
    assert connect.parse_timeout("60000") == 60.0
    assert connect.parse_timeout("1") == 0.001


@pytest.mark.parametrize("header", ["-5", "1.5", "abc", "12345678901"])
def test_a_malformed_timeout_header_is_an_invalid_argument(header: str) -> None:
    with pytest.raises(RpcError) as caught:
        connect.parse_timeout(header)
    assert caught.value.code == "invalid_argument"


@pytest.mark.parametrize(
    ("header", "expected"), [(None, 90.0), ("50", 50.0), ("0", 90.0), ("x", 90.0), (" 7 ", 7.0)]
)
def test_the_keepalive_interval_falls_back_to_the_default(
    header: str | None, expected: float
) -> None:
    assert connect.parse_keepalive(header, 90.0) == expected


def test_a_request_message_must_be_a_json_object() -> None:
    assert connect.decode_json(b'{"a": 1}') == {"a": 1}
    for bad in (b"[1]", b"not json", b"\xff"):
        with pytest.raises(RpcError) as caught:
            connect.decode_json(bad)
        assert caught.value.code == "invalid_argument"
