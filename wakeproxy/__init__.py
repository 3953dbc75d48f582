"""wakeproxy: a wake-on-request reverse proxy for sandboxes that pause when idle."""

__version__ = "0.1.0"
