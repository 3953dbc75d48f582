"""How the proxy answers when it does not forward: one place maps errors to responses.

API clients get JSON with `code` and `message` (the E2B SDKs read both); browser
navigations get a small HTML page. Pure: no I/O, so it is tested without a server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from wakeproxy.errors import ProxyError
from wakeproxy.proxy.pages import page

_TITLES = {
    400: "Bad request",
    403: "Access denied",
    404: "Unknown host",
    409: "Sandbox is paused",
    502: "Sandbox not reachable",
    503: "Sandbox is not ready yet",
    504: "Sandbox did not answer in time",
}


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def wants_html(headers: Mapping[str, str]) -> bool:
    """True for a browser navigation: the only case where a page beats JSON."""
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode.lower() == "navigate"
    accept = headers.get("Accept", "")
    return "text/html" in accept and headers.get("User-Agent", "").startswith("Mozilla/")


def render_error(error: ProxyError, *, html: bool) -> Rendered:
    headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
    if error.retry_after is not None:
        headers.append(("Retry-After", str(max(1, math.ceil(error.retry_after)))))
    if html:
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        title = _TITLES.get(error.status, "Proxy error")
        detail = f"Sandbox: {error.sandbox_id}" if error.sandbox_id else ""
        return Rendered(
            error.status, tuple(headers), page(title=title, message=error.message, detail=detail)
        )
    document: dict[str, object] = {
        "code": error.status,
        "message": error.message,
        "reason": error.reason,
    }
    if error.sandbox_id is not None:
        document["sandboxId"] = error.sandbox_id
    headers.append(("Content-Type", "application/json"))
    return Rendered(error.status, tuple(headers), json.dumps(document).encode())
