"""Request ids and the client address behind trusted proxies: pure functions of headers."""

from __future__ import annotations

import pytest

from wakeproxy.proxy.headers import ForwardedRules
from wakeproxy.proxy.requestid import RequestIds


def test_made_ids_are_a_per_process_prefix_and_a_counter() -> None:
    ids = RequestIds(b"cafe")
    assert [ids.new(), ids.new()] == [b"cafe00000001", b"cafe00000002"]
    assert RequestIds().new()[:12] != RequestIds().new()[:12]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"edge-1:2/3+4=5@x.y_z", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"has space", False),
        (b'"quoted"', False),
        (b"ctl\x01", False),
        ("ünï".encode(), False),
    ],
)
def test_a_trusted_peers_id_is_kept_only_when_short_and_plain(value: bytes, kept: bool) -> None:
    ids = RequestIds(b"p")
    headers = [(b"Accept", b"*/*"), (b"x-request-id", value)]
    assert (ids.for_request(headers, trusted=True) == value) is kept
    assert ids.for_request(headers, trusted=False) != value


def test_the_client_is_the_right_most_untrusted_forwarded_address() -> None:
    rules = ForwardedRules(["10.0.0.0/8"])
    chain = [(b"X-Forwarded-For", b"198.51.100.7, 203.0.113.9"), (b"x-forwarded-for", b"10.1.1.1")]
    assert rules.client_address(chain, "10.0.0.2") == "203.0.113.9"
    assert rules.client_address(chain, "192.0.2.1") == "192.0.2.1"  # untrusted peer
    assert rules.client_address([(b"X-Forwarded-For", b"10.1.1.1")], "10.0.0.2") == "10.1.1.1"
    assert rules.client_address([], "10.0.0.2") == "10.0.0.2"
    assert rules.client_address([], None) is None


def test_the_clients_request_id_never_goes_upstream_beside_ours() -> None:
    rules = ForwardedRules([])
    headers = [(b"X-Request-Id", b"client"), (b"Accept", b"*/*")]
    sent = rules.upstream_request_headers(headers, "192.0.2.1", b"http", b"h", b"ours")
    assert [value for name, value in sent if name.lower() == b"x-request-id"] == [b"ours"]
