"""Pick the event loop: uvloop where it is installed, asyncio's own otherwise.

A loop *factory* (for `asyncio.Runner`) rather than a global policy, so importing
wakeproxy never changes how anyone else's code runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop
