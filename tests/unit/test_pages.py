"""The proxy's own HTML pages: self-contained, small, and saying what is going on."""

from __future__ import annotations

import re
from html import unescape

import pytest

from wakeproxy.errors import NotAllowed, NotFound, PortNotOpen, ProxyError, Unavailable
from wakeproxy.proxy.pages import WAIT_PATH, waiting_page
from wakeproxy.proxy.responses import render_error


def _text(body: bytes) -> str:
    """What a reader sees: the body without tags, style or script."""
    html = body.decode()
    html = re.sub(r"<(style|script)>.*?</\1>", "", html, flags=re.S)
    return unescape(re.sub(r"<[^>]+>", " ", html.split("<body>")[1]))


def _external_references(body: bytes) -> list[str]:
    return re.findall(r"""(?:src|href)=|url\(|@import""", body.decode())


@pytest.mark.parametrize(
    ("error", "title", "hint"),
    [
        (NotFound("The sandbox was not found", sandbox_id="sbx1"), "Sandbox not found", "killed"),
        (
            NotAllowed("Sandbox sbx1 is paused and auto-resume is off", sandbox_id="sbx1"),
            "Sandbox is paused",
            'Sandbox.connect("sbx1")',
        ),
        (PortNotOpen("port is not open", sandbox_id="sbx1"), "Nothing is listening", "Start"),
        (Unavailable("backend down", sandbox_id="sbx1"), "not ready yet", "reload it in"),
    ],
)
def test_error_pages_say_what_which_sandbox_and_what_to_do(
    error: ProxyError, title: str, hint: str
) -> None:
    body = render_error(error, html=True).body
    text = _text(body)
    assert title in text
    assert error.message in text
    assert "Sandbox: sbx1" in text
    assert hint in text
    assert not _external_references(body)
    assert len(body) < 2048


def test_the_waiting_page_polls_with_javascript_and_refreshes_only_without() -> None:
    body = waiting_page("sbx1", 2)
    html = body.decode()
    assert "Sandbox: sbx1" in _text(body)
    assert 'role="status"' in html  # announced by screen readers
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in html
    assert f"fetch('{WAIT_PATH}'" in html
    assert not _external_references(body)
    assert len(body) < 2048
