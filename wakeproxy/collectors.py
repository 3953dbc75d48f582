"""Prometheus collectors that read facts at scrape time: which build runs, and the
`process_*` figures of one process or of a supervisor and its workers together.

prometheus-client's `ProcessCollector` reads `/proc/<pid>` at each scrape; in multiprocess
mode (`--workers N`) it has no files to sum, so the supervisor reads every worker's
`/proc` itself (`ProcessGroupCollector`) and reports the group as one process would be.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from wakeproxy import __version__

# A group started when its first process did; everything else adds up (its fd limit too:
# each process has its own, so the group's capacity is their sum).
_LEAST = frozenset({"process_start_time_seconds"})
_CPU = "process_cpu_seconds_total"


class BuildInfo:
    """`wakeproxy_build_info{version, python} 1`: which build a replica runs, to join on."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "wakeproxy_build_info",
            "Always 1; the labels say which wakeproxy and Python this process runs.",
            labels=["version", "python"],
        )
        family.add_metric([__version__, platform.python_version()], 1)
        yield family


class ProcessGroupCollector:
    """`process_*` of this process and its workers as one group: CPU seconds, memory, open
    fds and fd limits summed, and the earliest start time. CPU seconds of a
    worker that exited stay in the sum (as the last scrape saw them), so the counter does
    not go back when a worker is restarted."""

    def __init__(self, workers: Callable[[], Iterable[int]]) -> None:
        self._workers = workers
        self._collectors: dict[int, ProcessCollector] = {}
        self._last_cpu: dict[int, float] = {}
        self._gone_cpu = 0.0

    def collect(self) -> Iterator[Metric]:
        pids = [os.getpid(), *self._workers()]
        for pid in set(self._collectors) - set(pids):
            del self._collectors[pid]
            self._gone_cpu += self._last_cpu.pop(pid, 0.0)
        per_process = [list(self._collector(pid).collect()) for pid in pids]
        for pid, families in zip(pids, per_process, strict=True):
            cpu = _value(families, _CPU)
            if cpu is not None:
                self._last_cpu[pid] = cpu
        yield from combine_processes(per_process, self._gone_cpu)

    def _collector(self, pid: int) -> ProcessCollector:
        collector = self._collectors.get(pid)
        if collector is None:
            collector = ProcessCollector(pid=lambda: pid, registry=None)
            self._collectors[pid] = collector
        return collector


def combine_processes(per_process: list[list[Metric]], gone_cpu: float = 0.0) -> list[Metric]:
    """One family per name, its one sample combined over the processes. Pure."""
    combined: dict[str, Metric] = {}
    for families in per_process:
        for family in families:
            if not family.samples:
                continue  # a process that exited between listing and reading
            known = combined.get(family.name)
            if known is None:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = [family.samples[0]]
                combined[family.name] = copy
                continue
            first, sample = known.samples[0], family.samples[0]
            least = sample.name in _LEAST
            value = min(first.value, sample.value) if least else first.value + sample.value
            known.samples[0] = first._replace(value=value)
    for family in combined.values():
        if family.samples[0].name == _CPU and gone_cpu:
            family.samples[0] = family.samples[0]._replace(value=family.samples[0].value + gone_cpu)
    return list(combined.values())


def _value(families: list[Metric], sample_name: str) -> float | None:
    for family in families:
        for sample in family.samples:
            if sample.name == sample_name:
                return float(sample.value)
    return None
