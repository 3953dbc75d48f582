"""`wakeproxy sandboxes list|info|pause|resume|kill`: the E2B-compatible API from a shell.

The standard library's HTTP client only, so the command starts fast; the table is made by
pure functions (`table`), tested without a server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Final

_MAX_PAGES: Final = 1000  # 100 sandboxes a page: far beyond any one platform's limit
_COLUMNS: Final = (
    ("SANDBOX ID", "sandboxID"),
    ("STATE", "state"),
    ("TEMPLATE", "templateID"),
    ("STARTED", "startedAt"),
    ("ENDS", "endAt"),
)


class CommandError(Exception):
    """Why the command failed, for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """The few calls the command makes, with the key sent as the SDKs send it."""

    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(
                f"--api-url: expected a URL like http://127.0.0.1:8081, got {base_url!r}", 2
            )
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout = timeout

    def call(self, method: str, path: str, body: object = None) -> tuple[Any, Mapping[str, str]]:
        """The decoded JSON answer (None when empty) and the headers; CommandError otherwise."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("X-API-KEY", self._key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                text = response.read()
                headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            raise CommandError(_api_error(exc.code, exc.read())) from None
        except urllib.error.URLError as exc:
            raise CommandError(f"cannot reach the API at {self._base}: {exc.reason}") from None
        except OSError as exc:
            raise CommandError(f"the API at {self._base} did not answer: {exc}") from None
        return (json.loads(text) if text else None), headers


def run(api: Api, action: str, sandbox_id: str | None, as_json: bool) -> str:
    """Carry out `action` and return what to print."""
    if action == "list":
        listed = list_sandboxes(api)
        return json.dumps(listed, indent=2) if as_json else table(listed)
    assert sandbox_id is not None
    quoted = urllib.parse.quote(sandbox_id, safe="")
    if action == "info":
        detail, _ = api.call("GET", f"/sandboxes/{quoted}")
        return json.dumps(detail, indent=2) if as_json else details(detail)
    if action == "pause":
        api.call("POST", f"/sandboxes/{quoted}/pause")
    elif action == "resume":
        api.call("POST", f"/sandboxes/{quoted}/resume", {})
    elif action == "kill":
        api.call("DELETE", f"/sandboxes/{quoted}")
    else:
        raise CommandError(f"unknown action {action!r}", 2)
    done = {"pause": "paused", "resume": "resumed", "kill": "killed"}[action]
    return (
        json.dumps({"sandboxID": sandbox_id, "result": done}) if as_json else f"{sandbox_id} {done}"
    )


def list_sandboxes(api: Api) -> list[dict[str, Any]]:
    """Every sandbox, running and paused, following the API's pages."""
    found: list[dict[str, Any]] = []
    token = ""
    for _ in range(_MAX_PAGES):
        query = "?limit=100" + (f"&nextToken={urllib.parse.quote(token)}" if token else "")
        page, headers = api.call("GET", f"/v2/sandboxes{query}")
        found.extend(page or [])
        token = {k.lower(): v for k, v in headers.items()}.get("x-next-token", "")
        if not token:
            return found
    raise CommandError(f"the API kept paging after {_MAX_PAGES} pages")


def table(sandboxes: Sequence[Mapping[str, Any]]) -> str:
    """One line per sandbox under a header, columns padded to their widest cell."""
    rows = [[title for title, _ in _COLUMNS]]
    rows += [[str(sandbox.get(key, "")) for _, key in _COLUMNS] for sandbox in sandboxes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def details(detail: Mapping[str, Any]) -> str:
    """`key: value` lines, nested objects flattened to `outer.inner`."""
    lines: list[str] = []
    _flatten("", detail, lines)
    width = max((len(line.partition("\0")[0]) for line in lines), default=0)
    return "\n".join(
        f"{name + ':':<{width + 1}} {value}"
        for name, _, value in (line.partition("\0") for line in lines)
    )


def _flatten(prefix: str, value: object, lines: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if "token" not in key.lower():  # access tokens are secrets; --json shows them
                _flatten(f"{prefix}{key}.", item, lines)
        return
    lines.append(f"{prefix.rstrip('.')}\0{value}")


def _api_error(status: int, body: bytes) -> str:
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")[:200]
    hint = " (set E2B_API_KEY or --api-key-file)" if status == 401 else ""
    return f"the API answered {status}: {message or 'no message'}{hint}"
