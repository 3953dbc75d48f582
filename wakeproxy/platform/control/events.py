"""Lifecycle events of the embedded platform's sandboxes, one structured log line each.

Every line is logged by `wakeproxy.platform.sandboxes` with the message `sandbox <event>`
and the fields `event`, `sandbox_id` and `duration` (seconds the step took; for `timeout`
and `exit`, how long the sandbox had lived), plus what the event adds:

    create   template_id
    pause    trigger: "api" | "timeout" | "restart"
    resume   trigger: "api" (connect/resume) | "traffic" | "restart"
    timeout  action: "pause" | "kill", late (seconds after end_at)
    kill     trigger: "api" | "timeout" | "exit" | "shutdown", lived
    exit     reason: "exited" | "oom" | "signal", detail (a warning)
    failed   what: "pause" | "resume" | "record", trigger, error (an error)

With `--log-format json` each is one JSON object, so `jq 'select(.event=="exit")'` finds
them.
"""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger("wakeproxy.platform.sandboxes")

EventName = Literal["create", "pause", "resume", "timeout", "kill", "exit", "failed"]
Trigger = Literal["api", "timeout", "traffic", "restart", "exit", "shutdown"]


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
