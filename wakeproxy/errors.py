"""The one exception tree of wakeproxy.

    WakeproxyError
    ├── ConfigError                 bad configuration (key path + reason)
    ├── ListenError                 a listener could not be opened
    ├── StoreUnavailable            the shared state store (Redis) failed or timed out
    └── ProxyError                  something the proxy answers a client with
        ├── RouteError              malformed host, sandbox id or port          → 400
        │   ├── HeadTooLarge        request head over its bound                → 431
        │   ├── UnknownHost         Host under none of the configured domains  → 404
        │   └── NoSandboxNamed      base host without the E2B headers          → 400
        ├── BadSignature            signed file URL that no sandbox signed      → 401
        ├── BodyTimeout             request body stopped making progress        → 408
        ├── Forbidden               traffic token missing or wrong             → 403
        ├── BackendError            raised by a `Backend`, translated at its edge
        │   ├── NotFound            sandbox unknown or killed                  → 502
        │   ├── NotAllowed          paused with auto-resume off, bad creds     → 409
        │   ├── Conflict            still transitioning                        → 503
        │   │   ├── PauseInProgress a pause outlasted the transition budget
        │   │   └── ResumeInProgress  a resume elsewhere outlasted it
        │   ├── Unavailable         backend down or timed out                  → 503
        │   │   ├── LookupTimeout   no answer whether the sandbox exists in time
        │   │   ├── WakeFailed      the resume (or its port's address) failed
        │   │   └── ShuttingDown    the proxy is stopping
        │   └── LimitExceeded       backend refuses more work                  → 503
        ├── Overloaded              held-request limit                         → 503
        ├── NotWoken                a no-wake rule matched, sandbox not running → 503
        ├── WakeTimeout             wake still running at the hold deadline    → 503
        ├── UpstreamBusy            no connection to the port came free in time → 503
        ├── PortNotOpen             upstream refused the connection            → 502
        ├── UpstreamClosed          upstream closed or spoke no HTTP before its head → 502
        └── UpstreamTimeout         upstream did not answer in time            → 504

Every `ProxyError` carries the HTTP status, a `reason` that names what happened (the
JSON's `reason`, the label of `wakeproxy_rejected_total`, the access log's `reason`) and a
message that tells the client what to do; `wakeproxy.proxy.responses` renders it as JSON
or as a small HTML page.
Library errors (`aiohttp.ClientError`, `redis.RedisError`, `OSError`) are translated
into this tree where they enter wakeproxy's code, never further in.
"""

from __future__ import annotations


class WakeproxyError(Exception):
    """Base of every error wakeproxy raises on purpose."""


class ConfigError(WakeproxyError):
    """A configuration value is missing, malformed or contradicts another."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))


class StoreUnavailable(WakeproxyError):
    """The shared state store did not answer in time or failed.

    Never reaches a client: whoever catches it carries on without shared state (local
    single-flight, backend lookups) until the store is back.
    """


class ListenError(WakeproxyError):
    """A listener could not be opened (address in use, not permitted)."""


class ProxyError(WakeproxyError):
    """An error the proxy answers the client with, instead of forwarding."""

    status: int = 502
    reason: str = "proxy_error"
    retry_after: float | None = None
    envd_body: bool = False
    """Rendered as envd's `{"code", "message"}` only: an answer SDK tests compare whole."""
    held_for: float = 0.0
    """Seconds the request was held for a wake before it got this answer (0: not held)."""
    wake_trigger: bool = False
    """The request's arrival started the wake that ended in this answer."""
    wake: object | None = None
    """That wake once it is over, a `wake.timing.FinishedWake` (for the request's trace;
    not typed as one here, so that this module imports nothing of wakeproxy)."""

    def __init__(
        self,
        message: str,
        *,
        sandbox_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sandbox_id = sandbox_id
        if retry_after is not None:
            self.retry_after = retry_after


class RouteError(ProxyError):
    status = 400
    reason = "bad_request"


class HeadTooLarge(RouteError):
    status = 431
    reason = "head_too_large"


class BodyTimeout(ProxyError):
    status = 408
    reason = "body_timeout"


class UnknownHost(RouteError):
    status = 404
    reason = "unknown_host"


class NoSandboxNamed(RouteError):
    """A base host without the E2B headers: nothing names the sandbox, unless the request
    is a signed file URL (`proxy/signed.py`)."""


class BadSignature(ProxyError):
    """Answered for envd (the signed URL names no sandbox to ask), so in envd's body."""

    status = 401
    reason = "bad_signature"
    envd_body = True


class Forbidden(ProxyError):
    status = 403
    reason = "forbidden"


class BackendError(ProxyError):
    """Raised by backends; the subclass says how the proxy answers."""


class NotFound(BackendError):
    status = 502
    reason = "sandbox_not_found"


class NotAllowed(BackendError):
    status = 409
    reason = "sandbox_paused"


class Conflict(BackendError):
    status = 503
    reason = "sandbox_transitioning"
    retry_after = 1.0


class PauseInProgress(Conflict):
    reason = "pause_in_progress"


class ResumeInProgress(Conflict):
    reason = "resume_in_progress"


class Unavailable(BackendError):
    status = 503
    reason = "backend_unavailable"
    retry_after = 2.0


class LookupTimeout(Unavailable):
    reason = "lookup_timeout"


class WakeFailed(Unavailable):
    reason = "wake_failed"


class ShuttingDown(Unavailable):
    reason = "shutting_down"


class LimitExceeded(BackendError):
    status = 503
    reason = "limit_exceeded"
    retry_after = 5.0


class Overloaded(ProxyError):
    status = 503
    reason = "hold_queue_full"
    retry_after = 2.0


class NotWoken(ProxyError):
    """A no-wake rule matched a request for a sandbox that is not running. No Retry-After:
    asking again does not help until other traffic wakes the sandbox."""

    status = 503
    reason = "no_wake_rule"


class WakeTimeout(ProxyError):
    status = 503
    reason = "wake_in_progress"
    retry_after = 2.0


class UpstreamBusy(ProxyError):
    status = 503
    reason = "upstream_busy"
    retry_after = 1.0


class PortNotOpen(ProxyError):
    status = 502
    reason = "port_not_open"


class UpstreamClosed(ProxyError):
    status = 502
    reason = "upstream_closed"


class UpstreamTimeout(ProxyError):
    status = 504
    reason = "upstream_timeout"
