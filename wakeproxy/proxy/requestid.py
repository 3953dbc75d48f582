"""Request ids: one per request, taken from a trusted front proxy or made here.

The id names a request everywhere it shows: the `X-Request-Id` header sent upstream, the
access-log line, and every answer the proxy makes itself (header and JSON `requestId`). A
client's own `X-Request-Id` is believed only from a peer in `proxy.trusted_proxies`, as
X-Forwarded-For is, and only when it is short and plain (it ends up in logs and JSON);
otherwise it is replaced. Made ids are a random per-process prefix and a counter, in hex:
unique across processes and restarts without a random number or a uuid per request.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Final

from wakeproxy.proxy.headers import Headers

HEADER: Final = b"X-Request-Id"
_NAME: Final = HEADER.lower()
# Letters, digits and the punctuation that ids of common proxies and tracers use; no
# quotes, spaces or controls, so an id is safe in a header, a log line and JSON as is.
_VALID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


class RequestIds:
    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: bytes | None = None) -> None:
        self._prefix = os.urandom(6).hex().encode() if prefix is None else prefix
        self._counter = itertools.count(1)

    def new(self) -> bytes:
        return b"%s%08x" % (self._prefix, next(self._counter))

    def for_request(self, headers: Headers, trusted: bool) -> bytes:
        """The request's id: a trusted peer's well-formed `X-Request-Id`, else a new one."""
        if trusted:
            for name, value in headers:
                if len(name) == len(_NAME) and name.lower() == _NAME:
                    if _VALID.fullmatch(value):
                        return value
                    break
        return self.new()
