"""The Connect protocol, as far as the E2B SDKs use it: framing, codecs, errors, headers.

Both SDKs speak Connect with the JSON codec (Python: connect-python with a JSON codec;
JS: connect-web with `useBinaryFormat: false`) and without compression:

* Unary calls POST a JSON body with `Content-Type: application/json` and get one back;
  an error is a non-200 status with `{"code": "<name>", "message": "..."}`.
* Streaming calls use `Content-Type: application/connect+json`. Both bodies are
  sequences of envelopes: one flags byte, a big-endian uint32 length, the message.
  The server's last envelope has flag 0x02 ("end of stream") and holds a JSON object
  with an optional `error`; a stream that fails is still an HTTP 200, and its error
  travels in that last envelope.

Everything here is pure: bytes and strings in, bytes and values out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from wakeproxy.platform.agent.errors import RpcError

ENVELOPE_HEADER = struct.Struct(">BI")
FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02

UNARY_JSON = "application/json"
STREAM_JSON = "application/connect+json"
PROTOCOL_VERSION = "1"

# Connect's code names and the HTTP statuses a unary error carries.
HTTP_STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}

_MAX_TIMEOUT_DIGITS = 10


class Framing(Enum):
    UNARY = "unary"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class ContentType:
    framing: Framing
    codec: str
    """`json` or `proto` (or whatever else a client names); only `json` is spoken."""


def parse_content_type(value: str) -> ContentType | None:
    """Classify a request's Content-Type; None when it is not a Connect one at all."""
    media = value.partition(";")[0].strip().lower()
    if media.startswith("application/connect+"):
        return ContentType(Framing.STREAM, media.removeprefix("application/connect+"))
    if media in ("application/json", "application/proto"):
        return ContentType(Framing.UNARY, media.removeprefix("application/"))
    return None


def error_body(error: RpcError) -> bytes:
    """The JSON of a Connect error (a unary error's body, or an end-of-stream `error`)."""
    return json.dumps(_error_object(error), separators=(",", ":")).encode()


def _error_object(error: RpcError) -> dict[str, str]:
    body = {"code": error.code}
    if error.message:
        body["message"] = error.message
    return body


def http_status(code: str) -> int:
    return HTTP_STATUS.get(code, 500)


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return ENVELOPE_HEADER.pack(flags, len(payload)) + payload


def message_envelope(message: object) -> bytes:
    return envelope(json.dumps(message, separators=(",", ":")).encode())


def end_stream(error: RpcError | None = None) -> bytes:
    """The envelope that ends a stream: `{}` on success, `{"error": {...}}` on failure."""
    body: dict[str, object] = {} if error is None else {"error": _error_object(error)}
    return envelope(json.dumps(body, separators=(",", ":")).encode(), FLAG_END_STREAM)


class EnvelopeDecoder:
    """Splits a byte stream into envelopes; feed it chunks as they arrive.

    Raises `RpcError` for a message over `max_message` bytes, a compressed message
    (no compression was negotiated) and, from `finish`, a truncated envelope.
    """

    def __init__(self, max_message: int) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= ENVELOPE_HEADER.size:
            flags, length = ENVELOPE_HEADER.unpack_from(self._buffer)
            if length > self._max:
                raise RpcError(
                    "resource_exhausted", f"message size {length} is larger than {self._max}"
                )
            if flags & FLAG_COMPRESSED:
                raise RpcError("internal", "received a compressed message without compression")
            end = ENVELOPE_HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[ENVELOPE_HEADER.size : end])
            del self._buffer[:end]
            yield flags, payload

    def finish(self) -> None:
        if self._buffer:
            raise RpcError("invalid_argument", "request body ends inside an envelope")


def decode_json(payload: bytes) -> dict[str, object]:
    """A request message: a JSON object (unknown fields are the caller's to ignore)."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcError("invalid_argument", f"unmarshal message: {exc}") from None
    if not isinstance(value, dict):
        raise RpcError("invalid_argument", "unmarshal message: expected a JSON object")
    return value


def parse_timeout(value: str | None) -> float | None:
    """`Connect-Timeout-Ms` in seconds; None when absent."""
    if value is None or value == "":
        return None
    if len(value) > _MAX_TIMEOUT_DIGITS or not value.isdigit():
        raise RpcError("invalid_argument", f"invalid Connect-Timeout-Ms: {value!r}")
    return int(value) / 1000


def parse_keepalive(value: str | None, default: float) -> float:
    """`Keepalive-Ping-Interval` (whole seconds, as envd reads it); `default` when unusable."""
    if value is None or not value.strip().isdigit():
        return default
    seconds = int(value.strip())
    return float(seconds) if seconds > 0 else default
