"""Which sandbox port a request is for, from its Host header (or its E2B headers).

A request names one port of one sandbox in one of two ways:

* ``Host: <port>-<sandboxId>.<domain>`` for any configured domain. This is what
  ``getHost(port)`` in the E2B SDKs returns and what a browser sends.
* A *base host* -- ``localhost``, an IP literal, a configured domain itself or
  ``sandbox.<domain>`` -- plus the ``E2b-Sandbox-Id`` and ``E2b-Sandbox-Port``
  headers. This is what the E2B SDKs send when ``E2B_SANDBOX_URL`` points at the proxy.

Hosts compare case-insensitively (DNS does), so a sandbox id taken from a Host is
lower-cased; an id taken from a header is used exactly as sent. A ``:port`` suffix
and one trailing dot on the Host are ignored.

Everything here is pure: `Router.route` takes strings and returns a `Target` or
raises `RouteError` (400) / `UnknownHost` (404) with a message that names what is
wrong. It runs on every request, so the constructor does all the work it can and a
routable Host costs two set lookups, one partition and one regex match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wakeproxy.errors import ConfigError, NoSandboxNamed, RouteError, UnknownHost

if TYPE_CHECKING:
    from wakeproxy.config import ProxyConfig

SANDBOX_ID_HEADER = "E2b-Sandbox-Id"
SANDBOX_PORT_HEADER = "E2b-Sandbox-Port"

# DNS caps a name at 253 characters. Capping hosts and header ids there also bounds
# the input that the configured (possibly backtracking) id pattern ever sees.
MAX_HOST_LENGTH = 253

_MAX_SHOWN = 80
_DOMAIN_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@dataclass(frozen=True, slots=True)
class Target:
    """One port of one sandbox: where a request is to be forwarded."""

    sandbox_id: str
    port: int


_KNOWN_HOSTS = 4096


class Router:
    """Maps a request's Host (and, on a base host, its E2B headers) to a `Target`.

    `domains` may carry a port (``"localhost:8080"``, as the control plane reports
    it to SDKs); the port is dropped, because a Host's port never takes part in
    matching. Raises `ConfigError` for a malformed domain or id pattern.
    """

    __slots__ = ("_base_names", "_by_host", "_domain_set", "_domains", "_id_pattern", "_suffixes")

    def __init__(self, domains: Sequence[str], sandbox_id_pattern: str) -> None:
        self._domains = _normalize_domains(domains)
        self._id_pattern = _compile_id_pattern(sandbox_id_pattern)
        self._domain_set = frozenset(self._domains)
        self._base_names = frozenset(
            {"localhost", *self._domains, *(f"sandbox.{d}" for d in self._domains)}
        )
        # Longest first, so that of two nested domains the more specific one wins.
        self._suffixes = tuple(sorted((f".{d}" for d in self._domains), key=len, reverse=True))
        # Host headers already routed by their label: the hot path's answer is one lookup.
        self._by_host: dict[str, Target] = {}

    @classmethod
    def from_config(cls, config: ProxyConfig) -> Router:
        return cls(config.domains, config.sandbox_id_pattern)

    @property
    def domains(self) -> tuple[str, ...]:
        """The served domains, lower-case, without port or trailing dot."""
        return self._domains

    def route(self, host: str | None, headers: Mapping[str, str]) -> Target:
        """The target a request is for.

        `headers` is only read on a base host; lookups in it are case-insensitive
        whether or not the mapping itself is (a ``CIMultiDictProxy`` or a dict).
        """
        if host is not None:
            known = self._by_host.get(host)
            if known is not None:
                return known
        name = _host_name(host)
        if name in self._base_names:
            return self._route_by_headers(name, headers)
        label, _, parent = name.partition(".")
        if parent in self._domain_set:
            target = self._route_by_label(label)
            if host is not None:
                if len(self._by_host) >= _KNOWN_HOSTS:
                    self._by_host.clear()  # a crude bound; refilled by the next requests
                self._by_host[host] = target
            return target
        # Off the common path: IP literals and hosts that will mostly fail. A host
        # nested deeper under a served domain is malformed (400), not foreign (404).
        for suffix in self._suffixes:
            if name.endswith(suffix):
                return self._route_by_label(name[: -len(suffix)])
        if _is_ip_literal(name):
            return self._route_by_headers(name, headers)
        served = ", ".join(self._domains) or "(none configured)"
        raise UnknownHost(
            f"host {_show(name)} is not served here; sandbox hosts are "
            f"<port>-<sandboxId>.<domain> for the domains {served}"
        )

    def _route_by_label(self, label: str) -> Target:
        port_text, _, sandbox_id = label.partition("-")
        if not port_text or not sandbox_id:
            raise RouteError(f"host label {_show(label)} is not <port>-<sandboxId>")
        return self._target(sandbox_id, port_text, label)

    def _route_by_headers(self, name: str, headers: Mapping[str, str]) -> Target:
        sandbox_id = _header(headers, SANDBOX_ID_HEADER)
        port_text = _header(headers, SANDBOX_PORT_HEADER)
        if sandbox_id is None or port_text is None:
            missing = [
                header
                for header, value in (
                    (SANDBOX_ID_HEADER, sandbox_id),
                    (SANDBOX_PORT_HEADER, port_text),
                )
                if value is None
            ]
            raise NoSandboxNamed(
                f"missing header {' and '.join(missing)}: on the base host {_show(name)} the "
                f"{SANDBOX_ID_HEADER} and {SANDBOX_PORT_HEADER} headers choose the sandbox "
                f"(or use the host <port>-<sandboxId>.<domain>)"
            )
        return self._target(sandbox_id.strip(), port_text.strip(), None)

    def _target(self, sandbox_id: str, port_text: str, label: str | None) -> Target:
        """Validates both parts; `label` is the host label they came from, None for headers."""
        # The emptiness check keeps a pattern that allows "" from routing to no sandbox.
        if (
            not sandbox_id
            or len(sandbox_id) > MAX_HOST_LENGTH
            or self._id_pattern.fullmatch(sandbox_id) is None
        ):
            raise RouteError(
                f"sandbox id {_show(sandbox_id)} does not match {self._id_pattern.pattern}"
                f"{_source(label, SANDBOX_ID_HEADER)}"
            )
        problem = _port_problem(port_text)
        if problem is not None:
            raise RouteError(
                f"port {_show(port_text)} {problem}{_source(label, SANDBOX_PORT_HEADER)}",
                sandbox_id=sandbox_id,
            )
        return Target(sandbox_id, int(port_text))


def _host_name(host: str | None) -> str:
    """The Host's name part: lower-case, without port, brackets or trailing dot."""
    if not host:
        raise RouteError("the request has no Host header; expected <port>-<sandboxId>.<domain>")
    # Non-ASCII is refused before lower(), which could otherwise change its length
    # or fold it into ASCII; internationalized names arrive in punycode.
    if not host.isascii():
        raise RouteError(f"host {_show(host)} is not ASCII")
    name, port = _split_port(host)
    if port and not port.isdigit():
        raise RouteError(f"host {_show(host)} has a malformed port {_show(port)}")
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise RouteError(f"host {_show(host)} has an empty name")
    if len(name) > MAX_HOST_LENGTH:
        raise RouteError(f"host {_show(host)} is longer than {MAX_HOST_LENGTH} characters")
    return name.lower()


