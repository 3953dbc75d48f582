"""TLS at the proxy with real TLS clients and a locally made CA (trustme): the certificate
from files, SNI, HTTP/1.1 by ALPN, reload without dropping open connections, and
`X-Forwarded-Proto: https` upstream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from support import host_for, proxy_config
from upstream import Upstream

from wakeproxy.backends.static import StaticBackend
from wakeproxy.server import Listening, running_proxy
from wakeproxy.tls import SniCertificate, TlsSettings

trustme = pytest.importorskip("trustme")
GUARD = 30.0  # only turns a hang into a failure
# OpenSSL refuses a wildcard over a single label (`*.localhost`), so the tests use a
# domain of two labels; any name works since the client connects to the address itself.
DOMAIN = "wp.test"


def write_cert(ca: trustme.CA, directory: Path, *names: str) -> tuple[str, str]:
    """A certificate for `names` issued by `ca`, as the PEM files the proxy reads."""
    issued = ca.issue_cert(*names)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    return str(cert), str(key)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def tls_proxy(settings: TlsSettings) -> AbstractAsyncContextManager[Listening]:
    """A proxy in this process, with the static backend and TLS as `settings` say."""
    config = dataclasses.replace(proxy_config(domains=(DOMAIN,)), tls=settings)
    return running_proxy(config, StaticBackend("127.0.0.1"))


async def get(
    proxy: Listening, context: ssl.SSLContext, server_name: str, path: str = "/headers"
) -> tuple[ssl.SSLObject, int, bytes]:
    """One HTTP/1.1 request over a new TLS connection: the TLS object, status and body."""
    reader, writer = await asyncio.open_connection(
        proxy.host, proxy.port, ssl=context, server_hostname=server_name
    )
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode()
        )
        reply = await asyncio.wait_for(reader.read(), GUARD)
        tls = writer.get_extra_info("ssl_object")
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return tls, int(head.split()[1]), body


def common_names(tls: ssl.SSLObject) -> list[str]:
    peer = tls.getpeercert()
    assert peer is not None
    return [value for kind, value in peer["subjectAltName"]]


async def test_https_request_with_a_verified_certificate_and_forwarded_proto(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, key = write_cert(ca, tmp_path / "default", "*.wp.test")
    async with tls_proxy(TlsSettings(cert_file=cert, key_file=key)) as proxy:
        assert proxy.url.startswith("https://")
        tls, status, body = await get(
            proxy, client_context(ca), host_for(upstream.port, domain=DOMAIN)
        )
    assert status == 200
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-forwarded-proto"] == "https"


async def test_sni_picks_the_certificate_for_the_name(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, key = write_cert(ca, tmp_path / "default", "*.wp.test")
    eu_cert, eu_key = write_cert(ca, tmp_path / "eu", "*.eu.example", "eu.example")
    settings = TlsSettings(
        cert_file=cert,
        key_file=key,
        sni=(SniCertificate(("*.eu.example", "eu.example"), eu_cert, eu_key),),
    )
    async with tls_proxy(settings) as proxy:
        context = client_context(ca)
        default, _, _ = await get(proxy, context, host_for(upstream.port, domain=DOMAIN))
        eu, status, _ = await get(proxy, context, f"{upstream.port}-sbx1.eu.example")
    assert common_names(default) == ["*.wp.test"]
    assert common_names(eu) == ["*.eu.example", "eu.example"]
    assert status == 404  # a name the proxy does not serve: TLS works, routing refuses


async def test_alpn_agrees_on_http_1_1_even_when_h2_is_offered(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, key = write_cert(ca, tmp_path / "default", "*.wp.test")
    async with tls_proxy(TlsSettings(cert_file=cert, key_file=key)) as proxy:
        tls, status, _ = await get(
            proxy, client_context(ca, ["h2", "http/1.1"]), host_for(upstream.port, domain=DOMAIN)
        )
    assert tls.selected_alpn_protocol() == "http/1.1"
    assert status == 200


async def test_reload_serves_new_certificates_and_keeps_open_connections(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, key = write_cert(ca, tmp_path / "default", "*.wp.test", "old.wp.test")
    settings = TlsSettings(cert_file=cert, key_file=key, reload_interval=0.05)
    host = host_for(upstream.port, domain=DOMAIN)
    async with tls_proxy(settings) as proxy:
        reader, writer = await asyncio.open_connection(
            proxy.host, proxy.port, ssl=client_context(ca), server_hostname=host
        )
        request = f"GET /count HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        writer.write(request)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)

        write_cert(ca, tmp_path / "default", "*.wp.test", "new.wp.test")
        async with asyncio.timeout(GUARD):
            # The reload runs on its own timer: there is nothing to await but the count.
            while proxy.tls.reloads == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        fresh, status, _ = await get(proxy, client_context(ca), host)
        assert "new.wp.test" in common_names(fresh)
        assert status == 200

        # The connection opened before the reload still works, on its old certificate.
        writer.write(request)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        assert "old.wp.test" in common_names(writer.get_extra_info("ssl_object"))
        writer.close()
    assert upstream.count == 2  # both on the connection opened before the reload


async def test_a_broken_file_at_reload_keeps_the_old_certificate(
    ca: trustme.CA, tmp_path: Path, upstream: Upstream
) -> None:
    cert, key = write_cert(ca, tmp_path / "default", "*.wp.test")
    settings = TlsSettings(cert_file=cert, key_file=key, reload_interval=0.05)
    async with tls_proxy(settings) as proxy:
        await asyncio.to_thread(Path(key).write_text, "half a key")
        async with asyncio.timeout(GUARD):
            while proxy.tls.failed_reloads == 0:  # noqa: ASYNC110 - its own timer
                await asyncio.sleep(0.02)
        tls, status, _ = await get(
            proxy, client_context(ca), host_for(upstream.port, domain=DOMAIN)
        )
        assert status == 200
        assert common_names(tls) == ["*.wp.test"]
        assert proxy.tls.reloads == 0


def test_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    result = subprocess.run(
        [
            sys.executable, "-m", "wakeproxy", "serve",
            "--proxy-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--tls-cert-file", str(missing), "--tls-key-file", str(missing),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"config error: tls.cert_file: cannot load the certificate '{missing}'"
    )
    assert "Traceback" not in result.stderr
