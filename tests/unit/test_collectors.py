"""Build info and process metrics of a process group, read as a scrape reads them."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from wakeproxy import __version__
from wakeproxy.collectors import BuildInfo, ProcessGroupCollector, combine_processes
from wakeproxy.metrics import Metrics


def _process(cpu: float, rss: float, start: float, max_fds: float) -> list[Metric]:
    families = []
    for name, kind, sample, value in [
        ("process_cpu_seconds", "counter", "process_cpu_seconds_total", cpu),
        ("process_resident_memory_bytes", "gauge", "process_resident_memory_bytes", rss),
        ("process_start_time_seconds", "gauge", "process_start_time_seconds", start),
        ("process_max_fds", "gauge", "process_max_fds", max_fds),
    ]:
        family = Metric(name, "doc", kind)
        family.add_sample(sample, {}, value)
        families.append(family)
    return families


def test_a_group_sums_usage_and_limits_and_keeps_the_earliest_start() -> None:
    group = combine_processes(
        [_process(1.5, 100.0, 50.0, 1024.0), _process(2.0, 300.0, 40.0, 4096.0)], gone_cpu=0.25
    )
    values = {family.samples[0].name: family.samples[0].value for family in group}
    assert values == {
        "process_cpu_seconds_total": 3.75,  # with the CPU of workers that exited
        "process_resident_memory_bytes": 400.0,
        "process_start_time_seconds": 40.0,
        "process_max_fds": 5120.0,
    }
    assert len(group) == 4


def alone_self() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def _sample(registry: CollectorRegistry, name: str) -> list[float]:
    text = generate_latest(registry).decode()
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_a_group_of_real_processes_reports_each_figure_once_over_all_of_them() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alone = CollectorRegistry()
        ProcessCollector(pid=lambda: child.pid, registry=alone)
        workers = [child.pid]
        registry = CollectorRegistry()
        registry.register(ProcessGroupCollector(lambda: workers))
        [child_max_fds] = _sample(alone, "process_max_fds")
        [child_start] = _sample(alone, "process_start_time_seconds")
        [own_start] = _sample(registry, "process_start_time_seconds")  # ours is earlier
        assert own_start <= child_start
        [max_fds] = _sample(registry, "process_max_fds")
        assert max_fds == child_max_fds + _sample(alone_self(), "process_max_fds")[0]
        # CPU seconds only grow: the group's are at least what each had before.
        child_cpu = _sample(alone, "process_cpu_seconds_total")[0]
        own = os.times()
        [group_cpu] = _sample(registry, "process_cpu_seconds_total")
        assert group_cpu >= child_cpu + own.user + own.system - 0.02  # /proc's tick rounding
    finally:
        child.kill()
        child.wait()
    # The child is gone: its CPU seconds stay in the group's counter, which never goes back.
    workers.clear()
    [after] = _sample(registry, "process_cpu_seconds_total")
    assert after >= group_cpu


def test_the_proxys_exposition_has_process_metrics_and_build_info_and_no_created_series() -> None:
    metrics = Metrics()
    metrics.request_finished("http", 200, 0.01)
    metrics.rejected("no_wake_rule")
    text = metrics.exposition().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert not [name for name in names if name.endswith("_created")]
    [info] = [
        s for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "wakeproxy_build_info"
    ]  # fmt: skip
    assert info.labels["version"] == __version__
    assert info.value == 1


def test_build_info_is_one_series() -> None:
    registry = CollectorRegistry()
    registry.register(BuildInfo())
    assert _sample(registry, "wakeproxy_build_info") == [1.0]
