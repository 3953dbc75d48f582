from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from wakeproxy.config import ProxyConfig
from wakeproxy.errors import ConfigError, NoSandboxNamed, RouteError, UnknownHost
from wakeproxy.routing import Router, Target

ID_PATTERN = "[a-z0-9]{1,64}"
CONFIGURED = ("localhost", "example.com", "a.example.com", "Box.Test:8080")
# CONFIGURED as hosts spell them: lower-case, without the port.
DOMAINS = ("localhost", "example.com", "a.example.com", "box.test")
NO_HEADERS: dict[str, str] = {}

ROUTER = Router(CONFIGURED, ID_PATTERN)

ports = st.integers(min_value=1, max_value=65535)
sandbox_ids = st.from_regex(ID_PATTERN, fullmatch=True)
bad_ports = st.one_of(st.integers(max_value=0), st.integers(min_value=65536))
port_suffixes = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))


def e2b(sandbox_id: str, port: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": port}))


@st.composite
def random_case(draw: st.DrawFn, text: str) -> str:
    upper = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))


def route_error(host: str | None, headers: object = NO_HEADERS) -> RouteError:
    """The RouteError (a 400, never UnknownHost) that routing `host` raises."""
    with pytest.raises(RouteError) as caught:
        ROUTER.route(host, headers)  # type: ignore[arg-type]
    assert caught.value.status == 400
    return caught.value


# Properties


@given(
    port=ports,
    sandbox_id=sandbox_ids,
    domain=st.sampled_from(DOMAINS),
    suffix=port_suffixes,
    trailing_dot=st.booleans(),
    data=st.data(),
)
def test_valid_host_round_trips(
    port: int, sandbox_id: str, domain: str, suffix: str, trailing_dot: bool, data: st.DataObject
) -> None:
    name = f"{port}-{sandbox_id}.{domain}" + ("." if trailing_dot else "")
    host = data.draw(random_case(name)) + suffix
    assert ROUTER.route(host, NO_HEADERS) == Target(sandbox_id, port)


@given(
    port=ports,
    sandbox_id=sandbox_ids,
    host=st.sampled_from(
        ["localhost", "LocalHost:8080", "127.0.0.1", "10.1.2.3:80", "[::1]", "[::1]:8080", "::1"]
        + [f"sandbox.{d}" for d in DOMAINS]
        + list(DOMAINS)
    ),
)
def test_valid_headers_on_base_host_round_trip(port: int, sandbox_id: str, host: str) -> None:
    assert ROUTER.route(host, e2b(sandbox_id, str(port))) == Target(sandbox_id, port)


@given(port=bad_ports, sandbox_id=sandbox_ids, domain=st.sampled_from(DOMAINS))
def test_port_out_of_range_in_host_is_route_error(port: int, sandbox_id: str, domain: str) -> None:
    route_error(f"{port}-{sandbox_id}.{domain}")


@given(port=bad_ports, sandbox_id=sandbox_ids)
def test_port_out_of_range_in_header_is_route_error(port: int, sandbox_id: str) -> None:
    route_error("localhost", e2b(sandbox_id, str(port)))


@given(
    port=ports,
    # Hosts are lower-cased, so only an id whose lower case still mismatches is bad there.
    sandbox_id=st.text().filter(lambda s: re.fullmatch(ID_PATTERN, s.lower()) is None),
    domain=st.sampled_from(DOMAINS),
)
def test_bad_id_in_host_is_route_error(port: int, sandbox_id: str, domain: str) -> None:
    route_error(f"{port}-{sandbox_id}.{domain}")


@given(
    port=ports, sandbox_id=st.text().filter(lambda s: re.fullmatch(ID_PATTERN, s.strip()) is None)
)
def test_bad_id_in_header_is_route_error(port: int, sandbox_id: str) -> None:
    route_error("127.0.0.1", e2b(sandbox_id, str(port)))


host_alphabet = st.sampled_from("0123456789abzAZ-.:[]%_ \x00é")
hosts = st.one_of(
    st.none(),
    st.text(),
    st.text(host_alphabet),
    st.builds(
        lambda a, b: a + b,
        st.text(host_alphabet, max_size=12),
        st.sampled_from([".localhost", ".example.com", ".a.example.com", ":8080", "]:1"]),
    ),
)


