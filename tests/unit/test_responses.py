import json

import pytest

from wakeproxy.errors import (
    BadSignature,
    NotAllowed,
    NotFound,
    Overloaded,
    PortNotOpen,
    ProxyError,
    RouteError,
)
from wakeproxy.proxy.responses import for_sdk_port, render_error, wants_html


def test_json_error_carries_code_message_and_sandbox() -> None:
    rendered = render_error(NotFound("The sandbox was not found", sandbox_id="abc"), html=False)
    assert rendered.status == 502
    document = json.loads(rendered.body)
    assert document == {
        "code": 502,
        "message": "The sandbox was not found",
        "reason": "sandbox_not_found",
        "sandboxId": "abc",
    }
    assert ("Content-Type", "application/json") in rendered.headers
    assert ("Cache-Control", "no-store") in rendered.headers


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    rendered = render_error(Overloaded("too many held", retry_after=0.2), html=False)
    assert rendered.status == 503
    assert ("Retry-After", "1") in rendered.headers
    rendered = render_error(Overloaded("too many held", retry_after=2.5), html=False)
    assert ("Retry-After", "3") in rendered.headers


def test_no_retry_after_where_waiting_does_not_help() -> None:
    rendered = render_error(RouteError("bad port"), html=False)
    assert not [name for name, _ in rendered.headers if name == "Retry-After"]


def test_html_page_escapes_and_names_the_sandbox() -> None:
    error = NotAllowed("paused <b>now</b>; Sandbox.connect() resumes it", sandbox_id="abc")
    rendered = render_error(error, html=True)
    assert rendered.status == 409
    body = rendered.body.decode()
    assert "&lt;b&gt;now&lt;/b&gt;" in body
    assert "<b>now</b>" not in body
    assert "Sandbox: abc" in body
    assert "Sandbox is paused" in body
    assert "http" not in body.split("<body>")[0].replace("http-equiv", "")  # no external assets


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Sec-Fetch-Mode": "navigate"}, True),
        ({"Sec-Fetch-Mode": "cors", "Accept": "text/html"}, False),
        ({"Accept": "text/html,*/*", "User-Agent": "Mozilla/5.0 (X11)"}, True),
        ({"Accept": "text/html", "User-Agent": "curl/8.0"}, False),
        ({"Accept": "application/json", "User-Agent": "Mozilla/5.0"}, False),
        ({}, False),
    ],
)
def test_wants_html_only_for_browser_navigations(headers: dict[str, str], expected: bool) -> None:
    assert wants_html(headers) is expected


def test_port_not_open_message_is_what_sdks_match() -> None:
    rendered = render_error(PortNotOpen("The sandbox is running but port is not open"), html=False)
    assert "port is not open" in json.loads(rendered.body)["message"]


def test_on_the_sdk_port_a_paused_sandbox_is_the_502_the_sdks_read_as_not_running() -> None:
    paused = NotAllowed("Sandbox abc is paused and auto-resume is off", sandbox_id="abc")
    paused.held_for = 0.5
    mapped = for_sdk_port(paused)
    assert mapped.status == 502
    assert mapped.sandbox_id == "abc"
    assert mapped.held_for == 0.5
    # Both SDKs look for this phrase (e2b.exceptions.SANDBOX_NOT_FOUND_MESSAGE).
    assert "was not found" in mapped.message
    assert "Sandbox.connect()" in mapped.message


@pytest.mark.parametrize(
    "error",
    [
        NotFound("The sandbox was not found", sandbox_id="abc"),
        PortNotOpen("The sandbox is running but port is not open", sandbox_id="abc"),
        Overloaded("too many held", retry_after=2.0),
        RouteError("bad port"),
    ],
)
def test_on_the_sdk_port_other_answers_pass_unchanged(error: ProxyError) -> None:
    assert for_sdk_port(error) is error


def test_a_bad_signature_is_answered_in_envds_own_body() -> None:
    rendered = render_error(BadSignature("signature is already expired"), html=False)
    assert rendered.status == 401
    assert json.loads(rendered.body) == {"code": 401, "message": "signature is already expired"}
