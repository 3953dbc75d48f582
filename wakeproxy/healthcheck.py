"""`wakeproxy health`: ask an admin listener's `/readyz`, with the standard library only,
so the container's HEALTHCHECK starts fast."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request


class HealthUrlError(ValueError):
    """What `health` was told to ask is neither a URL nor a host:port."""


def readyz_url(target: str) -> str:
    """The `/readyz` URL for a base URL, a `/readyz` URL or a listen address (`host:port`;
    a wildcard host means this host's loopback)."""
    if "://" not in target:
        host, colon, port = target.rpartition(":")
        if not colon or not port.isdigit():
            raise HealthUrlError(
                f"expected a URL like http://127.0.0.1:9091 or a host:port, got {target!r}"
            )
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        target = f"http://{host}:{port}"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HealthUrlError(f"expected an http:// URL like http://127.0.0.1:9091, got {target!r}")
    path = parts.path if parts.path not in ("", "/") else "/readyz"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def check_ready(url: str, timeout: float) -> tuple[bool, str]:
    """True and the body when `url` answers 200; else False and why."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        return False, f"not ready: {url} answered {exc.code}: {body}"
    except urllib.error.URLError as exc:
        return False, f"not ready: cannot reach {url}: {exc.reason}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"not ready: {url}: {exc}"
