"""The relay's pure helpers."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.http_relay import origin_form


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("//double/%2F?a=1&a=2", "//double/%2F?a=1&a=2"),
        ("http://3000-abc.localhost:8080/p/../q?x=%20", "/p/../q?x=%20"),
        ("http://3000-abc.localhost", "/"),
        ("http://3000-abc.localhost?x=1", "/?x=1"),
        ("HTTP://h//x", "//x"),
    ],
)
def test_origin_form_keeps_path_and_query_byte_for_byte(target: str, expected: str) -> None:
    assert origin_form(target) == expected
