"""The WebSocket tunnel's frame cursor: where frames start, read from headers alone."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wakeproxy.proxy.tunnel import (
    BadControlFrame,
    FrameCursor,
    MessageTooBig,
    close_frame,
)


def frame(payload: bytes, *, opcode: int = 2, fin: bool = True, masked: bool = False) -> bytes:
    """One frame as a peer would send it (7-, 16- and 64-bit lengths)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def feed_in_pieces(cursor: FrameCursor, data: bytes, cuts: list[int]) -> list[bool]:
    """Feed `data` cut at `cuts`; after each piece, whether the cursor is between frames."""
    seen = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        cursor.advance(data[start:cut])
        seen.append(cursor.at_boundary)
        start = cut
    return seen


@given(
    sizes=st.lists(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]), min_size=1, max_size=4),
    masked=st.booleans(),
    cut_at=st.lists(st.integers(min_value=0, max_value=200_000), max_size=6),
)
def test_the_cursor_ends_between_frames_however_the_stream_is_cut(
    sizes: list[int], masked: bool, cut_at: list[int]
) -> None:
    frames = [frame(b"x" * size, masked=masked) for size in sizes]
    stream = b"".join(frames)
    boundaries = set()
    at = 0
    for one in frames:
        at += len(one)
        boundaries.add(at)
    cuts = [cut for cut in cut_at if 0 < cut < len(stream)]
    seen = feed_in_pieces(FrameCursor(1 << 20), stream, cuts)
    ends = [*sorted(set(cuts)), len(stream)]
    assert seen == [end in boundaries for end in ends]


def test_a_header_split_byte_by_byte_is_followed() -> None:
    data = frame(b"y" * 300, masked=True) + frame(b"z")
    cursor = FrameCursor(1 << 20)
    begun = sum(cursor.advance(data[index : index + 1]) for index in range(len(data)))
    assert begun == 2
    assert cursor.at_boundary


def test_a_message_over_the_limit_is_reported_even_when_fragmented() -> None:
    cursor = FrameCursor(100)
    assert cursor.advance(frame(b"a" * 60, fin=False)) == 1
    assert cursor.advance(frame(b"", opcode=9)) == 0  # a ping: not part of the message
    with pytest.raises(MessageTooBig):
        cursor.advance(frame(b"b" * 60, opcode=0))


def test_a_new_message_starts_counting_afresh() -> None:
    cursor = FrameCursor(100)
    assert cursor.advance(frame(b"a" * 90) + frame(b"b" * 90)) == 2


def test_close_frames_carry_the_code_and_are_masked_only_from_the_client_side() -> None:
    assert close_frame(1001, masked=False) == b"\x88\x02\x03\xe9"
    masked = close_frame(1011, masked=True)
    assert masked[:2] == b"\x88\x82"
    mask, payload = masked[2:6], masked[6:]
    assert bytes(b ^ mask[i] for i, b in enumerate(payload)) == (1011).to_bytes(2, "big")
    cursor = FrameCursor(10)
    assert cursor.advance(masked) == 0  # a control frame, not a message
    assert cursor.at_boundary


def test_a_refused_frame_is_reported_where_it_begins_in_the_read() -> None:
    cursor = FrameCursor(100)
    first = frame(b"x" * 10, masked=True)
    cursor.advance(first[:5])
    with pytest.raises(MessageTooBig) as refused:
        cursor.advance(first[5:] + frame(b"y" * 101, masked=True))
    assert refused.value.at == len(first) - 5  # what precedes it may still go out
    assert refused.value.code == 1009
    assert cursor.at_boundary


def test_a_refused_frame_whose_header_began_in_an_earlier_read_leaves_no_boundary() -> None:
    cursor = FrameCursor(100)
    big = frame(b"y" * 200)
    cursor.advance(big[:1])
    with pytest.raises(MessageTooBig) as refused:
        cursor.advance(big[1:4])
    assert refused.value.at == 0
    assert not cursor.at_boundary  # part of its header was passed on: cut, no close frame


@pytest.mark.parametrize(
    "control",
    [frame(b"p" * 126, opcode=9), frame(b"", opcode=10, fin=False), frame(b"c" * 200, opcode=8)],
    ids=["ping-126", "fragmented-pong", "close-200"],
)
def test_control_frames_rfc_6455_forbids_are_refused_with_1002(control: bytes) -> None:
    cursor = FrameCursor(1 << 20)
    with pytest.raises(BadControlFrame) as refused:
        cursor.advance(frame(b"ok") + control)
    assert refused.value.at == len(frame(b"ok"))
    assert refused.value.code == 1002


def test_a_control_frame_of_125_bytes_passes() -> None:
    assert FrameCursor(1 << 20).advance(frame(b"p" * 125, opcode=9)) == 0
