"""Sandboxes that serve the little web app in `site/`, made with the real `e2b` SDK.

`SiteSandbox.create(platform, ...)` uploads the app (its page, CSS, JavaScript, a PNG
made here, and `site/server.py`) and starts the server in the background. The page
shows its host, runs its script, loads the image and opens a WebSocket that echoes.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2b import Sandbox
from platform_process import PlatformProcess
from support import free_port

SITE = Path(__file__).parent / "site"
SITE_FILES = ("index.html", "style.css", "app.js", "server.py")
REMOTE_SITE = "/home/user/site"
# `server.py --after` waits for this file before it listens.
START_SIGNAL = "/home/user/start-now"
LOGO_SIZE = 48


def sdk_options(platform: PlatformProcess) -> dict[str, Any]:
    """What the SDK reads from `E2B_*` variables, given directly (no process-wide state)."""
    env = platform.env
    return {
        "api_key": env["E2B_API_KEY"],
        "api_url": env["E2B_API_URL"],
        "sandbox_url": env["E2B_SANDBOX_URL"],
    }


@dataclass
class SiteSandbox:
    sandbox: Sandbox
    port: int

    @classmethod
    def create(
        cls, platform: PlatformProcess, *, auto_resume: bool = True, delayed: bool = False
    ) -> SiteSandbox:
        """A running sandbox serving the app; with `delayed`, its server listens only
        once the test calls `release()`."""
        sandbox = Sandbox.create(
            lifecycle={"on_timeout": "pause", "auto_resume": auto_resume},
            **sdk_options(platform),
        )
        site = cls(sandbox, free_port())
        site.start(delayed=delayed)
        return site

    @property
    def sandbox_id(self) -> str:
        return str(self.sandbox.sandbox_id)

    @property
    def url(self) -> str:
        return f"http://{self.sandbox.get_host(self.port)}/"

    def start(self, *, delayed: bool) -> None:
        for name in SITE_FILES:
            self.sandbox.files.write(f"{REMOTE_SITE}/{name}", (SITE / name).read_text())
        self.sandbox.files.write(f"{REMOTE_SITE}/logo.png", png_square(LOGO_SIZE))
        command = f"python3 {REMOTE_SITE}/server.py {self.port}"
        if delayed:
            command += f" --after {START_SIGNAL}"
        self.sandbox.commands.run(command, background=True, timeout=0)
        if not delayed:
            self.wait_until_listening()

    def wait_until_listening(self) -> None:
        probe = f"until (: </dev/tcp/127.0.0.1/{self.port}) 2>/dev/null; do sleep 0.05; done"
        self.sandbox.commands.run(f"bash -c '{probe}'", timeout=30)

    def release(self) -> None:
        """Let a `delayed` server start listening."""
        self.sandbox.files.write(START_SIGNAL, "")

    def pause(self) -> None:
        assert self.sandbox.pause()
        assert self.state() == "paused"

    def state(self) -> str:
        """The platform's word for it (asked through the API, which never wakes it)."""
        return str(self.sandbox.get_info().state.value)

    def wait_for_state(self, wanted: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.state()) != wanted:
            assert time.monotonic() < deadline, f"still {state}, not {wanted}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.sandbox.kill()


def png_square(size: int, rgb: tuple[int, int, int] = (0, 100, 60)) -> bytes:
    """A square PNG of one colour, `size` pixels a side."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack("!I", len(data)) + body + struct.pack("!I", zlib.crc32(body))

    row = b"\0" + bytes(rgb) * size  # filter type 0, then the pixels
    header = struct.pack("!IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )
