"""Ends a platform's sandboxes when the platform process ends, however it ends.

Run by `RuncRuntime` as `python -I watchdog.py <runc> <runc root>` with its stdin a pipe
from the platform (standard library only). runc containers do not depend on the process
that created them, so a platform killed with SIGKILL would leave them running; when the
pipe closes (the platform exited, or let its sandboxes go at a clean stop, having
killed them itself) this deletes every container runc still has under that root, then
exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(runc: str, root: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the platform
    while os.read(0, 4096):
        pass
    base = [runc, "--root", root]
    try:
        listing = subprocess.run(
            [*base, "list", "--quiet"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 1
    for container in listing.stdout.decode().split():
        try:
            subprocess.run([*base, "delete", "--force", container], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
