"""Prometheus metrics in domain verbs, on wakeproxy's own `CollectorRegistry`.

The request path calls verbs (`request_finished`, `rejected`, `wake_finished`, …); only
this module knows metric names, labels and buckets. No metric has a sandbox id as a label:
with thousands of sandboxes that would be thousands of series per metric.

    wakeproxy_requests_total{kind="http|websocket",code}    requests answered
    wakeproxy_request_duration_seconds                      HTTP: request head to last byte
    wakeproxy_websocket_duration_seconds                    WebSocket sessions, open to close
    wakeproxy_websockets_open                               WebSocket sessions now relayed
    wakeproxy_wakes_total{result="ok|failed|timeout"}       resumes this process started
    wakeproxy_wake_duration_seconds                         resume call until the port accepts
    wakeproxy_wake_phase_seconds{phase="resume|ready"}      the same wake, split at "running"
    wakeproxy_wakes_in_progress                             wakes under way
    wakeproxy_wake_joins_total                              requests that joined a wake
    wakeproxy_held_requests                                 requests held for a wake now
    wakeproxy_hold_duration_seconds                         how long each held request waited
    wakeproxy_rejected_total{reason}                        answered by the proxy, not a sandbox
    wakeproxy_state_lookups_total{source,result}            l1 | redis | backend
    wakeproxy_state_notices_total{kind}                     other replicas' notices heard
    wakeproxy_redis_up                                      only once a Redis store reports
    wakeproxy_upstream_errors_total{reason}                 refused | timeout | closed | …
    wakeproxy_build_info{version,python}                    always 1 (`collectors.BuildInfo`)
    process_*                                               prometheus-client's, per process
                                                            group with `--workers`

No `_created` series: prometheus-client's switch for them is process-wide and turned off
here (`disable_created_metrics`); the text format Prometheus reads ignores them, and they
were over a third of the series a scrape listed.

The embedded platform's own metrics (`wakeproxy_sandboxes{state}`, …) are in
`wakeproxy.platform.control.census`, on the same registry.

With `--workers N` every worker writes its values to files in `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode, chosen when the variable is set before the
library is imported) and the supervisor's admin listener sums them with
`multiprocess_registry`; gauges say how (`livesum`: over the workers alive).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from wakeproxy.collectors import BuildInfo, ProcessGroupCollector

# A wake spans a thawed process answering in a millisecond to a VM restore taking a minute.
WAKE_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
# A forwarded request: 0.1 ms (loopback, small answer) to 10 s (slow upstreams, uploads).
REQUEST_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
# A WebSocket session: a probe that closes at once to a terminal left open all day.
SESSION_BUCKETS: Final[tuple[float, ...]] = (
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)

WAKE_RESULTS: Final = ("ok", "failed", "timeout")
WAKE_PHASES: Final = ("resume", "ready")

Clock = Callable[[], float]


class Metrics:
    """Every metric of one proxy process, recorded through domain verbs.

    Implements the wake engine's `Recorder` and the relay's (`proxy.exchange.Recorder`).
    Label children are looked up once and kept. `request_finished`, called for every
    request, only adds to plain numbers (`_Tally`) that are handed to prometheus-client
    when the registry is collected, so a scrape sees every request answered before it;
    the client's locks and bucket loop are paid once per scrape, not once per request.
    With several worker processes (`PROMETHEUS_MULTIPROC_DIR`) the supervisor reads the
    workers' files and cannot ask them to hand anything over, so there each request is
    recorded at once.
    """

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        self._tally: _Tally | None = None if _multiprocess() else _Tally()
        if self._tally is not None:
            # Registered first, so that it runs before the metrics it hands numbers to.
            registry.register(_BeforeCollect(self.flush))
        ProcessCollector(registry=registry)
        registry.register(BuildInfo())
        self._requests = Counter(
            "wakeproxy_requests",
            "Requests answered, by kind (http, websocket) and status code (499: client left).",
            ["kind", "code"],
            registry=registry,
        )
        self._request_seconds = Histogram(
            "wakeproxy_request_duration_seconds",
            "HTTP requests: from the request head to the last response byte.",
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._session_seconds = Histogram(
            "wakeproxy_websocket_duration_seconds",
            "WebSocket requests: from the request head until the session ended.",
            buckets=SESSION_BUCKETS,
            registry=registry,
        )
        self._websockets_open = Gauge(
            "wakeproxy_websockets_open",
            "WebSocket sessions being relayed now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._init_wake_metrics(registry)
        self._rejected = Counter(
            "wakeproxy_rejected",
            "Requests the proxy answered itself instead of forwarding them, by reason "
            "(the `reason` of its JSON error: no_wake_rule, hold_queue_full, wake_failed, "
            "lookup_timeout, forbidden, bad_request, …).",
            ["reason"],
            registry=registry,
        )
        self._lookups = Counter(
            "wakeproxy_state_lookups",
            "Sandbox state lookups by source (l1, redis, backend) and result "
            "(l1: hit, miss; others: the state found, not_found or error).",
            ["source", "result"],
            registry=registry,
        )
        self._notices = Counter(
            "wakeproxy_state_notices",
            "Notices heard from other replicas through the shared state: a sandbox's record "
            "changed (state) or a wake failed (wake_failed).",
            ["kind"],
            registry=registry,
        )
        self._upstream_errors = Counter(
            "wakeproxy_upstream_errors",
            "Failures talking to a sandbox's port: refused, timeout, closed (before the "
            "response head), aborted (after it), upgrade_refused.",
            ["reason"],
            registry=registry,
        )
        self._redis_up: Gauge | None = None
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._label_children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def _init_wake_metrics(self, registry: CollectorRegistry) -> None:
        wakes = Counter(
            "wakeproxy_wakes",
            "Wakes (resumes) this process started, by result: ok, failed, or timeout "
            "(the port never accepted, or the resume outlasted the transition budget).",
            ["result"],
            registry=registry,
        )
        # Every result exists from the start, so rates and alerts see a 0, not a gap.
        self._wake_results = {result: wakes.labels(result) for result in WAKE_RESULTS}
        self._wakes = wakes
        self._wake_seconds = Histogram(
            "wakeproxy_wake_duration_seconds",
            "Wakes: from the resume call until the port accepted (or the wake failed).",
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        phases = Histogram(
            "wakeproxy_wake_phase_seconds",
            "Wakes split at the moment the sandbox ran again: resume (the resume call "
            "until running), ready (running until the port accepted).",
            ["phase"],
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        self._phases = {phase: phases.labels(phase) for phase in WAKE_PHASES}
        self._phase_metric = phases
        self._wakes_in_progress = Gauge(
            "wakeproxy_wakes_in_progress",
            "Wakes under way.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._joins = Counter(
            "wakeproxy_wake_joins",
            "Requests held for a wake that was already under way.",
            registry=registry,
        )
        self._held = Gauge(
            "wakeproxy_held_requests",
            "Requests held now, waiting for their sandbox to wake.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._hold_seconds = Histogram(
            "wakeproxy_hold_duration_seconds",
            "How long each held request waited (until forwarded, answered or gone).",
            buckets=WAKE_BUCKETS,
            registry=registry,
        )

    # -- requests (`proxy.exchange.Recorder`) ------------------------------------------

    def request_finished(self, kind: str, code: int, seconds: float) -> None:
        """A request was answered (`kind`: "http" or "websocket") after `seconds`."""
        tally = self._tally
        if tally is not None and kind == "http":
            key = (kind, code)
            codes = tally.codes
            codes[key] = codes.get(key, 0) + 1
            tally.buckets[bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
            tally.seconds += seconds
            return
        self._child_for(kind, code).inc()
        if kind == "http":
            self._request_seconds.observe(seconds)
        else:
            self._session_seconds.observe(seconds)

    def flush(self) -> None:
        """Hand what `request_finished` tallied to the metrics (done before each collect)."""
        tally = self._tally
        if tally is None or not tally.codes:
            return
        codes, buckets, seconds = tally.take()
        for (kind, code), count in codes.items():
            self._child_for(kind, code).inc(count)
        _observed(self._request_seconds, buckets, seconds)

    def _child_for(self, kind: str, code: int) -> Counter:
        child = self._request_children.get((kind, code))
        if child is None:
            child = self._requests.labels(kind, str(code))
            self._request_children[(kind, code)] = child
        return child

    def rejected(self, reason: str) -> None:
        self._child(self._rejected, reason).inc()

    # -- upstreams (`proxy.exchange.Recorder`) ------------------------------------

    def upstream_error(self, reason: str) -> None:
        self._child(self._upstream_errors, reason).inc()

    def websocket_opened(self) -> None:
        self._websockets_open.inc()

    def websocket_closed(self) -> None:
        self._websockets_open.dec()

    # -- the wake engine (`wake.Recorder`) --------------------------------------------------

    def wake_started(self) -> None:
        self._wakes_in_progress.inc()

    def wake_finished(
        self, seconds: float, result: str, phases: Mapping[str, float], *, followed: bool = False
    ) -> None:
        self._wakes_in_progress.dec()
        if followed:  # another replica's resume: counted (and timed) where it was started
            return
        counter = self._wake_results.get(result) or self._wakes.labels(result)
        counter.inc()
        self._wake_seconds.observe(seconds)
        for phase, phase_seconds in phases.items():
            histogram = self._phases.get(phase) or self._phase_metric.labels(phase)
            histogram.observe(phase_seconds)

    def joined(self) -> None:
        self._joins.inc()

    def held_changed(self, total: int) -> None:
        self._held.set(total)

    def hold_finished(self, seconds: float) -> None:
        self._hold_seconds.observe(seconds)

    def state_lookup(self, source: str, result: str, count: int = 1) -> None:
        self._child(self._lookups, source, result).inc(count)

    def state_notice(self, kind: str) -> None:
        self._child(self._notices, kind).inc()

    # -- shared state -----------------------------------------------------------------------

    def redis_up(self, up: bool) -> None:
        """Whether the Redis state store is reachable; the gauge exists once this is called,
        so a proxy without Redis never looks degraded."""
        if self._redis_up is None:
            self._redis_up = Gauge(
                "wakeproxy_redis_up",
                "1 while the Redis state store is reachable, 0 while the proxy runs degraded "
                "(local single-flight, backend lookups).",
                registry=self.registry,
                multiprocess_mode="livemin",
            )
        self._redis_up.set(1 if up else 0)

    # -- exposition -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format a Prometheus scrape gets."""
        return generate_latest(self.registry)

    def _child(self, metric: Counter, *values: str) -> Counter:
        key = (metric, values)
        child = self._label_children.get(key)
        if child is None:
            child = self._label_children[key] = metric.labels(*values)
        return child


