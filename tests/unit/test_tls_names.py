"""Which certificate a server name gets (SNI): pure matching, no sockets."""

from __future__ import annotations

import pytest

from wakeproxy.tls import choose, matches


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("eu.example.com", "eu.example.com", True),
        ("eu.example.com", "EU.Example.com.", True),
        ("*.eu.example.com", "3000-abc.eu.example.com", True),
        ("*.eu.example.com", "eu.example.com", False),  # a wildcard is one whole label
        ("*.eu.example.com", "a.b.eu.example.com", False),
        ("*.eu.example.com", ".eu.example.com", False),
        ("eu.example.com", "us.example.com", False),
    ],
)
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_exact_names_win_over_wildcards_and_unknown_names_get_the_default() -> None:
    entries = [("*.example.com",), ("api.example.com",)]
    assert choose(entries, "api.example.com") == 1
    assert choose(entries, "3000-x.example.com") == 0
    assert choose(entries, "other.org") is None
    assert choose(entries, None) is None  # no SNI (an IP literal): the default
