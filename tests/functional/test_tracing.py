"""OpenTelemetry spans of a running proxy, received by an OTLP/HTTP receiver (`otlp_receiver`)
from the proxy's real exporter: the request span continues the caller's W3C trace, a
woken sandbox's request has hold, wake, resume and ready spans, and the sandbox gets the
upstream span's context as its `traceparent`. With tracing off the caller's `traceparent`
reaches the sandbox as it was sent."""

from __future__ import annotations

import aiohttp
import pytest
from otlp_receiver import otlp_receiver
from support import StartProxy, host_for
from upstream import Upstream
from wakescene import wake_scene

from wakeproxy.server import Listening
from wakeproxy.tracing.settings import TracingSettings

pytest.importorskip("opentelemetry.sdk")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def _seen(upstream: Upstream, name: str) -> list[str]:
    return [value for key, value in upstream.seen[-1].headers if key.lower() == name]


async def test_a_woken_request_is_one_trace_from_the_caller_through_the_wake_to_the_sandbox(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with otlp_receiver() as received:
        tracing = TracingSettings(enabled=True, endpoint=received.url)
        async with wake_scene(start_proxy, upstream, tracing=tracing) as scene:
            scene.gate.set()
            headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
            woken = await scene.send("GET", "/count", headers=headers)
            assert woken.status == 200
            [sent] = _seen(upstream, "traceparent")
            assert _seen(upstream, "tracestate") == ["vendor=1"]
            plain = await scene.send("GET", "/count")  # a running sandbox: the hot path
            assert plain.status == 200
        # The proxy has stopped: its last batch is exported.
    requests = received.named("GET")
    assert len(requests) == 2
    [traced] = [span for span in requests if span.trace_id.hex() == TRACE_ID]
    [other] = [span for span in requests if span is not traced]
    assert traced.parent_span_id.hex() == CALLER_SPAN
    assert traced.kind == traced.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in traced.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["wakeproxy.sandbox_id"].string_value == "sleepy"
    assert attributes["wakeproxy.request_id"].string_value
    hold = received.one("hold")
    wake = received.one("wake")
    resume, ready = received.one("resume"), received.one("ready")
    upstream_span = [s for s in received.named("upstream") if s.trace_id == traced.trace_id]
    assert len(upstream_span) == 1
    assert hold.parent_span_id == traced.span_id
    assert wake.parent_span_id == hold.span_id
    assert resume.parent_span_id == ready.parent_span_id == wake.span_id
    assert resume.end_time_unix_nano <= ready.start_time_unix_nano + 1
    assert traced.start_time_unix_nano <= hold.start_time_unix_nano
    assert upstream_span[0].parent_span_id == traced.span_id
    assert upstream_span[0].kind == upstream_span[0].SPAN_KIND_CLIENT
    # The sandbox's parent is the proxy's upstream span, in the caller's trace.
    assert sent == f"00-{TRACE_ID}-{upstream_span[0].span_id.hex()}-01"
    # The request that did not wait has its own trace and no hold.
    assert other.trace_id != traced.trace_id
    assert {s.trace_id for s in (hold, wake, resume, ready)} == {traced.trace_id}


async def test_with_tracing_off_the_callers_trace_context_passes_through_untouched(
    proxy: Listening, upstream: Upstream
) -> None:
    headers = {"Host": host_for(upstream.port), "traceparent": TRACEPARENT}
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{proxy.url}/count", headers=headers) as response,
    ):
        assert response.status == 200
    assert _seen(upstream, "traceparent") == [TRACEPARENT]


async def test_unsampled_requests_export_nothing_and_a_sampled_callers_decision_wins(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with otlp_receiver() as received:
        tracing = TracingSettings(enabled=True, endpoint=received.url, sample_ratio=0.0)
        async with start_proxy(tracing=tracing) as proxy, aiohttp.ClientSession() as client:
            for extra in ({}, {"traceparent": TRACEPARENT}):
                headers = {"Host": host_for(upstream.port), **extra}
                async with client.get(f"{proxy.url}/count", headers=headers) as response:
                    assert response.status == 200
                # Not sampled and no caller's context: it goes on as it came, untraced.
                expected = [TRACEPARENT[:36]] if extra else []
                assert [sent[:36] for sent in _seen(upstream, "traceparent")] == expected
    # Only the caller's sampled trace was exported.
    assert {span.trace_id.hex() for span in received.spans} == {TRACE_ID}
    assert {span.name for span in received.spans} == {"GET", "upstream"}
