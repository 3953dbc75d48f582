"""User metadata on files, as envd 0.6.2+ keeps it: `user.e2b.<key>` extended attributes.

An upload carries it as `X-Metadata-<key>: <value>` headers (the same map for every file of
a multi-file upload); keys are lower-cased, must be HTTP token characters, and values
printable US-ASCII. Writing a file replaces whatever metadata it had, so an upload without
any clears stale metadata. `Stat`, `ListDir`, `Move` and uploads report it with the
namespace prefix stripped; plain `user.*` attributes set by other tools are not reported.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable

from wakeproxy.platform.agent.errors import FilesError

HEADER_PREFIX = "x-metadata-"
XATTR_PREFIX = "user.e2b."
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_VALUE = re.compile(r"[\x20-\x7e]*")


def from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The metadata an upload's headers carry; `FilesError` (400) for a bad key or value."""
    found: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith(HEADER_PREFIX):
            continue
        key = lowered[len(HEADER_PREFIX) :]
        if _KEY.fullmatch(key) is None:
            raise FilesError(400, f"invalid metadata key {key!r}: use HTTP token characters")
        if _VALUE.fullmatch(value) is None:
            raise FilesError(400, f"invalid metadata value for key {key!r}: use printable ASCII")
        found[key] = value
    return found


def read(path: str) -> dict[str, str]:
    """The `user.e2b.*` attributes of `path` (not followed if a symlink); {} where the
    filesystem keeps none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        if name.startswith(XATTR_PREFIX):
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            found[name[len(XATTR_PREFIX) :]] = value.decode("utf-8", "replace")
    return found


def replace(path: str, metadata: dict[str, str]) -> None:
    """Make `metadata` the file's whole metadata; `FilesError` (500) if it cannot be kept."""
    try:
        for name in os.listxattr(path):
            if name.startswith(XATTR_PREFIX):
                os.removexattr(path, name)
        for key, value in metadata.items():
            os.setxattr(path, XATTR_PREFIX + key, value.encode())
    except OSError as exc:
        if exc.errno == errno.ENOTSUP and not metadata:
            return  # nothing to clear where the filesystem keeps no attributes
        raise FilesError(500, f"error setting file metadata on '{path}': {exc}") from None