@given(
    host=hosts,
    headers=st.dictionaries(
        st.sampled_from(["e2b-sandbox-id", "E2B-SANDBOX-PORT", "x"]), st.text()
    ),
)
def test_arbitrary_host_routes_or_raises_route_error(
    host: str | None, headers: dict[str, str]
) -> None:
    try:
        target = ROUTER.route(host, headers)
    except RouteError:  # UnknownHost included
        return
    assert re.fullmatch(ID_PATTERN, target.sandbox_id)
    assert 1 <= target.port <= 65535


@given(host=st.one_of(st.text("0123456789.", max_size=20), st.ip_addresses(v=4).map(str)))
def test_ipv4_base_hosts_are_exactly_what_ipaddress_accepts(host: str) -> None:
    name = host.removesuffix(".")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        with pytest.raises(RouteError):
            ROUTER.route(host, e2b("abc", "80"))
    else:
        assert ROUTER.route(host, e2b("abc", "80")) == Target("abc", 80)


# Host routing


def test_multiple_domains_each_route() -> None:
    router = Router(["sandboxes.example.org", "e2b.local"], ID_PATTERN)
    assert router.route("3000-abc.sandboxes.example.org", NO_HEADERS) == Target("abc", 3000)
    assert router.route("49983-x1.e2b.local", NO_HEADERS) == Target("x1", 49983)


def test_nested_domains_prefer_the_longest() -> None:
    assert ROUTER.route("80-abc.a.example.com", NO_HEADERS) == Target("abc", 80)
    assert ROUTER.route("80-abc.example.com", NO_HEADERS) == Target("abc", 80)


def test_host_case_and_port_and_trailing_dot_are_ignored() -> None:
    assert ROUTER.route("3000-ABC.Box.Test.:8080", NO_HEADERS) == Target("abc", 3000)


def test_label_splits_at_first_dash() -> None:
    router = Router(["localhost"], "[a-z0-9-]{1,64}")
    assert router.route("3000-my-box.localhost", NO_HEADERS) == Target("my-box", 3000)


def test_host_wins_over_e2b_headers() -> None:
    assert ROUTER.route("3000-abc.localhost", e2b("other", "80")) == Target("abc", 3000)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("0-abc.localhost", "port '0' is out of range 1-65535"),
        ("65536-abc.localhost", "port '65536' is out of range 1-65535"),
        ("03000-abc.localhost", "port '03000' has a leading zero"),
        ("+300-abc.localhost", "port '+300' is not a decimal number"),
        ("x3000-abc.localhost", "port 'x3000' is not a decimal number"),
        ("3000-abc_d.localhost", "sandbox id 'abc_d' does not match [a-z0-9]{1,64}"),
        (f"3000-{'a' * 65}.localhost", "does not match [a-z0-9]{1,64}"),
        ("3000abc.localhost", "host label '3000abc' is not <port>-<sandboxId>"),
        ("3000-.localhost", "host label '3000-' is not <port>-<sandboxId>"),
        ("-abc.localhost", "host label '-abc' is not <port>-<sandboxId>"),
        ("3000-abc.deep.example.com", "sandbox id 'abc.deep' does not match"),
        ("3000-abc.localhost:http", "malformed port 'http'"),
        ("", "no Host header"),
        (None, "no Host header"),
        (".", "empty name"),
        ("3000-ä.localhost", "not ASCII"),
        ("[::1", "is not [<IPv6 address>]"),
        ("[::1]x", "is not [<IPv6 address>]"),
        ("[1.2.3.4]", "no IPv6 address between its brackets"),
        ("a" * 254, "longer than 253"),
    ],
)
def test_malformed_host_says_what_is_wrong(host: str | None, message: str) -> None:
    error = route_error(host)
    assert error.status == 400
    assert message in error.message


def test_port_error_carries_the_sandbox_id() -> None:
    assert route_error("0-abc.localhost").sandbox_id == "abc"


