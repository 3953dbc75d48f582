from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wakeproxy.config import ProxyConfig
from wakeproxy.errors import ConfigError
from wakeproxy.proxy.headers import (
    HOP_BY_HOP,
    ForwardedRules,
    downstream_response_headers,
)

UNTRUSTED = ForwardedRules([])
TRUSTED = ForwardedRules(["10.0.0.0/8", "fd00::/8", "192.0.2.7"])
LB = "10.1.2.3"
CLIENT = "203.0.113.9"


def encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers]


def decoded(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode(), value.decode()) for name, value in headers]


def upstream(
    headers: list[tuple[str, str]],
    rules: ForwardedRules = UNTRUSTED,
    peer: str | None = CLIENT,
) -> list[tuple[str, str]]:
    return decoded(
        rules.upstream_request_headers(encoded(headers), peer, b"http", b"3000-abc.localhost:8080")
    )


def downstream(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return decoded(downstream_response_headers(encoded(headers)))


HOP_BY_HOP_NAMES = {name.decode() for name in HOP_BY_HOP}


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


def names(headers: list[tuple[str, str]]) -> set[str]:
    return {n.lower() for n, _ in headers}


# Request: what is dropped and what is kept


def test_request_drops_hop_by_hop_and_keeps_the_rest_in_order() -> None:
    incoming = [
        ("Host", "3000-abc.localhost:8080"),
        ("Connection", "keep-alive, Upgrade"),
        ("Keep-Alive", "timeout=5"),
        ("Accept", "text/html"),
        ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Anything", "x"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Content-Length", "5"),
        ("E2b-Sandbox-Id", "abc"),
        ("E2b-Sandbox-Port", "3000"),
        ("Expect", "100-continue"),
    ]
    assert upstream(incoming)[:6] == [
        ("Host", "3000-abc.localhost:8080"),
        ("Accept", "text/html"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Content-Length", "5"),
        ("E2b-Sandbox-Id", "abc"),
    ]


def test_request_drops_headers_named_by_connection_in_any_case() -> None:
    incoming = [
        ("connection", "X-Secret ,, x-other"),
        ("x-secret", "1"),
        ("X-OTHER", "2"),
        ("X-Kept", "3"),
    ]
    result = upstream(incoming)
    assert names(result) & {"x-secret", "x-other", "connection"} == set()
    assert values(result, "X-Kept") == ["3"]


def test_connection_cannot_strip_host_or_content_length() -> None:
    incoming = [("Host", "h"), ("Content-Length", "3"), ("Connection", "Host, Content-Length")]
    result = upstream(incoming)
    assert values(result, "Host") == ["h"]
    assert values(result, "Content-Length") == ["3"]


def test_host_is_kept_as_sent_or_added_when_absent() -> None:
    assert values(upstream([("host", "Original:8080")]), "Host") == ["Original:8080"]
    assert upstream([("Accept", "*/*")])[0] == ("Host", "3000-abc.localhost:8080")


# X-Forwarded-*


def test_untrusted_peer_replaces_forwarded_headers() -> None:
    incoming = [
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=1.1.1.1"),
        ("X-Real-IP", "1.1.1.1"),
    ]
    result = upstream(incoming, UNTRUSTED)
    assert values(result, "X-Forwarded-For") == [CLIENT]
    assert values(result, "X-Forwarded-Proto") == ["http"]
    assert values(result, "X-Forwarded-Host") == ["3000-abc.localhost:8080"]
    assert names(result) & {"forwarded", "x-real-ip"} == set()


def test_untrusted_peer_inside_no_configured_network_is_not_believed() -> None:
    result = upstream([("X-Forwarded-For", "1.1.1.1")], TRUSTED, peer=CLIENT)
    assert values(result, "X-Forwarded-For") == [CLIENT]


def test_trusted_peer_extends_the_chain_and_keeps_its_claims() -> None:
    incoming = [
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("x-forwarded-for", "3.3.3.3"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example.com"),
        ("Forwarded", "for=1.1.1.1"),
    ]
    result = upstream(incoming, TRUSTED, peer=LB)
    assert values(result, "X-Forwarded-For") == [f"1.1.1.1, 2.2.2.2, 3.3.3.3, {LB}"]
    assert values(result, "X-Forwarded-Proto") == ["https"]
    assert values(result, "X-Forwarded-Host") == ["app.example.com"]
    assert values(result, "Forwarded") == ["for=1.1.1.1"]


def test_trusted_peer_without_claims_gets_ours() -> None:
    result = upstream([], TRUSTED, peer="192.0.2.7")
    assert values(result, "X-Forwarded-For") == ["192.0.2.7"]
    assert values(result, "X-Forwarded-Proto") == ["http"]
    assert values(result, "X-Forwarded-Host") == ["3000-abc.localhost:8080"]


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.9.9.9", True),
        ("::ffff:10.0.0.1", True),
        ("fd12::1", True),
        ("192.0.2.8", False),
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
        (None, False),
    ],
)
def test_is_trusted(peer: str | None, trusted: bool) -> None:
    assert TRUSTED.is_trusted(peer) is trusted


