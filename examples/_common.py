"""What the examples share: the environment check, preview-URL requests, state polling.

Preview URLs look like `http://3000-<sandboxId>.localhost:8080/`. Browsers resolve every
`*.localhost` name to loopback by themselves, but Python's resolver may not (it asks the
system, and not every system knows `*.localhost`). So `get` connects to the proxy's own
address, `E2B_SANDBOX_URL`, and names the preview host in the `Host` header: the proxy
routes by that header alone, so the request is exactly what a browser would send.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

from e2b import Sandbox

ENV_NAMES = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")


def check_env() -> None:
    """Stop with a hint unless the three variables `wakeproxy up` prints are set (without
    `E2B_API_URL` the SDK would talk to E2B's cloud instead)."""
    missing = [name for name in ENV_NAMES if not os.environ.get(name)]
    if missing:
        sys.exit(f"set {', '.join(missing)}: run `wakeproxy up` and export the lines it prints")


def get(host: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET `http://<host><path>` through the proxy: (status, body), errors included."""
    url = os.environ["E2B_SANDBOX_URL"].rstrip("/") + path
    request = urllib.request.Request(url, headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for_page(
    host: str, headers: dict[str, str] | None = None, seconds: float = 30.0
) -> tuple[int, str]:
    """Poll the preview URL until the server in the sandbox answers (it needs a moment
    to start listening; until then the proxy answers 502 "port is not open")."""
    deadline = time.monotonic() + seconds
    while True:
        status, body = get(host, headers=headers)
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def wait_for_state(sandbox: Sandbox, wanted: str, seconds: float = 30.0) -> None:
    """Poll `get_info` (a control-plane call: it never wakes the sandbox) until the
    sandbox is in state `wanted`."""
    deadline = time.monotonic() + seconds
    while (state := sandbox.get_info().state) != wanted:
        assert time.monotonic() < deadline, f"still {state} after {seconds} s, not {wanted}"
        time.sleep(0.1)
