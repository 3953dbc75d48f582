"""OpenTelemetry tracing of requests, holds and wakes, exported with OTLP over HTTP.

Off by default, and then nothing of it runs: no OpenTelemetry import, no span, no header
work; the relay asks one `is None` per request. W3C `traceparent`/`tracestate` headers
pass through to the sandbox unchanged either way.

On (`tracing.enabled`, the optional `wakeproxy[tracing]` extra installed), each request
is a SERVER span, the child of the caller's `traceparent` when it sent one, with
children for the time it was held for a wake (`hold`), the wake it triggered (`wake`,
split into `resume` and `ready` as `wakeproxy_wake_phase_seconds` is), and the exchange
with the sandbox (`upstream`, a CLIENT span whose context goes upstream as the new
`traceparent`, so the sandbox's own spans hang below the proxy's). Spans of a request are
made when it is forwarded or finished, from times the relay already keeps, and exported in
batches from the SDK's own thread (`BatchSpanProcessor`), never on the event loop.

`settings.py` is importable without OpenTelemetry (the config schema uses it); `spans.py`
needs it.
"""
