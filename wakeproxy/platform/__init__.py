"""The embedded sandbox platform behind `wakeproxy up`."""
