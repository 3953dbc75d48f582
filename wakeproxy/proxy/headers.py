"""Which headers cross the proxy, in each direction.

Hop-by-hop headers describe one connection, not the message (RFC 9110 §7.6.1), so
the proxy never forwards them: the fixed `HOP_BY_HOP` set, every ``Proxy-*`` header,
and every header named in the message's own ``Connection`` header.

``X-Forwarded-For``/``-Proto``/``-Host`` are believed only from a trusted proxy (a
front load balancer listed in ``proxy.trusted_proxies``); from anyone else they are
replaced, so an upstream never sees a client's claim about its own address.

Headers are ``(name, value)`` pairs in wire order, so repeated headers (Set-Cookie,
X-Forwarded-For) stay separate and ordered. Names compare case-insensitively and
are passed on as spelled. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wakeproxy.errors import ConfigError

if TYPE_CHECKING:
    from wakeproxy.config import ProxyConfig

Headers = list[tuple[str, str]]

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Lower-case names that are never forwarded (besides ``proxy-*`` and Connection's tokens)."""

# A Connection header may name any header as hop-by-hop. Honouring that for these
# would let a client strip the Host the upstream routes on, or the framing of a body.
_NEVER_NOMINATED = frozenset({"host", "content-length"})

# The proxy answers "Expect: 100-continue" itself, so the upstream must not also.
_REQUEST_ONLY = frozenset({"expect", "x-forwarded-for"})

# Claims about the client that only a trusted proxy may make. Forwarded and
# X-Real-IP are not rebuilt here, only passed on from a trusted proxy; some
# upstream apps believe them.
_CLIENT_CLAIMS = frozenset({"x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"})

# The WebSocket client library writes its own handshake; the subprotocols travel
# separately, see `websocket_protocols`.
_WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)

_REQUEST_DROPS: dict[tuple[bool, bool], frozenset[str]] = {
    (trusted, websocket): HOP_BY_HOP
    | _REQUEST_ONLY
    | (frozenset() if trusted else _CLIENT_CLAIMS)
    | (_WEBSOCKET_HANDSHAKE if websocket else frozenset())
    for trusted in (False, True)
    for websocket in (False, True)
}


class ForwardedRules:
    """Builds upstream request headers, trusting X-Forwarded-* only from `trusted_proxies`.

    `trusted_proxies` are CIDRs or single addresses; a malformed one raises `ConfigError`.
    """

    __slots__ = ("_networks",)

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        problems: list[tuple[str, str]] = []
        for cidr in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(cidr.strip()))
            except ValueError as error:
                problems.append(("proxy.trusted_proxies", f"{cidr!r}: {error}"))
        if problems:
            raise ConfigError(problems)
        self._networks = tuple(networks)

    @classmethod
    def from_config(cls, config: ProxyConfig) -> ForwardedRules:
        return cls(config.trusted_proxies)

    def is_trusted(self, peer_ip: str | None) -> bool:
        """Whether the connection's peer is a proxy whose X-Forwarded-* claims count."""
        if not self._networks or peer_ip is None:
            return False
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def upstream_request_headers(
        self,
        headers: Iterable[tuple[str, str]],
        peer_ip: str | None,
        scheme: str,
        host: str,
        *,
        websocket: bool = False,
    ) -> Headers:
        """The headers to send upstream for a client request.

        `peer_ip` is the connection's peer (None for a unix socket: nothing is added
        to X-Forwarded-For then), `scheme` and `host` are what the client used; the
        client's Host header is kept as sent, so the upstream sees the original host.
        With `websocket`, the handshake headers are left to the WebSocket client.
        """
        pairs = list(headers)  # read twice: Connection's tokens first
        trusted = self.is_trusted(peer_ip)
        drop = _REQUEST_DROPS[trusted, websocket]
        nominated = _connection_tokens(pairs)
        if nominated:
            drop = drop | (nominated - _NEVER_NOMINATED)
        kept = [(name, value) for name, value in pairs if not _dropped(name.lower(), drop)]
        return _add_forwarded(kept, pairs, trusted, peer_ip, scheme, host)


def downstream_response_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """The upstream response's headers minus hop-by-hop ones; framing is the caller's."""
    pairs = list(headers)
    drop = HOP_BY_HOP
    nominated = _connection_tokens(pairs)
    if nominated:
        drop = drop | (nominated - _NEVER_NOMINATED)
    return [(name, value) for name, value in pairs if not _dropped(name.lower(), drop)]


WAIT_HEADER = "Wakeproxy-Wait"
"""On a response to a request that was held while its sandbox woke: the seconds it was held."""


def wait_headers(held_for: float) -> Headers:
    """What a response that was held for a wake says about it, so clients can see cold
    starts: ``Wakeproxy-Wait: 1.234`` (seconds), and the same as a ``Server-Timing``
    entry, which browsers' developer tools show next to the request's own timings."""
    return [
        (WAIT_HEADER, f"{held_for:.3f}"),
        ("Server-Timing", f'wake;dur={held_for * 1000:.1f};desc="sandbox wake"'),
    ]


def websocket_protocols(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The subprotocols a WebSocket client offered, in its order of preference."""
    return tuple(
        token
        for name, value in headers
        if name.lower() == "sec-websocket-protocol"
        for token in _list_tokens(value)
    )


def _add_forwarded(
    kept: Headers,
    incoming: Headers,
    trusted: bool,
    peer_ip: str | None,
    scheme: str,
    host: str,
) -> Headers:
    names = {name.lower() for name, _ in kept}
    if "host" not in names and host:
        # HTTP/1.0 clients may omit Host; the upstream still gets the one used.
        kept.insert(0, ("Host", host))
    forwarded_for = _forwarded_for(incoming, trusted, peer_ip)
    if forwarded_for:
        kept.append(("X-Forwarded-For", forwarded_for))
    if "x-forwarded-proto" not in names:
        kept.append(("X-Forwarded-Proto", scheme))
    if "x-forwarded-host" not in names and host:
        kept.append(("X-Forwarded-Host", host))
    return kept


def _forwarded_for(incoming: Headers, trusted: bool, peer_ip: str | None) -> str:
    """One X-Forwarded-For value: a trusted proxy's chain plus the peer, else just the peer."""
    hops: list[str] = []
    if trusted:
        # Repeated X-Forwarded-For headers form one list, in order (RFC 9110 §5.3).
        for name, value in incoming:
            if name.lower() == "x-forwarded-for":
                hops.extend(_list_tokens(value))
    if peer_ip is not None:
        hops.append(peer_ip)
    return ", ".join(hops)


def _connection_tokens(pairs: Headers) -> frozenset[str]:
    """Lower-case header names that the Connection header(s) declare hop-by-hop."""
    tokens: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            tokens.update(token.lower() for token in _list_tokens(value))
    return frozenset(tokens)


def _dropped(name: str, drop: frozenset[str]) -> bool:
    return name in drop or name.startswith("proxy-")


def _list_tokens(value: str) -> list[str]:
    return [token for token in (part.strip() for part in value.split(",")) if token]
