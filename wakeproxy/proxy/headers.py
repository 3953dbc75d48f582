"""Which headers cross the proxy, in each direction.

Hop-by-hop headers describe one connection, not the message (RFC 9110 §7.6.1), so
the proxy never forwards them: the fixed `HOP_BY_HOP` set, every ``Proxy-*`` header,
and every header named in the message's own ``Connection`` header.

``X-Forwarded-For``/``-Proto``/``-Host`` are believed only from a trusted proxy (a
front load balancer listed in ``proxy.trusted_proxies``); from anyone else they are
replaced, so an upstream never sees a client's claim about its own address.

Headers are ``(name, value)`` pairs of bytes as they were on the wire, in wire order,
so repeated headers (Set-Cookie, X-Forwarded-For) stay separate and ordered and
nothing is decoded or re-encoded on the hot path. Names compare case-insensitively and
are passed on as spelled. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from wakeproxy.errors import ConfigError

if TYPE_CHECKING:
    from wakeproxy.config import ProxyConfig

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Lower-case names that are never forwarded (besides ``proxy-*`` and Connection's tokens)."""

# A Connection header may name any header as hop-by-hop. Honouring that for these
# would let a client strip the Host the upstream routes on, or the framing of a body.
_NEVER_NOMINATED = frozenset({b"host", b"content-length"})

# The proxy answers "Expect: 100-continue" itself, so the upstream must not also; the
# X-Forwarded-For chain and the request id are rebuilt (`proxy.requestid`).
_REQUEST_ONLY = frozenset({b"expect", b"x-forwarded-for", b"x-request-id"})

# Claims about the client that only a trusted proxy may make. Forwarded and
# X-Real-IP are not rebuilt here, only passed on from a trusted proxy; some
# upstream apps believe them.
_CLIENT_CLAIMS = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})