@pytest.mark.parametrize(
    "host", ["example.net", "3000-abc.example.net", "3000-abc.localhost.evil", "xexample.com"]
)
def test_foreign_host_is_unknown(host: str) -> None:
    with pytest.raises(UnknownHost) as caught:
        ROUTER.route(host, e2b("abc", "3000"))
    assert caught.value.status == 404
    assert "localhost, example.com, a.example.com, box.test" in caught.value.message


# Header routing on base hosts


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "[2001:DB8::1]",
        "::1",
        "example.com",
        "sandbox.example.com",
        "sandbox.box.test:8080",
        "box.test",
    ],
)
def test_base_hosts_route_by_headers(host: str) -> None:
    assert ROUTER.route(host, e2b("abc", "49983")) == Target("abc", 49983)


def test_localhost_is_a_base_host_even_when_not_configured() -> None:
    router = Router(["example.com"], ID_PATTERN)
    assert router.route("localhost:3000", e2b("abc", "80")) == Target("abc", 80)


def test_header_names_are_case_insensitive_in_a_plain_dict() -> None:
    headers = {"e2b-sandbox-id": "abc", "E2B-SANDBOX-PORT": "8080"}
    assert ROUTER.route("localhost", headers) == Target("abc", 8080)


def test_header_values_keep_their_case_and_lose_whitespace() -> None:
    router = Router(["localhost"], "[A-Za-z0-9]+")
    assert router.route("localhost", e2b(" AbC ", " 80 ")) == Target("AbC", 80)


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        ({"E2b-Sandbox-Port": "80"}, "missing header E2b-Sandbox-Id:"),
        ({"E2b-Sandbox-Id": "abc"}, "missing header E2b-Sandbox-Port:"),
        ({}, "missing header E2b-Sandbox-Id and E2b-Sandbox-Port:"),
    ],
)
def test_missing_header_on_base_host_is_named(headers: dict[str, str], missing: str) -> None:
    assert route_error("localhost", headers).message.startswith(missing)
    # A signed file URL may still name the sandbox (proxy/signed.py); nothing else does.
    assert isinstance(route_error("localhost", headers), NoSandboxNamed)


def test_bad_header_values_name_the_header() -> None:
    assert "in the E2b-Sandbox-Port header" in route_error("localhost", e2b("abc", "0")).message
    assert "in the E2b-Sandbox-Id header" in route_error("localhost", e2b("ABC", "80")).message
    assert "does not match" in route_error("localhost", e2b("", "80")).message


def test_empty_id_is_refused_even_if_the_pattern_allows_it() -> None:
    router = Router(["localhost"], "[a-z]*")
    with pytest.raises(RouteError, match="sandbox id ''"):
        router.route("localhost", e2b("", "80"))


# Construction


def test_from_config_uses_domains_and_pattern() -> None:
    router = Router.from_config(
        ProxyConfig(domains=("Example.COM.:8080",), sandbox_id_pattern="[a-z]+")
    )
    assert router.domains == ("example.com",)
    assert router.route("3000-abc.example.com", NO_HEADERS) == Target("abc", 3000)
    with pytest.raises(RouteError, match=r"does not match \[a-z\]\+"):
        router.route("3000-abc1.example.com", NO_HEADERS)


def test_bad_id_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"proxy\.sandbox_id_pattern"):
        Router(["localhost"], "[a-z")


@pytest.mark.parametrize(
    "domain", ["", "http://example.com", "exa mple.com", "example.com/x", "bücher.de"]
)
def test_bad_domain_is_a_config_error(domain: str) -> None:
    with pytest.raises(ConfigError, match=r"proxy\.domains"):
        Router([domain], ID_PATTERN)


def test_ip_domain_and_duplicate_domains_are_accepted() -> None:
    router = Router(["127.0.0.1.nip.io", "localhost:8080", "LOCALHOST"], ID_PATTERN)
    assert router.domains == ("127.0.0.1.nip.io", "localhost")
    assert router.route("80-abc.127.0.0.1.nip.io", NO_HEADERS) == Target("abc", 80)
