"""TLS at the proxy listener: certificates from files, chosen by SNI, reloaded when the files
change, HTTP/1.1 by ALPN.

The listener's context only picks: its SNI callback points each new connection at the
context for the name the client asked for, out of a set built whole from the files. A
reload builds a new set and swaps it in, so a connection already open keeps the
certificate it was handshaken with, and a broken or half-written file leaves the old set in
place (and is logged) instead of taking the listener down. Name matching is pure
(`choose`); Python's `ssl` (OpenSSL) does everything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from wakeproxy.errors import ConfigError

log = logging.getLogger("wakeproxy.tls")
_SERVER_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?")

ALPN: tuple[str, ...] = ("http/1.1",)
"""The proxy speaks HTTP/1.1 only; a client offering h2 is told so during the handshake."""


@dataclass(frozen=True, slots=True)
class SniCertificate:
    """A certificate served for some names instead of the default one."""

    names: tuple[str, ...]
    """Server names it is for: `eu.example.com`, or `*.eu.example.com` for one label."""
    cert_file: str
    """PEM certificate chain (the certificate first, then its intermediates)."""
    key_file: str
    """PEM private key of the certificate."""

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("names: list the server names this certificate is for")
        for name in self.names:
            if _SERVER_NAME.fullmatch(name.removeprefix("*.")) is None:
                raise ValueError(
                    f"names: expected a server name like eu.example.com or *.eu.example.com, "
                    f"got {name!r}"
                )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS on the proxy listener; off while `cert_file` is empty."""

    cert_file: str = ""
    """PEM certificate chain served by default (e.g. a wildcard `*.<domain>` certificate);
    empty: the proxy speaks plain HTTP."""
    key_file: str = ""
    """PEM private key of `cert_file`."""
    sni: tuple[SniCertificate, ...] = field(default=())
    """More certificates, chosen by the server name the client sends;
    `[[tls.sni]]` tables with `names`, `cert_file` and `key_file`."""
    reload_interval: float = 30.0
    """Seconds between checks of the files; changed files are loaded for new connections."""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def files(self) -> tuple[str, ...]:
        pairs = [(self.cert_file, self.key_file), *((s.cert_file, s.key_file) for s in self.sni)]
        return tuple(name for pair in pairs for name in pair)


def matches(pattern: str, server_name: str) -> bool:
    """RFC 6125 matching: exact (case-insensitive), or `*.` standing for one whole label."""
    pattern, server_name = pattern.lower().rstrip("."), server_name.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == server_name
    label, dot, rest = server_name.partition(".")
    return bool(label) and bool(dot) and rest == pattern[2:]


def choose(patterns: Sequence[tuple[str, ...]], server_name: str | None) -> int | None:
    """Index of the first entry with a name matching `server_name`; exact names before
    wildcards. None: the default certificate."""
    if not server_name:
        return None
    for wildcard in (False, True):
        for index, names in enumerate(patterns):
            if any(n.startswith("*.") == wildcard and matches(n, server_name) for n in names):
                return index
    return None


@dataclass(frozen=True, slots=True)
class _Loaded:
    default: ssl.SSLContext
    by_name: tuple[ssl.SSLContext, ...]
    names: tuple[tuple[str, ...], ...]

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        index = choose(self.names, server_name)
        return self.default if index is None else self.by_name[index]


def _context(cert_file: str, key_file: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(ALPN))
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(
            [(key, f"cannot load the certificate {cert_file!r} with key {key_file!r}: {reason}")]
        ) from exc
    return context


def _load(settings: TlsSettings) -> _Loaded:
    default = _context(settings.cert_file, settings.key_file, "tls.cert_file")
    by_name = tuple(
        _context(entry.cert_file, entry.key_file, f"tls.sni[{index}].cert_file")
        for index, entry in enumerate(settings.sni)
    )
    return _Loaded(default, by_name, tuple(entry.names for entry in settings.sni))


def _stamp(files: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """What tells a changed file: inode (a Kubernetes secret update swaps a symlink), size
    and modification time."""
    stamps = []
    for name in files:
        try:
            info = os.stat(name)
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class TlsContexts:
    """The certificates the listener serves; `reload()` swaps in new files' certificates.

    Raises ConfigError at construction when a file cannot be loaded.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._stamp = _stamp(settings.files())
        self._loaded = _load(settings)
        self.reloads = 0
        """Successful reloads, for tests and logs."""
        self.failed_reloads = 0
        """Changed files that could not be loaded (the old certificates stayed)."""

    def listener_context(self) -> ssl.SSLContext:
        """The context to listen with: it only sends each handshake to the current set."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(list(ALPN))
        # Load the default certificate here too, so the context is complete even for a
        # handshake the callback does not redirect.
        context.load_cert_chain(self._settings.cert_file, self._settings.key_file)
        context.sni_callback = self._on_server_name
        return context

    def _on_server_name(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self._loaded.pick(server_name)

    def reload(self) -> bool:
        """Load the files again if any changed; True when new certificates are in use."""
        stamp = _stamp(self._settings.files())
        if stamp == self._stamp:
            return False
        try:
            loaded = _load(self._settings)
        except ConfigError as exc:
            # Likely caught mid-update (a key written before its certificate): keep serving
            # the old certificates and try again at the next check.
            log.error("TLS reload failed, keeping the current certificates: %s", exc)
            self.failed_reloads += 1
            return False
        self._stamp, self._loaded = stamp, loaded
        self.reloads += 1
        log.info("TLS certificates reloaded", extra={"event": "tls_reload"})
        return True


@asynccontextmanager
async def reloading(contexts: TlsContexts, interval: float) -> AsyncIterator[TlsContexts]:
    """Check the files every `interval` seconds while the block runs."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                contexts.reload()
            except Exception:  # a bug here must not stop the checks
                log.exception("TLS reload check failed")

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield contexts
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
