"""Chromium on an `https://<port>-<id>.localhost` preview URL served by the proxy's own TLS,
trusting only a CA made for the test (trustme), installed in the browser's NSS database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM_ARGS, WAIT_MS
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright
from proxy_process import ProxyProcess
from support import free_port

trustme = pytest.importorskip("trustme")

PAGE = """<!doctype html><title>tls</title><h1 id="title">Served over TLS</h1>
<p id="protocol"></p><script>
document.getElementById("protocol").textContent = location.protocol</script>
"""


@pytest.fixture
def upstream_site(tmp_path: Path) -> Iterator[int]:
    """A plain HTTP server (Python's own) with one page, standing in for a sandbox's port."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def nss_home(ca: trustme.CA, home: Path) -> Path:
    """A HOME whose NSS database (what Chromium on Linux trusts) holds the test CA."""
    if shutil.which("certutil") is None:
        pytest.skip("certutil (Debian's libnss3-tools) is needed to make Chromium trust a CA")
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    ca_file = home / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for command in (
        ["certutil", "-d", f"sql:{database}", "-N", "--empty-password"],
        ["certutil", "-d", f"sql:{database}", "-A", "-t", "C,,", "-n", "wakeproxy test CA",
         "-i", str(ca_file)],
    ):  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    return home


def test_chromium_loads_an_https_preview_url_through_the_proxys_tls(
    chromium: str, tmp_path: Path, upstream_site: int
) -> None:
    ca = trustme.CA()
    host = f"{upstream_site}-sbx1.localhost"
    issued = ca.issue_cert(host)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    proxy = ProxyProcess(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), log_dir=tmp_path
    ).start()
    home = nss_home(ca, tmp_path / "home")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                tmp_path / "profile",
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                env={"HOME": str(home)},
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(WAIT_MS)
                response = page.goto(f"https://{host}:{proxy.port}/")
                assert response is not None
                assert response.status == 200
                assert page.locator("#title").text_content() == "Served over TLS"
                assert page.locator("#protocol").text_content() == "https:"
                security = response.security_details()
                assert security is not None
                assert str(security.get("protocol", "")).startswith("TLS 1.")
            finally:
                browser.close()
            # The same browser without the CA refuses the certificate: the trust is real.
            stranger = playwright.chromium.launch_persistent_context(
                tmp_path / "profile2",
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                env={"HOME": str(tmp_path / "empty-home")},
            )
            try:
                with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                    stranger.new_page().goto(f"https://{host}:{proxy.port}/")
            finally:
                stranger.close()
    finally:
        proxy.stop()
