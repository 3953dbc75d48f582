"""The upstream connection pool, able to reach sandboxes that have no address to dial.

A sandbox with its own network namespace is reached through `Upstream.opener`, which
returns a socket already connected inside that namespace. aiohttp pools connections by
(host, port), so such an upstream keeps a unique placeholder host (`<id>.sandbox.invalid`)
that names the pool; the resolver answers it without DNS and the connector asks the
opener for the socket instead of dialling. Everything else is aiohttp's own pooling.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from wakeproxy.backends.base import SocketOpener, Upstream

# RFC 6761 reserves .invalid: no real name ever ends like this.
PLACEHOLDER_SUFFIX = ".invalid"


class _PlaceholderResolver(AbstractResolver):
    def __init__(self) -> None:
        self._dns = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.endswith(PLACEHOLDER_SUFFIX):
            # Never dialled: the connector uses the upstream's opener for these hosts.
            placeholder = ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
            return [placeholder]
        return await self._dns.resolve(host, port, family)

    async def close(self) -> None:
        await self._dns.close()


class UpstreamConnector(aiohttp.TCPConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(resolver=_PlaceholderResolver(), **kwargs)
        self._openers: dict[tuple[str, int], SocketOpener] = {}

    def register(self, upstream: Upstream) -> None:
        """Remember how to open connections for `upstream` (a dict store: hot-path cheap)."""
        if upstream.opener is not None:
            self._openers[upstream.host, upstream.port] = upstream.opener

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: Any,
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, aiohttp.client_proto.ResponseHandler]:
        opener = self._openers.get((req.url.raw_host or "", req.port or 0))
        if opener is None:
            return await super()._wrap_create_connection(
                *args,
                addr_infos=addr_infos,
                req=req,
                timeout=timeout,
                client_error=client_error,
                **kwargs,
            )
        try:
            async with asyncio.timeout(timeout.sock_connect):
                sock = await opener()
            sock.setblocking(False)
            kwargs.pop("server_hostname", None)  # plain HTTP only; no TLS to name
            kwargs.pop("ssl", None)
            transport, protocol = await self._loop.create_connection(*args, sock=sock, **kwargs)
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        return transport, protocol


def registrar(session: aiohttp.ClientSession) -> Callable[[Upstream], None]:
    """How a relay tells `session`'s pool about an opener-reached upstream."""
    connector = session.connector
    if isinstance(connector, UpstreamConnector):
        return connector.register
    return lambda upstream: None
