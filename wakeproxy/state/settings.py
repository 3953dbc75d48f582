"""The knobs of the shared state store (the `[state]` config section). Times in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StateSettings:
    redis_url: str = ""
    """Redis shared by every replica (redis://, rediss://, unix://, redis+sentinel://,
    redis+cluster://); empty keeps state in this process."""
    key_prefix: str = "wakeproxy"
    """Every key and the notice channel start with `<key_prefix>:`."""
    timeout: float = 0.5
    """Longest wait for one Redis call (and for a connect); after it the store counts as
    down and the proxy carries on without it."""
    record_ttl: float = 5.0
    """How long a sandbox's state record in Redis is trusted by the replicas reading it."""
    lease_ttl: float = 5.0
    """A wake lease lasts this long unless its holder renews it (every third of it): how
    soon another replica takes over the wake of a replica that died."""
    wake_wait: float = 60.0
    """Longest time a replica waits for a wake another replica leads before giving up."""
    reconnect_initial_delay: float = 0.1
    """First pause before reconnecting to Redis; doubles (with jitter) up to the max."""
    reconnect_max_delay: float = 5.0
    health_interval: float = 1.0
    """Seconds between PINGs that tell a silent Redis from a dead one."""