class HeaderView(Mapping[str, str]):
    """Raw header pairs read as a case-insensitive ``str`` mapping (the first of repeated
    headers wins), decoding only what is asked for: routing, admission and no-wake rules
    look at one or two headers of a request, not all of them."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Headers) -> None:
        self._pairs = pairs

    def __getitem__(self, key: str) -> str:
        value = self._find(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        # Mapping.get would go through a raised and caught KeyError for every absent
        # header, and most lookups on the request path (a token, a no-wake rule's header)
        # are for headers a request does not have.
        value = self._find(key)
        return default if value is None else value

    def _find(self, key: str) -> str | None:
        wanted = key.lower().encode("latin-1")
        size = len(wanted)
        for name, value in self._pairs:
            if len(name) == size and name.lower() == wanted:
                return value.decode("latin-1")
        return None

    def __iter__(self) -> Iterator[str]:
        seen: set[bytes] = set()
        for name, _ in self._pairs:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name.decode("latin-1")

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._pairs})


_REQUEST_DROPS: dict[bool, frozenset[bytes]] = {
    trusted: HOP_BY_HOP | _REQUEST_ONLY | (frozenset() if trusted else _CLIENT_CLAIMS)
    for trusted in (False, True)
}

# The lengths of the names each set drops: a name of another length is not in the set.
_LENGTHS: dict[frozenset[bytes], frozenset[int]] = {
    drop: frozenset(len(name) for name in drop) for drop in (HOP_BY_HOP, *_REQUEST_DROPS.values())
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

    def client_address(self, headers: Headers, peer_ip: str | None) -> str | None:
        """Who the client is: the peer, or behind trusted proxies the right-most address
        of X-Forwarded-For that is not one of them."""
        if not self.is_trusted(peer_ip):
            return peer_ip
        hops = _forwarded_for(headers, True, None).split(b", ")
        for hop in reversed(hops):
            address = hop.decode("latin-1")
            if address and not self.is_trusted(address):
                return address
        return hops[0].decode("latin-1") or peer_ip

    def upstream_request_headers(
        self,
        headers: Headers,
        peer_ip: str | None,
        scheme: bytes,
        host: bytes,
        request_id: bytes | None = None,
    ) -> Headers:
        """The headers to send upstream for a client request.

        `peer_ip` is the connection's peer (None for a unix socket: nothing is added
        to X-Forwarded-For then), `scheme` and `host` are what the client used; the
        client's Host header is kept as sent, so the upstream sees the original host.
        The client's own X-Request-Id is dropped; `request_id` is sent instead.
        """
        trusted = self.is_trusted(peer_ip)
        kept = _kept(headers, _REQUEST_DROPS[trusted])
        has_host = has_proto = has_forwarded_host = False
        hops: list[bytes] = []
        for name, _ in kept:
            # Only the names that decide what is added are compared; most are not.
            size = len(name)
            if size == 4:
                has_host = has_host or name.lower() == b"host"
            elif size == 17:
                has_proto = has_proto or name.lower() == b"x-forwarded-proto"
            elif size == 16:
                has_forwarded_host = has_forwarded_host or name.lower() == b"x-forwarded-host"
        if trusted:
            # Repeated X-Forwarded-For headers form one list, in order (RFC 9110 §5.3).
            for name, value in headers:
                if len(name) == 15 and name.lower() == b"x-forwarded-for":
                    hops.extend(_list_tokens(value))
        if not has_host and host:
            # HTTP/1.0 clients may omit Host; the upstream still gets the one used.
            kept.insert(0, (b"Host", host))
        if peer_ip is not None:
            hops.append(peer_ip.encode())
        if hops:
            kept.append((b"X-Forwarded-For", b", ".join(hops)))
        if not has_proto:
            kept.append((b"X-Forwarded-Proto", scheme))
        if not has_forwarded_host and host:
            kept.append((b"X-Forwarded-Host", host))
        if request_id is not None:
            kept.append((b"X-Request-Id", request_id))
        return kept


def downstream_response_headers(headers: Headers) -> Headers:
    """The upstream response's headers minus hop-by-hop ones; framing is the caller's."""
    return _kept(headers, HOP_BY_HOP)


WAIT_HEADER = "Wakeproxy-Wait"
"""On a response to a request that was held while its sandbox woke: the seconds it was held."""


def wait_headers(held_for: float) -> Headers:
    """What a response that was held for a wake says about it, so clients can see cold
    starts: ``Wakeproxy-Wait: 1.234`` (seconds), and the same as a ``Server-Timing``
    entry, which browsers' developer tools show next to the request's own timings."""
    return [
        (WAIT_HEADER.encode(), b"%.3f" % held_for),
        (b"Server-Timing", b'wake;dur=%.1f;desc="sandbox wake"' % (held_for * 1000)),
    ]


def _kept(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """The headers not dropped.

    One pass: a name is dropped when it is in `drop`, starts with ``proxy-``, or is
    nominated by a Connection header (before or after it). Only a name as long as one in
    `drop`, or one that could start with ``proxy-``, is lowered and looked up; most names
    are neither. Almost no message nominates anything `drop` does not already hold
    (``Connection: keep-alive``, ``close``, ``Upgrade``), so the second pass that honours
    a nomination is rare.
    """
    kept: Headers = []
    lengths = _LENGTHS[drop]
    extra: set[bytes] | None = None  # nominated names not dropped anyway
    for pair in headers:
        name = pair[0]
        size = len(name)
        if size not in lengths and (size < 6 or name[0] | 0x20 != 0x70):  # not p/P
            kept.append(pair)
            continue
        low = name.lower()
        if low in drop:
            if low == b"connection":
                for token in _nominated(pair[1]):
                    if token not in drop and token not in _NEVER_NOMINATED:
                        extra = extra or set()
                        extra.add(token)
        elif not low.startswith(b"proxy-"):
            kept.append(pair)
    if extra:
        kept = [pair for pair in kept if pair[0].lower() not in extra]
    return kept


def _nominated(value: bytes) -> list[bytes]:
    """The lower-case header names a Connection header's value lists."""
    if b"," in value:
        return [token.lower() for token in _list_tokens(value)]
    token = value.strip()
    return [token.lower()] if token else []  # the usual: keep-alive, close, Upgrade


def _forwarded_for(headers: Headers, trusted: bool, peer_ip: str | None) -> bytes:
    """One X-Forwarded-For value: a trusted proxy's chain plus the peer, else just the peer."""
    hops: list[bytes] = []
    if trusted:
        # Repeated X-Forwarded-For headers form one list, in order (RFC 9110 §5.3).
        for name, value in headers:
            if name.lower() == b"x-forwarded-for":
                hops.extend(_list_tokens(value))
    if peer_ip is not None:
        hops.append(peer_ip.encode())
    return b", ".join(hops)


def _list_tokens(value: bytes) -> list[bytes]:
    return [token for token in (part.strip() for part in value.split(b",")) if token]
