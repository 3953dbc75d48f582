"""No-wake rules: requests that reach a running sandbox but never wake a paused one.

Monitoring probes and scrapers (`Prometheus/*`, `kube-probe/*`) would otherwise keep
every sandbox awake. A rule names any of a method, a path glob, a User-Agent glob and a
header (`"Name: glob"`); a request matches when every field the rule gives matches.
Globs are `fnmatch`-style (`*`, `?`, `[...]`; `*` also spans `/`). Methods and header
names compare case-insensitively; paths and header values case-sensitively. A header
the request lacks never matches. Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`headers[name]`, ignoring case also for plain dicts (multidicts already do)."""
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


@dataclass(frozen=True)
class NoWakeRule:
    """One rule; raises ValueError when it names no field or a malformed header.

    Its four fields are also its config schema (`[[wake.no_wake]]`).
    """

    method: str | None = None
    """Request method, e.g. GET (any when unset)."""
    path: str | None = None
    """Path glob without the query string, e.g. /metrics*."""
    user_agent: str | None = None
    """User-Agent glob, e.g. Prometheus/*."""
    header: str | None = None
    """A header and a glob for its value: "Name: glob"."""

    def __post_init__(self) -> None:
        self._compiled  # noqa: B018 - compile now, so a bad rule fails at load time

    @cached_property
    def _compiled(self) -> tuple[re.Pattern[str] | None, tuple[tuple[str, re.Pattern[str]], ...]]:
        # A cached_property writes the instance __dict__ directly, so it works on a frozen
        # dataclass and stays out of `fields()`, which the config loader reads as schema.
        checks: list[tuple[str, re.Pattern[str]]] = []
        if self.user_agent is not None:
            checks.append(("user-agent", _glob(self.user_agent)))
        if self.header is not None:
            name, colon, pattern = self.header.partition(":")
            if not colon or not name.strip():
                raise ValueError(f"no-wake header must read 'Name: glob', got {self.header!r}")
            checks.append((name.strip().lower(), _glob(pattern.strip())))
        if self.method is None and self.path is None and not checks:
            raise ValueError("a no-wake rule needs a method, path, user_agent or header")
        return (None if self.path is None else _glob(self.path)), tuple(checks)

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Does a request (`path` without the query string) match every given field?"""
        if self.method is not None and method.upper() != self.method.upper():
            return False
        path_glob, checks = self._compiled
        if path_glob is not None and path_glob.match(path) is None:
            return False
        for name, pattern in checks:
            value = _header(headers, name)
            if value is None or pattern.match(value) is None:
                return False
        return True


def first_match(
    rules: Iterable[NoWakeRule], method: str, path: str, headers: Mapping[str, str]
) -> NoWakeRule | None:
    """The first rule the request matches, or None (the request may wake its sandbox)."""
    return next((rule for rule in rules if rule.matches(method, path, headers)), None)
