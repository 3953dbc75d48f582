"""Touching files as a sandbox's user, from the agent (root inside the sandbox).

The filesystem uid and gid (setfsuid(2)/setfsgid(2)) are per thread and decide only
file permission checks and the owner of new files: a worker thread takes the user's on,
does the file operation and takes root's back, so that what `user` may not write fails
as it would for `user`, and what it writes is its own. Nothing else of the agent runs
as the user meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from typing import TypeVar

from wakeproxy.platform.agent.paths import User

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def call_as(user: User, function: Callable[..., T], *args: object) -> T:
    """`function(*args)` with `user`'s file identity on this thread."""
    if user.uid is None or user.gid is None:
        return function(*args)
    old_gid = _libc.setfsgid(user.gid)
    old_uid = _libc.setfsuid(user.uid)
    try:
        return function(*args)
    finally:
        _libc.setfsuid(old_uid)
        _libc.setfsgid(old_gid)


async def run_as(user: User, function: Callable[..., T], *args: object) -> T:
    """`call_as` on a worker thread."""
    return await asyncio.to_thread(call_as, user, function, *args)