class _Tally:
    """HTTP requests answered since the last flush, as plain numbers: counts per (kind,
    code), counts per `REQUEST_BUCKETS` bucket (the last is +Inf) and the seconds' sum.
    Its size is fixed by the codes answered, however long nobody scrapes."""

    __slots__ = ("buckets", "codes", "seconds")

    def __init__(self) -> None:
        self.codes: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(REQUEST_BUCKETS) + 1)
        self.seconds = 0.0

    def take(self) -> tuple[dict[tuple[str, int], int], list[int], float]:
        taken = (self.codes, self.buckets, self.seconds)
        self.codes, self.buckets, self.seconds = {}, [0] * len(self.buckets), 0.0
        return taken


def _observed(histogram: Histogram, buckets: list[int], seconds: float) -> None:
    """Add many observations at once: `buckets[i]` of them in bucket i, `seconds` in all.

    prometheus-client has no call for this; its `observe` adds the amount to `_sum` and
    1 to the first bucket whose bound holds it, and these are the same two steps. The
    unit tests compare the exposition of this with that of `observe`, value by value.
    """
    histogram._sum.inc(seconds)
    for index, count in enumerate(buckets):
        if count:
            histogram._buckets[index].inc(count)


class _BeforeCollect:
    """A collector with no metrics of its own: it calls `hook` whenever the registry is
    collected (a scrape), before the collectors registered after it."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self._hook = hook

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._hook()
        return iter(())


def _multiprocess() -> bool:
    """Whether prometheus-client writes values to files for a multiprocess collector (it
    decides once, from the environment, as it is imported)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def multiprocess_registry(
    path: str, workers: Callable[[], Iterable[int]] | None = None
) -> CollectorRegistry:
    """A registry that reports the sum over every process writing to `path`, with the
    process metrics of this process and its `workers` (their pids) and the build info."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(ProcessGroupCollector(workers or list))
    registry.register(BuildInfo())
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
