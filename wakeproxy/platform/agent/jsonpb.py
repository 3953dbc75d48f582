"""Reading and writing protobuf messages in their canonical JSON form (proto3 JSON).

Just the rules the envd messages need. Unknown fields are ignored (as connect-go's
codec does); the request fields read here are all one word, so their JSON and proto
names agree. `bytes` are base64 (standard or URL-safe, padded or not, when reading);
64-bit integers are written as strings; enums are written as their value names and
read from a name or a number; `google.protobuf.Timestamp` is RFC 3339 in UTC. A
value of the wrong type raises `RpcError(invalid_argument)`, as connect-go answers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime

from wakeproxy.platform.agent.errors import RpcError

JsonObject = dict[str, object]

_UINT32_MAX = 2**32 - 1


def _bad(name: str, expected: str, value: object) -> RpcError:
    return RpcError("invalid_argument", f"field {name}: expected {expected}, got {value!r}")


def message(value: object, name: str) -> Mapping[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(name, "an object", value)
    return value


def string(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, "a string", value)
    return value


def boolean(value: object, name: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(name, "a boolean", value)
    return value


def uint32(value: object, name: str) -> int | None:
    if value is None:
        return None
    number = _integer(value, name)
    if not 0 <= number <= _UINT32_MAX:
        raise _bad(name, "a uint32", value)
    return number


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise _bad(name, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _bad(name, "an integer", value)


def enum(value: object, name: str, values: Mapping[str, int]) -> int | None:
    """An enum read from its value name or number; unknown names are an error."""
    if value is None:
        return None
    if isinstance(value, str) and value in values:
        return values[value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _bad(name, f"one of {sorted(values)}", value)


def string_list(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(name, "a list of strings", value)
    return list(value)


def string_map(value: object, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(name, "an object of strings", value)
    return dict(value)


def data(value: object, name: str) -> bytes | None:
    """`bytes`: base64, standard or URL-safe alphabet, with or without padding."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, "base64 text", value)
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(name, "base64 text", value) from None


def encode_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def encode_int64(value: int) -> str:
    return str(value)


def encode_timestamp(epoch_ns: int) -> str:
    """RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protobuf writes it."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return f"{text}Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{text}.{nanos // 1_000:06d}Z"
    return f"{text}.{nanos:09d}Z"
