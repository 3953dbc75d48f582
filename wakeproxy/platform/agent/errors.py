"""The agent's exceptions, mapped to the wire in exactly two places.

    AgentError
    ├── RpcError          a Connect error: code name + message    (rpc.py renders it)
    ├── FilesError        an HTTP status + message for `/files`    (files_http.py renders it)
    ├── PathError         a path that cannot be resolved           → invalid_argument / 400
    ├── UnknownUser       a user name the sandbox does not have    → unauthenticated / 401
    ├── SpawnError        a command that could not be started      → invalid_argument
    └── InputError        input a process cannot take              → internal

`PathError`, `UnknownUser`, `SpawnError` and `InputError` come from code that knows
nothing about either protocol; each edge translates them to its own error.
"""

from __future__ import annotations

from wakeproxy.errors import WakeproxyError


class AgentError(WakeproxyError):
    """Base of every error the in-sandbox agent raises on purpose."""


class RpcError(AgentError):
    """A Connect error: `code` is one of the protocol's code names (`not_found`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FilesError(AgentError):
    """An error answer of the `/files` endpoint: envd's `{"code": status, "message"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class PathError(AgentError):
    """A path that cannot be expanded or used (a `~other` prefix, a NUL byte)."""


class UnknownUser(AgentError):
    """A user name that is not one of the sandbox's users."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown user {name!r}")
        self.name = name


class SpawnError(AgentError):
    """A command that could not be started (no such program, no such directory, ...)."""


class InputError(AgentError):
    """Input for a process that has no stdin (or no terminal), or whose stdin is gone."""
