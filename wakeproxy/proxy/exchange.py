"""One client request, from its parsed head to the last byte of its answer.

Every request ends in exactly one of: a relayed upstream response, a proxy-made error
(JSON for API clients, a page for browsers) or, for a browser navigation whose sandbox
is still waking, the waiting page. However it ends (a client that leaves counts as
499, as in nginx), it is counted once and written to the access log.

The hot path is synchronous: a running sandbox in the cache and an idle kept-alive
connection to its port mean the request head is rewritten and written upstream inside
the callback that parsed it, with no task and no await. Anything else (a wake to wait
for, a connection to open) runs in one task per request; a held request costs that
task and this object, and its body stays in the client's socket (reading pauses past
`_BUFFER_LIMIT`), so memory does not grow with uploads.

Bodies stream both ways with back-pressure, re-framed by the proxy on each hop
(`wire`), never buffered whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from wakeproxy.accesslog import AccessLog
from wakeproxy.backends.base import AGENT_PORT, SignedFileLookup
from wakeproxy.errors import (
    NoSandboxNamed,
    PortNotOpen,
    ProxyError,
    ShuttingDown,
    UpstreamBusy,
    UpstreamClosed,
    UpstreamTimeout,
)
from wakeproxy.gateway import Gateway
from wakeproxy.proxy.decisions import continue_expected, may_resend
from wakeproxy.proxy.headers import (
    ForwardedRules,
    Headers,
    HeaderView,
    downstream_response_headers,
    wait_headers,
)
from wakeproxy.proxy.pages import WAIT_PATH, waiting_page
from wakeproxy.proxy.phase import HEAD_SENT, Phase, moved
from wakeproxy.proxy.requestid import RequestIds
from wakeproxy.proxy.responses import for_sdk_port, render_error, wants_html
from wakeproxy.proxy.signed import signed_file, signed_target
from wakeproxy.proxy.upstream_pool import Link, PoolBusy, UpstreamPool
from wakeproxy.proxy.wire import (
    CONTINUE,
    LAST_CHUNK,
    MAX_HEAD,
    MAX_LINE,
    Framing,
    RequestHead,
    chunk,
    decoded_path,
    encoded,
    origin_form,
    request_head,
    response_framing,
    response_head,
    whole_response,
)
from wakeproxy.routing import Router, Target
from wakeproxy.tracing.traced import Traced, Tracer
from wakeproxy.wake import Acquired, StillWaking
from wakeproxy.wake.timing import FinishedWake

if TYPE_CHECKING:
    from wakeproxy.proxy.connection import ClientConnection

log = logging.getLogger("wakeproxy")

CLIENT_GONE = 499
"""The status recorded for a request whose client left before it was answered."""

_UPGRADE = ((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"))

_BUFFER_LIMIT = 64 * 1024
"""Request body bytes read ahead of a connection to the upstream; past this the client's
socket holds the rest (TCP back-pressure)."""


class Recorder(Protocol):
    """What the relay reports; `wakeproxy.metrics.Metrics` implements it."""

    def request_finished(self, kind: str, code: int, seconds: float) -> None:
        """`kind`: "http" or "websocket"; `code`: the status answered (499: client left)."""

    def rejected(self, reason: str) -> None:
        """The proxy answered a request itself (the error's `reason`) instead of forwarding it."""

    def upstream_error(self, reason: str) -> None:
        """Talking to a sandbox's port failed: "refused", "timeout", "closed" (before the
        response head), "aborted" (after it) or "upgrade_refused" (WebSocket)."""

    def websocket_opened(self) -> None: ...

    def websocket_closed(self) -> None: ...


@dataclass(slots=True)
class Services:
    """What every exchange of one proxy process shares."""

    router: Router
    gateway: Gateway
    pool: UpstreamPool
    rules: ForwardedRules
    recorder: Recorder
    access: AccessLog | None
    idle_timeout: float
    websocket_max_message: int
    body_timeout: float = 60.0
    body_min_rate: int = 1024
    ids: RequestIds = field(default_factory=RequestIds)
    tracer: Tracer | None = None  # None: tracing off, and nothing of it runs
    signed: SignedFileLookup | None = None
    """Finds the sandbox of a signed file URL on the base host (None: such URLs get 400)."""


def port_not_open(sandbox_id: str, port: int) -> PortNotOpen:
    return PortNotOpen(
        f"The sandbox is running but port is not open: nothing accepts connections "
        f"on port {port} of sandbox {sandbox_id}",
        sandbox_id=sandbox_id,
    )


class Exchange:
    __slots__ = (
        "_acquired",
        "_body",
        "_buffered",
        "_by_signature",
        "_conn",
        "_extra",
        "_held_for",
        "_in_flight",
        "_link",
        "_out",
        "_pending",
        "_phase",
        "_raw_method",
        "_raw_origin",
        "_reason",
        "_request_id",
        "_retried",
        "_services",
        "_spans",
        "_started",
        "_status",
        "_target",
        "_task",
        "_trace_on",
        "_triggered",
        "_wake",
        "body_bytes",
        "body_done",
        "framing",
        "headers",
        "host",
        "keep_alive",
        "method",
        "origin",
        "path",
        "version",
        "websocket",
    )

    def __init__(self, conn: ClientConnection, services: Services, head: RequestHead) -> None:
        self._conn = conn
        self._services = services
        self._started = time.perf_counter()
        method, target, framing = head.method, head.target, head.framing
        self.method = method.decode("ascii")
        self.origin = origin_form(target.decode("latin-1"))
        self.path = decoded_path(self.origin)
        # As they go upstream: the client's own bytes unless the target had to change.
        self._raw_method = method
        self._raw_origin = target  # already in the form the upstream gets (`upstream_target`)
        self.version = head.version
        self.headers = head.headers
        self.host = head.host
        self.keep_alive = head.keep_alive  # turned off when this answer must end it
        self.framing = framing
        self.websocket = head.websocket
        self.body_done = framing is Framing.NONE
        self.body_bytes = 0
        self._body: list[bytes] | None = []  # read ahead of a link; None once one took it
        self._buffered = 0
        self._target: Target | None = None
        self._acquired: Acquired | None = None
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._extra: Headers | None = None
        self._held_for = 0.0
        self._triggered = False
        self._reason: str | None = None  # why the proxy answered itself, if it did
        self._request_id: bytes | None = None
        self._spans: object | None = None  # the tracer's, once forwarded with tracing on
        self._trace_on: bool | None = None  # the tracer's answer, once asked
        self._wake: FinishedWake | None = None  # the wake this request triggered
        self._in_flight = False
        self._retried = False
        self._by_signature = False
        self._status = 0
        self._out = Framing.NONE
        self._pending: list[bytes] = []  # response bytes to write at the end of a read
        self._phase = Phase.ROUTING

    @property
    def request_id(self) -> bytes:
        """This request's id (`proxy.requestid`), settled the first time it is asked for."""
        request_id = self._request_id
        if request_id is None:
            services = self._services
            trusted = services.rules.is_trusted(self._conn.peer_ip)
            request_id = self._request_id = services.ids.for_request(self.headers, trusted)
        return request_id

    # -- from the client connection ---------------------------------------------------

    def start(self) -> None:
        """Route and admit the request; forward it at once when nothing needs awaiting."""
        services = self._services
        headers = HeaderView(self.headers)
        try:
            target = self._route(headers)
            self._target = target
            if self.path == WAIT_PATH:
                self._spawn(self._wait(target))
                return
            acquired = services.gateway.admit(target, self.method, self.path, headers)
        except ProxyError as error:
            self._reject(error)
            return
        if acquired is not None and self.framing is Framing.NONE and not self.websocket:
            # A request with a body is not sent again if a kept-alive connection turns
            # out closed under it, so it takes one a loop turn later (in `_slow`), once
            # the event loop has seen any close that arrived together with the request.
            link = services.pool.take(acquired.upstream)
            if link is not None:
                self._attach(acquired, link)
                return
        self._spawn(self._slow(target, headers, acquired))

    def _route(self, headers: HeaderView) -> Target:
        services = self._services
        host = self.host
        try:
            return services.router.route(None if host is None else host.decode("latin-1"), headers)
        except NoSandboxNamed:
            grant = None if services.signed is None else signed_file(self.method, self.origin)
            if services.signed is None or grant is None:
                raise
            target = signed_target(services.signed, grant, time.time())
            self._by_signature = True  # its signature is the right to wake the sandbox
            return target

    def feed_body(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.send_more(chunk(data) if self.framing is Framing.CHUNKED else data)
        elif self._body is not None:
            self._body.append(data)
            self._buffered += len(data)
            if self._buffered > _BUFFER_LIMIT:
                self._conn.pause_reading_for_body()
        # else: the request was answered without forwarding; the rest of its body is
        # read and dropped so the connection can carry the next request.

    def body_complete(self) -> None:
        self.body_done = True
        link = self._link
        if link is not None and self.framing is Framing.CHUNKED:
            link.send_more(LAST_CHUNK)
        if self.finished:
            self._release()

    def client_congested(self, congested: bool) -> None:
        link = self._link
        if link is not None and link.transport is not None:
            if congested:
                link.transport.pause_reading()
            else:
                link.transport.resume_reading()

    def give_up(self, error: ProxyError) -> None:
        """This exchange cannot go on (its body is malformed or too slow, the proxy
        stops): `error` is the answer if nothing was answered yet, else the answer is
        cut; either way the connection then closes (where the next request would start
        is unknown)."""
        self.keep_alive = False
        if self.finished:
            self._release()
            return
        if self._task is not None:
            self._task.cancel()
        link = self._link
        if link is not None:
            self._link = None
            link.close()
        if self._phase in HEAD_SENT:
            self._cut()
            return
        if self._target is not None and error.sandbox_id is None:
            error.sandbox_id = self._target.sandbox_id
        self._reject(error)

    def shed(self) -> None:
        """The proxy stops: 503 if nothing was answered yet (the sandbox may still be
        waking, or a connection to it be awaited), else the answer is cut."""
        if self.finished:
            return
        self.give_up(
            ShuttingDown(
                "wakeproxy is shutting down before this request could be answered; "
                "send it again in a moment"
            )
        )

    @property
    def finished(self) -> bool:
        """Answered (perhaps still reading the rest of a request body it will drop)."""
        return self._phase >= Phase.ANSWERED

    def client_gone(self) -> None:
        if self.finished:
            return
        if self._task is not None:
            self._task.cancel()
        link = self._link
        if link is not None:
            self._link = None
            link.close()
        self.keep_alive = False
        self._finish(self._status if self._phase in HEAD_SENT else CLIENT_GONE)

    # -- getting a link to the upstream ------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._phase = moved(self._phase, Phase.WAITING)
        self._task = asyncio.get_running_loop().create_task(work)

    async def _slow(
        self, target: Target, headers: Mapping[str, str], acquired: Acquired | None
    ) -> None:
        services = self._services
        try:
            for last in (False, True):
                if acquired is None:
                    acquired = await services.gateway.resolve(
                        target,
                        self.method,
                        self.path,
                        headers,
                        navigation=wants_html(headers),
                        signed=self._by_signature,
                    )
                link = (
                    None if self.websocket else services.pool.take(acquired.upstream)
                ) or await self._open(acquired, target, last)
                if link is not None:
                    self._attach(acquired, link)
                    return
                # Nothing accepted the connection, so nothing was sent: the sandbox may
                # have been paused under us, and the wake path brings it back.
                services.gateway.refused(target)
                acquired = None
        except StillWaking as waking:
            self._waiting(waking)
        except ProxyError as error:
            self._reject(error, upstream=self._in_flight)
        except Exception:
            extra = {"event": "internal_error", "request_id": self.request_id.decode()}
            log.exception("request failed", extra=extra)
            self._reason = "internal_error"
            self._answer(500, [(b"Content-Type", b"text/plain")], b"internal proxy error\n")

    async def _open(self, acquired: Acquired, target: Target, last: bool) -> Link | None:
        """A new link to the upstream; None when refused and worth one more try."""
        self._note_held(acquired)
        self._begin_in_flight(target)
        recorder = self._services.recorder
        pool = self._services.pool
        try:
            if self.websocket:
                return await pool.open_unpooled(acquired.upstream)
            return await pool.open(acquired.upstream)
        except PoolBusy as busy:  # one name per clause: compiled, a name has one type
            recorder.upstream_error("busy")
            raise UpstreamBusy(
                f"All {busy.limit} connections to port {target.port} of sandbox "
                f"{target.sandbox_id} stayed busy; retry in a moment",
                sandbox_id=target.sandbox_id,
            ) from busy
        except TimeoutError as timed_out:
            recorder.upstream_error("timeout")
            raise UpstreamTimeout(
                f"Port {target.port} of sandbox {target.sandbox_id} did not accept "
                f"a connection in time",
                sandbox_id=target.sandbox_id,
            ) from timed_out
        except OSError as refused:
            recorder.upstream_error("refused")
            if last:
                raise port_not_open(target.sandbox_id, target.port) from refused
            return None

    def _note_held(self, acquired: Acquired) -> None:
        if acquired.held_for and acquired is not self._acquired:
            self._held_for += acquired.held_for
            self._triggered = self._triggered or acquired.triggered_wake
            self._wake = acquired.wake or self._wake
            self._extra = wait_headers(self._held_for)
        self._acquired = acquired

    def _begin_in_flight(self, target: Target) -> None:
        # An open WebSocket session does not keep its sandbox from pausing: it is woken
        # again by the session's next message.
        if not self._in_flight and not self.websocket:
            self._in_flight = True
            self._services.gateway.forwarding(target)

    # -- forwarding --------------------------------------------------------------------

    def _attach(self, acquired: Acquired, link: Link) -> None:
        target = self._target
        assert target is not None
        self._note_held(acquired)
        self._begin_in_flight(target)
        self._phase = moved(self._phase, Phase.ATTACHED)
        services = self._services
        conn = self._conn
        self._link = link
        headers = services.rules.upstream_request_headers(
            self.headers, conn.peer_ip, conn.scheme, self.host or conn.local_host, self.request_id
        )
        if services.tracer is not None and self._traced_now(services.tracer):
            headers = self._traced_upstream(services.tracer, acquired, headers)
        if self.websocket:
            headers.extend(_UPGRADE)
        out = [request_head(self._raw_method, self._raw_origin, headers, self.framing)]
        body = self._body
        self._body = None
        if continue_expected(self.headers, self.version, body_to_come=not self.body_done):
            conn.write(CONTINUE)
        if body and self.framing is Framing.CHUNKED:
            out.extend(chunk(piece) for piece in body)
        elif body:
            out.extend(body)
        if self.body_done and self.framing is Framing.CHUNKED:
            out.append(LAST_CHUNK)
        link.send(self, b"".join(out), head_request=self.method == "HEAD", upgrading=self.websocket)
        if self._buffered > _BUFFER_LIMIT:
            conn.resume_reading_for_body()

    def upstream_silent(self) -> None:
        """Like nginx's proxy_read_timeout: a limit on silence, not on how long a
        stream may last."""
        self._link = None
        self._services.recorder.upstream_error("timeout")
        if self._phase in HEAD_SENT:
            self._cut()
            return
        target = self._target
        assert target is not None
        self._reject(
            UpstreamTimeout(
                f"Port {target.port} of sandbox {target.sandbox_id} did not answer in time",
                sandbox_id=target.sandbox_id,
            ),
            upstream=True,
        )

    # -- from the link (ResponseSink) --------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: Headers) -> None:
        self._status = status
        if self.websocket:
            if status == 101:
                pairs = [*downstream_response_headers(headers), *_UPGRADE, *(self._extra or ())]
                self._phase = moved(self._phase, Phase.ANSWERING)
                self._pending.append(
                    response_head(self.version, 101, reason, pairs, Framing.NONE, True)
                )
                return
            self._services.recorder.upstream_error("upgrade_refused")
        out = response_framing(
            status, headers, head_request=self.method == "HEAD", client_http11=self.version != "1.0"
        )
        self._out = out
        pairs = downstream_response_headers(headers)
        if self._extra is not None:
            pairs.extend(self._extra)
        if out is Framing.CLOSE:
            self.keep_alive = False
        self._phase = moved(self._phase, Phase.ANSWERING)
        self._pending.append(
            response_head(self.version, status, reason, pairs, out, self.keep_alive)
        )

    def response_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        self._pending.append(chunk(data) if self._out is Framing.CHUNKED else data)

    def flush(self) -> None:
        """Write what the upstream's last read produced, as one write: a small response's
        head and body leave in one packet, not two."""
        pending = self._pending
        if pending:
            self._conn.write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()

    def response_end(self, reusable: bool) -> None:
        link = self._link
        self._link = None
        if self._out is Framing.CHUNKED:
            self._pending.append(LAST_CHUNK)
        self.flush()
        if link is not None:
            if reusable and self.body_done and not self.websocket:
                self._services.pool.release(link)
            else:
                link.close()
        self._finish(self._status)

    def upstream_failed(self, error: str) -> None:
        link = self._link
        self._link = None
        if self._phase in HEAD_SENT:
            self._services.recorder.upstream_error("aborted")
            self._cut()
            return
        acquired = self._acquired
        target = self._target
        assert acquired is not None
        assert target is not None
        if link is not None and may_resend(
            self._raw_method,
            self.framing,
            reused=link.reused,
            heard=link.heard or error != "closed",
            resent=self._retried,
        ):
            # A kept-alive connection the upstream closed just as this request went out.
            self._retried = True
            self._spawn(self._slow(target, HeaderView(self.headers), acquired))
            return
        self._services.recorder.upstream_error("closed")
        what = _FAILURES.get(error, "closed the connection")
        self._reject(
            UpstreamClosed(
                f"Port {target.port} of sandbox {target.sandbox_id} {what} before answering",
                sandbox_id=target.sandbox_id,
            ),
            upstream=True,
        )

    def upgraded(self, rest: bytes) -> None:
        link = self._link
        target = self._target
        assert link is not None
        assert target is not None
        self._link = None
        self._phase = moved(self._phase, Phase.TUNNELLED)
        gateway = self._services.gateway
        self._conn.hand_to_tunnel(
            link,
            rest,
            gate=lambda: gateway.running_now(target),
            wake=lambda: gateway.ensure_running(target),
            on_end=lambda: self._finish(101),
        )

    def upstream_congested(self, congested: bool) -> None:
        if congested:
            self._conn.pause_reading_for_upstream()
        else:
            self._conn.resume_reading_for_upstream()

    # -- answers the proxy makes itself ------------------------------------------------

    async def _wait(self, target: Target) -> None:
        """The waiting page's long-poll: answers 200 once the sandbox serves the port."""
        try:
            await self._services.gateway.serving(target)
        except ProxyError as error:
            self._reject(error)
            return
        self._answer(
            200,
            [(b"Cache-Control", b"no-store"), (b"Content-Type", b"application/json")],
            b'{"ready": true, "sandboxId": "%s"}' % target.sandbox_id.encode(),
        )

    def _waiting(self, waking: StillWaking) -> None:
        self._held_for += waking.held_for
        self._triggered = self._triggered or waking.wake_trigger
        self._reason = waking.reason
        self._services.recorder.rejected(waking.reason)
        retry = max(1, math.ceil(waking.retry_after or 1))
        headers = encoded(
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Retry-After", str(retry)),
                ("Cache-Control", "no-store"),
            ]
        )
        if waking.held_for:
            headers.extend(wait_headers(waking.held_for))
        self._answer(503, headers, waiting_page(waking.sandbox_id or "", retry))

    def _reject(self, error: ProxyError, *, upstream: bool = False) -> None:
        """Answer with `error`; `upstream`: the relay's own failure, counted as such."""
        self._held_for += error.held_for
        self._triggered = self._triggered or error.wake_trigger
        if isinstance(error.wake, FinishedWake):
            self._wake = error.wake
        self._reason = error.reason
        if not upstream:
            self._services.recorder.rejected(error.reason)
        if self._target is not None and self._target.port == AGENT_PORT:
            error = for_sdk_port(error)
        html = wants_html(HeaderView(self.headers))
        rendered = render_error(error, html=html, request_id=self.request_id.decode())
        headers = encoded(rendered.headers)
        if self._held_for:
            headers.extend(wait_headers(self._held_for))
        self._answer(rendered.status, headers, rendered.body)

    def _answer(self, status: int, headers: Headers, body: bytes) -> None:
        if self.finished:
            return
        self._body = None  # whatever is still to come of the request body is dropped
        headers.append((b"X-Request-Id", self.request_id))
        head_only = self.method == "HEAD"
        if not head_only:
            self.body_bytes = len(body)
        body_out = whole_response(
            self.version, status, headers, body, self.keep_alive, head_only=head_only
        )
        self._conn.write(body_out)
        self._finish(status)

    def _cut(self) -> None:
        """The head is out, so the status can no longer say what went wrong: cut the
        connection so the client sees a truncated response, not a short "complete" one."""
        self.keep_alive = False
        self.flush()
        self._conn.abort()
        self._finish(self._status)

    # -- the end ----------------------------------------------------------------------

    def _finish(self, status: int) -> None:
        if self.finished:
            return
        self._phase = moved(self._phase, Phase.ANSWERED)
        services = self._services
        target = self._target
        if self._in_flight and target is not None:
            services.gateway.forwarded(target)
        seconds = time.perf_counter() - self._started
        if services.tracer is not None and self._traced_now(services.tracer):
            services.tracer.finished(self._traced(), self._spans, status)
        services.recorder.request_finished(
            "websocket" if self.websocket else "http", status, seconds
        )
        if services.access is not None:
            services.access.record(
                self.method,
                self.path,
                status,
                self.body_bytes,
                seconds,
                None if target is None else target.sandbox_id,
                None if target is None else target.port,
                self._held_for,
                self._triggered,
                self.websocket,
                self._reason,
                self.request_id,
                services.rules.client_address(self.headers, self._conn.peer_ip),
                self.host,
                self.headers,
            )
        if self.body_done or not self.keep_alive:
            self._release()

    # -- tracing (only with `Services.tracer`) --------------------------------------------

    def _traced_now(self, tracer: Tracer) -> bool:
        on = self._trace_on
        if on is None:
            on = self._trace_on = tracer.wants(self.headers)
        return on

    def _traced(self) -> Traced:
        target = self._target
        return Traced(
            self.method,
            self.path,
            self.host,
            self.headers,
            self.request_id,
            self._started,
            None if target is None else target.sandbox_id,
            None if target is None else target.port,
            self._held_for,
            self._triggered,
            self._wake,
            self._reason,
        )

    def _traced_upstream(self, tracer: Tracer, acquired: Acquired, headers: Headers) -> Headers:
        """The request's spans begin; the upstream gets their context as `traceparent`."""
        upstream = acquired.upstream
        address = upstream.unix_path or upstream.host
        self._spans, parent = tracer.forwarding(self._traced(), address, upstream.port)
        kept = [pair for pair in headers if pair[0].lower() != b"traceparent"]
        kept.append((b"traceparent", parent))
        return kept

    def _release(self) -> None:
        if self._phase is Phase.ANSWERED:
            self._phase = Phase.RELEASED
            self._conn.exchange_done(self)


_FAILURES = {
    "protocol": "did not answer with HTTP",
    "too_large": f"sent a response header line over {MAX_LINE} bytes or a head over {MAX_HEAD}",
}
