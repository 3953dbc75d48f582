"""Which runtime runs the platform's sandboxes (`platform.isolation`), and what size a
sandbox is, as the API reports it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

from wakeproxy.config import PlatformConfig
from wakeproxy.errors import ConfigError
from wakeproxy.platform.runtime import oci
from wakeproxy.platform.runtime.containers import (
    IsolationUnavailable,
    RuncRuntime,
    open_files_limit,
)
from wakeproxy.platform.runtime.runtime import ProcessRuntime

log = logging.getLogger(__name__)


def sandbox_runtime(data_dir: Path, settings: PlatformConfig) -> RuncRuntime | ProcessRuntime:
    """runc containers, or (`isolation = "none"`, asked for explicitly) plain processes.
    A machine that cannot isolate is a `ConfigError` saying what to install, never a
    silent fallback to sandboxes that own the host."""
    if settings.isolation == "none":
        log.warning(
            "platform.isolation is none: sandboxes are plain processes of this user, with "
            "its files and rights on the host; run only trusted code in them"
        )
        return ProcessRuntime(data_dir, survive_restart=settings.keep_sandboxes)
    limits = oci.Limits(
        memory_mb=settings.sandbox_memory_mb,
        cpu_count=settings.sandbox_cpu_count,
        open_files=open_files_limit(),
    )
    try:
        return RuncRuntime.for_data_dir(
            data_dir, limits=limits, survive_restart=settings.keep_sandboxes
        )
    except IsolationUnavailable as exc:
        reason = (
            f"this machine cannot isolate sandboxes: {exc}. Install what is missing, or, "
            "for trusted code only, start with --isolation none"
        )
        raise ConfigError([("platform.isolation", reason)]) from exc


class Size(TypedDict, total=False):
    cpu_count: int
    memory_mb: int


def sandbox_size(settings: PlatformConfig) -> Size:
    """`cpu_count` and `memory_mb` for the API: the limits, when sandboxes have them (else
    the API reports the host's)."""
    if settings.isolation == "none":
        return {}
    return {"cpu_count": settings.sandbox_cpu_count, "memory_mb": settings.sandbox_memory_mb}
