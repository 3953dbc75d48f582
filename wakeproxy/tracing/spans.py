"""The spans of one request, made with the OpenTelemetry SDK (see the package docstring)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wakeproxy import __version__
from wakeproxy.tracing.settings import TracingSettings
from wakeproxy.tracing.traced import Headers, Traced
from wakeproxy.wake.timing import FinishedWake

_CONTEXT_HEADERS: Final = (b"traceparent", b"tracestate")


class Spans:
    """A request's span and, once it is forwarded, its upstream span."""

    __slots__ = ("request", "upstream")

    def __init__(self, request: Span) -> None:
        self.request = request
        self.upstream: Span | None = None


class Tracing:
    """Makes every request's spans; one per proxy process."""

    def __init__(self, settings: TracingSettings, processor: SpanProcessor | None = None) -> None:
        """`processor`: where spans go; an OTLP/HTTP exporter behind a batching one when
        None."""
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        # Traces that start here are sampled by `wants`, before anything is built; the SDK
        # keeps those and follows a caller's sampled flag.
        self._ratio = settings.sample_ratio
        self._provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
        self._provider.add_span_processor(
            processor or BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint))
        )
        self._tracer = self._provider.get_tracer("wakeproxy", __version__)
        self._propagator = TraceContextTextMapPropagator()

    def wants(self, headers: Headers) -> bool:
        """Whether to trace this request: always when its caller sent a trace context
        (the caller's sampled flag then decides), else with the sample ratio. Asked once
        per request, before anything else: an unsampled one costs nothing more."""
        if self._ratio >= 1.0:
            return True
        for name, _ in headers:
            if len(name) == 11 and name.lower() == b"traceparent":
                return True
        return random.random() < self._ratio

    def forwarding(self, request: Traced, host: str, port: int) -> tuple[object, bytes]:
        """The request is about to go upstream to `host:port`: its spans so far, and the
        `traceparent` to send with it."""
        spans = self._begin(request)
        parent = spans.request
        if parent.is_recording():
            parent = spans.upstream = self._tracer.start_span(
                "upstream",
                context=set_span_in_context(spans.request),
                kind=SpanKind.CLIENT,
                attributes={"server.address": host, "server.port": port},
            )
        # Not sampled: the upstream still gets the trace (with the sampled flag off).
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(parent))
        return spans, carrier["traceparent"].encode("ascii")

    def finished(self, request: Traced, spans: object | None, status: int) -> None:
        """The request was answered with `status` (499: the client left)."""
        if not isinstance(spans, Spans):
            spans = self._begin(request)
        span = spans.request
        if not span.is_recording():
            return  # not sampled: nothing to set or export
        end = time.time_ns()
        if spans.upstream is not None:
            spans.upstream.set_attribute("http.response.status_code", status)
            spans.upstream.end(end)
        span.set_attribute("http.response.status_code", status)
        if request.reason is not None:
            span.set_attribute("wakeproxy.reason", request.reason)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, request.reason or str(status)))
        span.end(end)

    def shutdown(self) -> None:
        """Export what is pending and stop (blocking: call it off the event loop)."""
        self._provider.shutdown()

    # -- the spans ------------------------------------------------------------------------

    def _begin(self, request: Traced) -> Spans:
        start = _wall_ns(request.started, time.perf_counter)
        span = self._tracer.start_span(
            request.method,
            context=self._caller(request.headers),
            kind=SpanKind.SERVER,
            start_time=start,
        )
        if not span.is_recording():
            return Spans(span)  # not sampled: the rest would be thrown away
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "wakeproxy.request_id": request.request_id.decode(),
        }
        if request.host is not None:
            attributes["server.address"] = request.host.decode("latin-1")
        if request.sandbox_id is not None and request.port is not None:
            attributes["wakeproxy.sandbox_id"] = request.sandbox_id
            attributes["wakeproxy.port"] = request.port
        span.set_attributes(attributes)
        if request.held_for:
            self._hold(span, request, start)
        return Spans(span)

    def _caller(self, headers: Headers) -> Context:
        carrier: dict[str, str] = {}
        for name, value in headers:
            low = name.lower()
            if low in _CONTEXT_HEADERS and low.decode() not in carrier:
                carrier[low.decode()] = value.decode("latin-1")
        return self._propagator.extract(carrier) if carrier else Context()

    def _hold(self, parent: Span, request: Traced, start: int) -> None:
        hold = self._tracer.start_span(
            "hold",
            context=set_span_in_context(parent),
            start_time=start,
            attributes={"wakeproxy.wake_trigger": request.triggered},
        )
        wake = request.wake
        if wake is not None:
            self._wake(hold, wake)
        hold.end(start + int(request.held_for * 1e9))

    def _wake(self, parent: Span, wake: FinishedWake) -> None:
        start = _wall_ns(wake.started, time.monotonic)
        end = start + int(wake.seconds * 1e9)
        attributes: dict[str, str] = {"wakeproxy.wake.result": wake.result}
        if wake.cause:
            attributes["wakeproxy.wake.cause"] = wake.cause
        span = self._tracer.start_span(
            "wake", context=set_span_in_context(parent), start_time=start, attributes=attributes
        )
        if wake.result != "ok":
            span.set_status(Status(StatusCode.ERROR, wake.cause))
        self._phases(span, wake.phases, start, end)
        span.end(end)

    def _phases(self, parent: Span, phases: Mapping[str, float], start: int, end: int) -> None:
        context = set_span_in_context(parent)
        running_at = start + int(phases.get("resume", 0.0) * 1e9) if phases else end
        self._tracer.start_span("resume", context=context, start_time=start).end(running_at)
        if phases:
            self._tracer.start_span("ready", context=context, start_time=running_at).end(end)


def _wall_ns(moment: float, clock: Callable[[], float]) -> int:
    """`moment` of a monotonic `clock` as wall-clock nanoseconds."""
    return time.time_ns() - int((clock() - moment) * 1e9)
