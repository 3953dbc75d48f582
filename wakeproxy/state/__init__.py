"""State shared by proxy replicas: versioned records, pub/sub notices, wake leases, activity.

settings.py     `StateSettings`, the `[state]` config section
records.py      records, notices and leases, and their wire format
shared.py       `StateStore` (the interface) and `SharedBackend`, the backend the
                coordinator sees: store first, backend second, changes announced
wake.py         one resume across replicas: a lease decides who calls the backend
activity.py     activity merged in the store, reported to the backend by one replica
memory.py       the in-process store (the default)
redis_store.py  the Redis store: Lua compare-and-set, pub/sub, health and reconnection
urls.py         Redis, Sentinel and Cluster URLs, and the client for each
factory.py      build and own the configured store and the shared backend

Nothing under `wakeproxy.state` imports `wakeproxy.config` (which imports this package).
"""

from wakeproxy.state.settings import StateSettings

__all__ = ["StateSettings"]
