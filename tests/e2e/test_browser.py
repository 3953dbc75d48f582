"""Preview URLs in a real browser: Chromium against `wakeproxy up` and real sandboxes.

Each test opens `http://<port>-<id>.localhost:<proxy port>/` as a person would (Chromium
resolves `*.localhost` to loopback) and saves a screenshot in `test-artifacts/browser/`.
Nothing here waits for time to pass: the tests wait, with generous bounds, for what the
page shows, and a slow start-up lasts exactly until the test lets the app listen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2b import Sandbox
from platform_process import PlatformProcess
from playwright.sync_api import Page, Request, Response, expect
from sandbox_site import LOGO_SIZE, SiteSandbox, sdk_options

pytestmark = pytest.mark.e2e

Sites = Callable[..., SiteSandbox]
Screenshot = Callable[[Page, str], Path]

# WCAG 2 contrast ratio of an element's text against the first opaque background behind it.
_CONTRAST = """element => {
  const rgb = text => text.match(/[\\d.]+/g).slice(0, 4).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = c => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  let behind = element;
  while (behind && rgb(getComputedStyle(behind).backgroundColor)[3] === 0) {
    behind = behind.parentElement;
  }
  const background = behind ? rgb(getComputedStyle(behind).backgroundColor) : [255, 255, 255];
  const [light, dark] = [rgb(getComputedStyle(element).color), background]
    .map(luminance).sort((a, b) => b - a);
  return (light + 0.05) / (dark + 0.05);
}"""


def record_requests(page: Page) -> list[str]:
    """Paths of every request the page makes from now on, in order."""
    paths: list[str] = []

    def seen(request: Request) -> None:
        paths.append(urlsplit(request.url).path)

    page.on("request", seen)
    return paths


def record_navigations(page: Page) -> list[int]:
    """Statuses of the main frame's document responses from now on, in order."""
    statuses: list[int] = []

    def seen(response: Response) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == page.main_frame:
            statuses.append(response.status)

    page.on("response", seen)
    return statuses


def record_statuses(page: Page) -> dict[str, int]:
    """The first response's status for each path the page loads from now on."""
    statuses: dict[str, int] = {}

    def seen(response: Response) -> None:
        statuses.setdefault(urlsplit(response.url).path, response.status)

    page.on("response", seen)
    return statuses


def assert_proxy_page(page: Page, heading: str, sandbox_id: str) -> None:
    """One of the proxy's own pages: a real heading, the sandbox named, readable text."""
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    expect(page.locator("main")).to_contain_text(f"Sandbox: {sandbox_id}")
    for text in page.locator("main h1, main p").all():
        assert text.evaluate(_CONTRAST) >= 4.5, text.inner_text()


def test_a_paused_sandbox_page_loads_with_its_assets_on_the_first_navigation(
    page: Page, sites: Sites, screenshot: Screenshot
) -> None:
    site = sites()
    site.pause()
    navigations = record_navigations(page)
    statuses = record_statuses(page)

    response = page.goto(site.url)

    assert response is not None
    assert response.status == 200
    expect(page.locator("#title")).to_have_text("Served from a sandbox")
    expect(page.locator("#host")).to_have_text(site.sandbox.get_host(site.port))
    expect(page.locator("#script")).to_have_text("app.js ran")
    expect(page.locator("#title")).to_have_css("color", "rgb(0, 100, 60)")
    logo = page.locator("#logo")
    expect(logo).to_have_js_property("complete", True)
    expect(logo).to_have_js_property("naturalWidth", LOGO_SIZE)
    for path in ("/", "/style.css", "/app.js", "/logo.png"):
        assert statuses.get(path) == 200, (path, statuses)
    assert navigations == [200]  # no waiting page, no reload: one navigation did it
    assert site.state() == "running"
    screenshot(page, "1-paused-sandbox-first-navigation")


def test_a_websocket_left_open_across_a_pause_wakes_the_sandbox_with_its_next_message(
    page: Page, sites: Sites, screenshot: Screenshot
) -> None:
    site = sites()
    page.goto(site.url)
    socket_state = page.locator("#socket")
    echoes = page.locator("#echoes li")
    expect(socket_state).to_have_text("WebSocket open")
    page.get_by_label("Message").fill("before the pause")
    page.get_by_role("button", name="Send").click()
    expect(echoes).to_have_text(["echo: before the pause"])

    site.pause()  # the page stays open, and so does its WebSocket
    expect(socket_state).to_have_text("WebSocket open")
    page.get_by_label("Message").fill("after the pause")
    page.get_by_role("button", name="Send").click()

    expect(echoes).to_have_text(["echo: before the pause", "echo: after the pause"])
    expect(socket_state).to_have_text("WebSocket open")  # the same socket, answered
    assert site.state() == "running"
    screenshot(page, "2-websocket-across-a-pause")


def test_a_slow_wake_shows_the_waiting_page_which_turns_into_the_app_by_itself(
    page: Page, sites: Sites, screenshot: Screenshot
) -> None:
    site = sites(delayed=True)  # its server listens only after `release()`
    site.pause()
    navigations = record_navigations(page)
    requests = record_requests(page)

    response = page.goto(site.url)

    assert response is not None
    assert response.status == 503
    assert_proxy_page(page, "Waking up the sandbox", site.sandbox_id)
    expect(page.get_by_role("status")).to_contain_text("will load by itself")
    site.wait_for_state("running")  # the navigation woke it; its app is still starting
    screenshot(page, "3-waiting-page")

    site.release()

    expect(page.locator("#title")).to_have_text("Served from a sandbox")
    expect(page.locator("#script")).to_have_text("app.js ran")
    # One waiting page, then the app, reloaded by the page's own long-poll.
    assert navigations == [503, 200]
    assert requests[:3] == ["/", "/.wakeproxy/wait", "/"]
    screenshot(page, "3-after-the-slow-wake")


def test_a_paused_sandbox_without_auto_resume_says_so_and_how_to_resume_it(
    page: Page, sites: Sites, screenshot: Screenshot, platform: PlatformProcess
) -> None:
    site = sites(auto_resume=False)
    site.pause()
    requests = record_requests(page)

    response = page.goto(site.url)

    assert response is not None
    assert response.status == 409
    assert_proxy_page(page, "Sandbox is paused", site.sandbox_id)
    expect(page.locator("main")).to_contain_text("auto-resume is off")
    expect(page.locator("main")).to_contain_text(f'Sandbox.connect("{site.sandbox_id}")')
    assert requests == ["/"]  # self-contained: nothing else to load
    assert site.state() == "paused"  # looking at it did not wake it
    screenshot(page, "4-paused-without-auto-resume")

    Sandbox.connect(site.sandbox_id, **sdk_options(platform))  # what the page says to do
    page.reload()
    expect(page.locator("#title")).to_have_text("Served from a sandbox")


def test_an_unknown_sandbox_shows_a_not_found_page(
    page: Page, platform: PlatformProcess, screenshot: Screenshot
) -> None:
    sandbox_id = "nosuchsandbox0000000"
    requests = record_requests(page)

    response = page.goto(f"http://8000-{sandbox_id}.{platform.domain}/")

    assert response is not None
    assert response.status == 502
    assert_proxy_page(page, "Sandbox not found", sandbox_id)
    expect(page.locator("main")).to_contain_text("The sandbox was not found")
    assert requests == ["/"]
    screenshot(page, "5-unknown-sandbox")