def _split_port(host: str) -> tuple[str, str]:
    """(name, port) of a Host; port is "" when absent. Brackets are removed."""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise RouteError(
                f"host {_show(host)} is not [<IPv6 address>] or [<IPv6 address>]:<port>"
            )
        name = host[1:end]
        if not _is_ip_literal(name) or ":" not in name:
            raise RouteError(f"host {_show(host)} has no IPv6 address between its brackets")
        return name, rest[1:]
    first = host.find(":")
    if first < 0:
        return host, ""
    if host.find(":", first + 1) >= 0:
        # Two colons: an unbracketed IPv6 literal. Not valid in a Host header, but
        # unambiguous, and some clients send it.
        return host, ""
    return host[:first], host[first + 1 :]


def _port_problem(text: str) -> str | None:
    """What is wrong with `text` as a port number, or None if nothing is."""
    # ASCII first: str.isdigit() also accepts digits such as "²" that int() rejects.
    if not (text.isascii() and text.isdigit()):
        return "is not a decimal number"
    if len(text) > 1 and text[0] == "0":
        # One spelling per port keeps logs, metrics and caches keyed consistently.
        return "has a leading zero"
    # The length check keeps a long run of digits away from int().
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        return "is out of range 1-65535"
    return None


def _source(label: str | None, header: str) -> str:
    """Where a bad value came from, for an error message."""
    return f" in the {header} header" if label is None else f" in host label {_show(label)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # A miss is either a truly absent header or a case-sensitive mapping (a dict);
    # scanning is cheap here because a miss ends the request with a 400 anyway.
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None


def _is_ip_literal(name: str) -> bool:
    if ":" not in name:
        # ipaddress takes microseconds, and SDKs pointed at http://127.0.0.1:<port>
        # come this way on every request. The pattern accepts what ipaddress does.
        return _IPV4_RE.fullmatch(name) is not None
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def _show(text: str) -> str:
    """`text` quoted and escaped for a message, shortened if long."""
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return repr(text)


def _normalize_domains(domains: Sequence[str]) -> tuple[str, ...]:
    normalized: list[str] = []
    problems: list[tuple[str, str]] = []
    for domain in domains:
        try:
            name = _host_name(domain.strip())
        except RouteError as error:
            problems.append(("proxy.domains", f"{domain!r}: {error.message}"))
            continue
        if _DOMAIN_RE.fullmatch(name) is None and not _is_ip_literal(name):
            problems.append(("proxy.domains", f"{domain!r} is not a DNS name or IP address"))
        elif name not in normalized:
            normalized.append(name)
    if problems:
        raise ConfigError(problems)
    return tuple(normalized)


def _compile_id_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError([("proxy.sandbox_id_pattern", f"{pattern!r}: {error}")]) from None