def test_no_peer_address_adds_no_forwarded_for() -> None:
    result = upstream([("X-Forwarded-For", "1.1.1.1")], TRUSTED, peer=None)
    assert values(result, "X-Forwarded-For") == []
    assert values(result, "X-Forwarded-Proto") == ["http"]


def test_bad_trusted_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"proxy\.trusted_proxies") as caught:
        ForwardedRules(["10.0.0.0/8", "10.0.0.1/8", "nonsense"])
    assert len(caught.value.problems) == 2


def test_from_config() -> None:
    rules = ForwardedRules.from_config(ProxyConfig(trusted_proxies=("127.0.0.1",)))
    assert rules.is_trusted("127.0.0.1")
    assert not rules.is_trusted("127.0.0.2")


# WebSocket


WS_HANDSHAKE = [
    ("Host", "3000-abc.localhost"),
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Extensions", "permessage-deflate"),
    ("Sec-WebSocket-Protocol", "graphql-ws, json"),
    ("sec-websocket-protocol", "v2.Chat"),
    ("Origin", "http://3000-abc.localhost"),
    ("Cookie", "s=1"),
]


def test_a_websocket_handshake_keeps_its_own_headers_but_not_the_upgrade() -> None:
    # The tunnel writes Connection: Upgrade and Upgrade: websocket itself; the key,
    # version, extensions and subprotocols pass, so the endpoints negotiate end to end.
    result = upstream(WS_HANDSHAKE)
    assert values(result, "Sec-WebSocket-Key") == ["dGhlIHNhbXBsZSBub25jZQ=="]
    assert values(result, "sec-websocket-protocol") == ["graphql-ws, json", "v2.Chat"]
    assert names(result) >= {"host", "origin", "cookie", "x-forwarded-for"}
    assert names(result) & {"connection", "upgrade"} == set()


# Response


def test_response_keeps_set_cookies_in_order_and_drops_hop_by_hop() -> None:
    incoming = [
        ("Set-Cookie", "a=1; Path=/"),
        ("Connection", "keep-alive, X-Internal"),
        ("Content-Length", "12"),
        ("Transfer-Encoding", "chunked"),
        ("X-Internal", "secret"),
        ("Set-Cookie", "b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"),
        ("Set-Cookie", "d=4"),
        ("Content-Type", "text/plain"),
    ]
    assert downstream(incoming) == [
        ("Set-Cookie", "a=1; Path=/"),
        ("Content-Length", "12"),
        ("Set-Cookie", "b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
        ("Set-Cookie", "d=4"),
        ("Content-Type", "text/plain"),
    ]


def test_response_connection_cannot_strip_content_length() -> None:
    result = downstream([("Content-Length", "1"), ("Connection", "content-length")])
    assert result == [("Content-Length", "1")]


# Property: no hop-by-hop header ever survives


@st.composite
def any_case(draw: st.DrawFn, name: str) -> str:
    upper = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True))


token_chars = st.sampled_from("abcxyz-0123456789")
other_names = st.text(token_chars, min_size=1, max_size=12)
header_names = st.one_of(
    st.sampled_from(sorted(HOP_BY_HOP_NAMES)),
    other_names.map(lambda n: f"proxy-{n}"),
    st.sampled_from(["host", "content-length", "set-cookie", "expect", "x-forwarded-for"]),
    other_names,
).flatmap(any_case)
header_lists = st.lists(st.tuples(header_names, st.text(max_size=20)), max_size=15)


def nominated_by(headers: list[tuple[str, str]]) -> set[str]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    } - {"host", "content-length"}


# Headers the proxy writes itself; a Connection token drops the incoming copy only.
OWN_HEADERS = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def assert_no_hop_by_hop(
    incoming: list[tuple[str, str]], outgoing: list[tuple[str, str]], own: set[str]
) -> None:
    for name in names(outgoing):
        assert name not in HOP_BY_HOP_NAMES
        assert not name.startswith("proxy-")
        assert name in own or name not in nominated_by(incoming)


@given(
    headers=header_lists,
    connection=st.lists(header_names, max_size=4),
    connection_name=any_case("connection"),
    peer=st.sampled_from([LB, CLIENT, None]),
)
def test_no_hop_by_hop_header_survives(
    headers: list[tuple[str, str]],
    connection: list[str],
    connection_name: str,
    peer: str | None,
) -> None:
    incoming = [*headers, (connection_name, ", ".join(connection))]
    request = decoded(TRUSTED.upstream_request_headers(encoded(incoming), peer, b"https", b"h"))
    assert_no_hop_by_hop(incoming, request, OWN_HEADERS)
    assert "expect" not in names(request)
    assert len(values(request, "X-Forwarded-For")) == (peer is not None)
    assert_no_hop_by_hop(incoming, downstream(incoming), set())


@given(headers=header_lists)
def test_headers_that_are_not_hop_by_hop_survive_in_order(headers: list[tuple[str, str]]) -> None:
    expected = [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP_NAMES | nominated_by(headers)
        and not name.lower().startswith("proxy-")
    ]
    assert downstream(headers) == expected
