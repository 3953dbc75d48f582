"""Forwarding: the HTTP and WebSocket relays, the header rules and the proxy's own responses."""
