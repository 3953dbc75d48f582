"""Who a request acts as, and what path it means.

envd resolves every path against a user: `~` and `~/x` are the user's home, a relative
path is under the home, an absolute path is taken as it is. A request names its user
in `Authorization: Basic base64("<user>:")` (Connect calls) or `?username=` (`/files`);
without one it acts as the default user.

In an isolated sandbox (`Users.from_accounts`) they are its accounts: `user` (uid 1000,
HOME /home/user) and `root`, and the agent, root inside, runs commands and touches files
as the one a request names. Without isolation the sandbox is one Unix account's process
tree, so its users are names only: both run as the agent's own uid, and both have the
sandbox's home as their home, because `/root` there would be the host's.
"""

from __future__ import annotations

import base64
import binascii
import grp
import posixpath
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from wakeproxy.platform.agent.errors import PathError, UnknownUser

DEFAULT_USER = "user"
USER_NAMES = ("user", "root")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    home: str
    uid: int | None = None
    """None: act as the agent itself (a sandbox without accounts of its own)."""
    gid: int | None = None
    groups: tuple[int, ...] = ()


class Users:
    def __init__(
        self, home: str, names: Iterable[str] = USER_NAMES, default: str = DEFAULT_USER
    ) -> None:
        self._users = {name: User(name, home) for name in names}
        if default not in self._users:
            raise ValueError(f"default user {default!r} is not one of {sorted(self._users)}")
        self.default = self._users[default]

    @classmethod
    def from_accounts(cls, names: Iterable[str] = USER_NAMES) -> Users:
        """The sandbox's own accounts (its /etc/passwd), acted as by uid and gid."""
        users = cls("/", names)
        for name in users._users:
            entry = pwd.getpwnam(name)
            groups = tuple(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
            users._users[name] = User(name, entry.pw_dir, entry.pw_uid, entry.pw_gid, groups)
        users.default = users._users[users.default.name]
        return users

    def lookup(self, name: str | None) -> User:
        """The named user, or the default one for None; raises `UnknownUser`."""
        if name is None:
            return self.default
        user = self._users.get(name)
        if user is None:
            raise UnknownUser(name)
        return user

    def from_basic_auth(self, header: str | None) -> User:
        return self.lookup(basic_auth_user(header))


def basic_auth_user(header: str | None) -> str | None:
    """The user name of a Basic `Authorization` header; None when there is none.

    Like Go's `Request.BasicAuth`, a header that is not well-formed Basic credentials
    counts as no credentials at all.
    """
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    name, colon, _password = decoded.partition(":")
    return name if colon else None


def resolve(path: str, user: User, workdir: str | None = None) -> str:
    """envd's `ExpandAndResolve`: the absolute path `path` means for `user`.

    An empty path means `workdir` (the template's working directory, when it has one)
    and otherwise the home; an absolute path is returned as given.
    """
    if "\x00" in path:
        raise PathError("path contains a NUL byte")
    if path == "" and workdir:
        path = workdir
    path = _expand_home(path, user)
    if path.startswith("/"):
        return path
    return posixpath.normpath(posixpath.join(user.home, path))


def _expand_home(path: str, user: User) -> str:
    if not path.startswith("~"):
        return path
    if len(path) > 1 and path[1] not in "/\\":
        raise PathError(
            f"failed to expand path {path!r} for user {user.name!r}: "
            "cannot expand user-specific home dir"
        )
    return posixpath.normpath(posixpath.join(user.home, path[1:].lstrip("/")))
