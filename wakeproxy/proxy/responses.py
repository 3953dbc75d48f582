"""How the proxy answers when it does not forward: one place maps errors to responses.

API clients get JSON with `code` and `message` (the E2B SDKs read both); browser
navigations get a small HTML page. Pure: no I/O, so it is tested without a server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from wakeproxy.errors import NotAllowed, NotFound, ProxyError
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
# Where one status covers situations a person handles differently.
_REASON_TITLES = {
    "sandbox_not_found": "Sandbox not found",
    "port_not_open": "Nothing is listening on this port",
}
# What a person at the browser can do; `{id}` is the sandbox id.
_HINTS = {
    "bad_request": "Preview addresses look like http://<port>-<sandbox id>.<domain>/.",
    "sandbox_not_found": "Check the address: the sandbox id may be mistyped, "
    "or the sandbox was killed or has expired.",
    "sandbox_paused": 'To resume it, call Sandbox.connect("{id}") with the E2B SDK, '
    "then reload this page.",
    "port_not_open": "Start a server on this port inside the sandbox, then reload this page.",
}


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def for_sdk_port(error: ProxyError) -> ProxyError:
    """The answer for envd's port, where only the E2B SDKs talk and map statuses to
    exceptions: E2B's proxy answers 502 "…was not found" for a sandbox that is paused
    with auto-resume off, and both SDKs' `is_running()` return False only for that. The
    friendlier 409 stays for preview traffic.

    Every other answer already means to the SDKs what it says (docs/design.md, "Responses
    the proxy makes itself"): 502 "…was not found" is a sandbox not running, 502 "…port is
    not open" a sandbox unreachable, 503 unavailable (retried with its Retry-After), 504 a
    timeout, 400 an invalid argument.
    """
    if isinstance(error, NotAllowed):
        mapped = NotFound(
            "The sandbox was not found: it is paused and auto-resume is off; "
            "Sandbox.connect() resumes it",
            sandbox_id=error.sandbox_id,
        )
        mapped.held_for = error.held_for
        return mapped
    return error


def wants_html(headers: Mapping[str, str]) -> bool:
    """True for a browser navigation: the only case where a page beats JSON."""
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode.lower() == "navigate"
    accept = headers.get("Accept", "")
    return "text/html" in accept and headers.get("User-Agent", "").startswith("Mozilla/")


def render_error(error: ProxyError, *, html: bool, request_id: str | None = None) -> Rendered:
    headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
    if error.retry_after is not None:
        headers.append(("Retry-After", str(max(1, math.ceil(error.retry_after)))))
    if html:
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        return Rendered(error.status, tuple(headers), _error_page(error, request_id))
    document: dict[str, object] = {"code": error.status, "message": error.message}
    if error.envd_body:
        headers.append(("Content-Type", "application/json"))
        return Rendered(error.status, tuple(headers), json.dumps(document).encode())
    document["reason"] = error.reason
    if error.sandbox_id is not None:
        document["sandboxId"] = error.sandbox_id
    if request_id is not None:
        document["requestId"] = request_id
    headers.append(("Content-Type", "application/json"))
    return Rendered(error.status, tuple(headers), json.dumps(document).encode())


def _error_page(error: ProxyError, request_id: str | None) -> bytes:
    title = _REASON_TITLES.get(error.reason) or _TITLES.get(error.status, "Proxy error")
    details = [f"Sandbox: {error.sandbox_id}"] if error.sandbox_id else []
    if request_id is not None:
        details.append(f"Request id: {request_id}")
    detail = " · ".join(details)
    hint = _HINTS.get(error.reason, "")
    if not hint and error.retry_after is not None:
        hint = "This page does not reload by itself: reload it in a few seconds."
    return page(
        title=title,
        message=error.message,
        detail=detail,
        hint=hint.replace("{id}", error.sandbox_id or "<sandbox id>"),
    )
