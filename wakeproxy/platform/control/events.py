"""Lifecycle events of the embedded platform's sandboxes, one structured log line each.

Every line is logged by `wakeproxy.platform.sandboxes` with the message `sandbox <event>`
and the fields `event`, `sandbox_id` and `duration` (seconds the step took; for `exit`
and `kill`, how long the sandbox lived), plus what the event adds:

    create   template_id
    pause    trigger: "api" | "timeout" | "restart"
    resume   trigger: "api" (connect/resume) | "traffic" | "restart"
    timeout  action: "pause" | "kill"
    kill     trigger: "api" | "timeout" | "exit" | "shutdown"
    exit     reason: "exited" | "oom" | "signal", detail
    failed   what ("create", "pause", "resume", "kill", "record"), error

With `--log-format json` each is one JSON object, so `jq 'select(.event=="exit")'` finds
them.
"""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger("wakeproxy.platform.sandboxes")

EventName = Literal["create", "pause", "resume", "timeout", "kill", "exit", "failed"]


def logged(
    event: EventName,
    sandbox_id: str,
    duration: float,
    *,
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """Log one lifecycle event (see the module docstring for its fields)."""
    extra = {"event": event, "sandbox_id": sandbox_id, "duration": round(duration, 6), **fields}
    log.log(level, "sandbox %s", event, extra=extra)
