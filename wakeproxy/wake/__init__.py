"""The hold-and-wake engine: decide (pure machine), then carry out (async coordinator).

events.py       what goes into a machine and what comes out (events, decisions)
table.py        the phases and the table of moves between them
machine.py      `SandboxMachine`: one sandbox's decisions, no I/O
rules.py        no-wake rules (requests that never wake a paused sandbox), no I/O
coordinator.py  `WakeCoordinator.acquire()`: hot-path cache, holding, single-flight
jobs.py         the backend calls and port probes that decisions start
cache.py        the in-process L1 of running sandboxes and their upstreams
activity.py     activity recorded in O(1), reported to the backend in batches
"""

from wakeproxy.wake.cache import Acquired
from wakeproxy.wake.coordinator import WakeCoordinator
from wakeproxy.wake.events import StillWaking
from wakeproxy.wake.jobs import Probe, connect_probe
from wakeproxy.wake.recorder import NullRecorder, Recorder
from wakeproxy.wake.rules import NoWakeRule, first_match
from wakeproxy.wake.settings import WakeSettings

__all__ = [
    "Acquired",
    "NoWakeRule",
    "NullRecorder",
    "Probe",
    "Recorder",
    "StillWaking",
    "WakeCoordinator",
    "WakeSettings",
    "connect_probe",
    "first_match",
]
