"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, against
`wakeproxy up` and real sandboxes.

``chromium`` (session)
    Path of the Chromium binary: ``$WAKEPROXY_TEST_CHROMIUM``, else ``/usr/bin/chromium``
    (`scripts/test` installs Debian's ``chromium`` package). Tests skip, saying so, only
    when it is missing; Playwright never downloads a browser of its own here.
``browser`` (module)
    One headless Chromium with a fresh profile.
``page`` (function)
    A new tab in it, closed after the test.
``platform`` (module)
    One ``wakeproxy up`` in its own process, with default settings.
``sites`` (function)
    ``sites(auto_resume=True, delayed=False)`` makes a `SiteSandbox`; killed after the test.
``screenshot`` (function)
    ``screenshot(page, name)`` saves ``test-artifacts/browser/<name>.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from platform_process import PlatformProcess
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from sandbox_site import SiteSandbox

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: these bound a wait for something that should happen, they measure nothing.
WAIT_MS = 30_000

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("WAKEPROXY_TEST_CHROMIUM", "/usr/bin/chromium")
    if shutil.which(path) is None:
        pytest.skip(
            f"no Chromium at {path}: scripts/test installs Debian's chromium package with "
            "apt where it can (WAKEPROXY_TEST_CHROMIUM names another binary)"
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 420},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    workdir = tmp_path_factory.mktemp("platform")
    process = PlatformProcess(workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def sites(platform: PlatformProcess) -> Iterator[Callable[..., SiteSandbox]]:
    made: list[SiteSandbox] = []

    def make(*, auto_resume: bool = True, delayed: bool = False) -> SiteSandbox:
        site = SiteSandbox.create(platform, auto_resume=auto_resume, delayed=delayed)
        made.append(site)
        return site

    yield make
    for site in made:
        site.kill()


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    def save(tab: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        tab.screenshot(path=path, animations="disabled")
        return path

    return save
