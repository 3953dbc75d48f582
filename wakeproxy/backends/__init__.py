"""Backends: where sandbox state comes from and where their ports are reached."""

from wakeproxy.backends.base import (
    Backend,
    Lifecycle,
    SandboxInfo,
    SandboxState,
    Upstream,
)

__all__ = ["Backend", "Lifecycle", "SandboxInfo", "SandboxState", "Upstream"]
