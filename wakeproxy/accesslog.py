"""The access log: one structured line per request, written after the request is done.

A request only appends a tuple to a list. A moment later (or once many are pending) the
lines are made, in the shape of the other logs (`log.format`: JSON by default, or text;
logger `wakeproxy.access`, message `request`), and written with one write, so neither
formatting nor the write to stderr happens inside a request. Going through `logging`
would cost a `LogRecord` and a locked write per line, and `json.dumps` a dict per line,
several times what the hand-made JSON line below costs (it is the same JSON).

Fields: `method`, `path` (no query string: queries carry tokens), `status`, `bytes` (the
response body), `duration` (seconds), and when known `sandbox` and `port`. A request
held for a wake also has `held` (seconds) and `wake_trigger` (true when its arrival
started the wake, whether it was then forwarded or not); a WebSocket session has
`websocket: true` and lasts as long as the session. A request the proxy answered itself
has `reason`, the same word as its JSON error's `reason` and the label of
`wakeproxy_rejected_total` (or of the relay's failure: `upstream_closed`, `port_not_open`,
`upstream_timeout`). Every line has `request_id` (the `X-Request-Id` sent upstream and in
the proxy's own answers), `client` (the peer, or behind `proxy.trusted_proxies` the
client they name in X-Forwarded-For), and when the request had them `host` and
`user_agent`; the user agent is read from the request's headers when the line is made,
not during the request. `log.access = false` turns the access log off; `log.level` does
not affect it.
"""

from __future__ import annotations

import asyncio
import json.encoder
import sys
import time
from typing import Final, TextIO, TypeAlias

from wakeproxy.logs import text_line

Headers: TypeAlias = list[tuple[bytes, bytes]]

ACCESS_LOGGER: Final = "wakeproxy.access"
_DELAY = 0.1  # seconds a line may wait to be written with others
_BATCH = 512  # pending lines that are written at once

# JSON string quoting, as `json.dumps` does it (ASCII, escapes), without the call around it.
_quote = json.encoder.encode_basestring_ascii
_PREFIX = f', "level": "info", "logger": "{ACCESS_LOGGER}", "msg": "request", "method": '

_Entry: TypeAlias = tuple[
    float, str, str, int, int, float, str | None, int | None, float, bool, bool, str | None,
    bytes, str | None, bytes | None, Headers,
]  # fmt: skip


class AccessLog:
    def __init__(self, fmt: str = "json", stream: TextIO | None = None) -> None:
        """`fmt`: "json" or "text"; `stream`: where lines go (None: stderr at each write)."""
        self._json = fmt == "json"
        self._stream = stream
        self._pending: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None

    def record(
        self,
        method: str,
        path: str,
        status: int,
        body_bytes: int,
        seconds: float,
        sandbox_id: str | None,
        port: int | None,
        held_for: float,
        triggered: bool,
        websocket: bool,
        reason: str | None = None,
        request_id: bytes = b"",
        client: str | None = None,
        host: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Note one finished request; its line is written within `_DELAY` seconds."""
        pending = self._pending
        pending.append(
            (time.time(), method, path, status, body_bytes, seconds, sandbox_id, port,
             held_for, triggered, websocket, reason, request_id, client, host,
             headers or _NO_HEADERS)
        )  # fmt: skip
        if len(pending) >= _BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_DELAY, self.flush)

    def flush(self) -> None:
        """Write every pending line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        stream = self._stream or sys.stderr
        line = _json_line if self._json else _text_line
        stream.write("".join([line(entry) for entry in pending]))
        stream.flush()


_NO_HEADERS: Headers = []
_USER_AGENT = b"user-agent"


def _user_agent(headers: Headers) -> str | None:
    for name, value in headers:
        if len(name) == 10 and name.lower() == _USER_AGENT:
            return value.decode("latin-1")
    return None


def _json_line(entry: _Entry) -> str:
    """The line `logs.json_line` makes for this entry (equal as JSON), made much faster."""
    (at, method, path, status, body_bytes, seconds, sandbox_id, port,
     held_for, triggered, websocket, reason, request_id, client, host, headers) = entry  # fmt: skip
    # Fixed-point formatting: `round(x, 6)` alone costs more than the rest of the line.
    line = (
        f'{{"ts": {at:.6f}{_PREFIX}{_quote(method)}, "path": {_quote(path)}, '
        f'"status": {status}, "bytes": {body_bytes}, "duration": {seconds:.6f}'
    )
    if sandbox_id is not None:
        line += f', "sandbox": {_quote(sandbox_id)}, "port": {port}'
    if held_for:
        trigger = "true" if triggered else "false"
        line += f', "held": {held_for:.6f}, "wake_trigger": {trigger}'
    if websocket:
        line += ', "websocket": true'
    if reason is not None:
        line += f', "reason": "{reason}"'  # a fixed word of ours, never client input
    # Checked characters (`proxy.requestid`), so no quoting needed.
    line += f', "request_id": "{request_id.decode()}"'
    if client is not None:
        line += f', "client": {_quote(client)}'
    if host is not None:
        line += f', "host": {_quote(host.decode("latin-1"))}'
    user_agent = _user_agent(headers)
    if user_agent is not None:
        line += f', "user_agent": {_quote(user_agent)}'
    return line + "}\n"


def _text_line(entry: _Entry) -> str:
    (at, method, path, status, body_bytes, seconds, sandbox_id, port,
     held_for, triggered, websocket, reason, request_id, client, host, headers) = entry  # fmt: skip
    fields: dict[str, object] = {
        "method": method,
        "path": path,
        "status": status,
        "bytes": body_bytes,
        "duration": round(seconds, 6),
    }
    if sandbox_id is not None:
        fields["sandbox"] = sandbox_id
        fields["port"] = port
    if held_for:
        fields["held"] = round(held_for, 6)
        fields["wake_trigger"] = triggered
    if websocket:
        fields["websocket"] = True
    if reason is not None:
        fields["reason"] = reason
    fields["request_id"] = request_id.decode()
    if client is not None:
        fields["client"] = client
    if host is not None:
        fields["host"] = host.decode("latin-1")
    user_agent = _user_agent(headers)
    if user_agent is not None:
        fields["user_agent"] = user_agent
    return text_line(at, "info", "request", fields) + "\n"
