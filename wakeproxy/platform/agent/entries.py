"""`EntryInfo` for a path on disk, as envd fills it in.

A symlink is described by its target's type and permission bits, with `isSymlink`
and `symlinkTarget` set (a dangling one has type unspecified, which the SDKs skip in
listings); `permissions` is Go's `FileMode.String()` of the entry itself; `metadata` is
the file's `user.e2b.*` attributes (`metadata.py`).
"""

from __future__ import annotations

import functools
import grp
import os
import posixpath
import pwd
import stat

from wakeproxy.platform.agent import metadata
from wakeproxy.platform.agent.messages import Entry, FileType

# Go's FileMode type letters, most significant first, and the stat bits behind them.
_GO_TYPE_LETTERS = (
    ("d", stat.S_ISDIR),
    ("L", stat.S_ISLNK),
    ("D", lambda mode: stat.S_ISBLK(mode) or stat.S_ISCHR(mode)),
    ("p", stat.S_ISFIFO),
    ("S", stat.S_ISSOCK),
    ("u", lambda mode: bool(mode & stat.S_ISUID)),
    ("g", lambda mode: bool(mode & stat.S_ISGID)),
    ("c", stat.S_ISCHR),
    ("t", lambda mode: bool(mode & stat.S_ISVTX)),
)


def go_mode_string(mode: int) -> str:
    """Go's `FileMode.String()` for a `st_mode`: `-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`."""
    letters = "".join(letter for letter, test in _GO_TYPE_LETTERS if test(mode)) or "-"
    rwx = "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return letters + rwx


def file_type(mode: int) -> FileType:
    if stat.S_ISREG(mode):
        return "FILE_TYPE_FILE"
    if stat.S_ISDIR(mode):
        return "FILE_TYPE_DIRECTORY"
    return "FILE_TYPE_UNSPECIFIED"


def entry(path: str) -> Entry:
    """Describe `path` without following it; raises OSError (FileNotFoundError, ...)."""
    info = os.lstat(path)
    kind = file_type(info.st_mode)
    perm = stat.S_IMODE(info.st_mode) & 0o777
    target: str | None = None
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        try:
            followed = os.stat(target)
        except OSError:
            kind, perm = "FILE_TYPE_UNSPECIFIED", 0
        else:
            kind, perm = file_type(followed.st_mode), stat.S_IMODE(followed.st_mode) & 0o777
    return Entry(
        name=posixpath.basename(path.rstrip("/")) or "/",
        type=kind,
        path=path,
        size=info.st_size,
        mode=perm,
        permissions=go_mode_string(info.st_mode),
        owner=_user_name(info.st_uid),
        group=_group_name(info.st_gid),
        modified_ns=info.st_mtime_ns,
        symlink_target=target,
        is_symlink=target is not None,
        metadata=metadata.read(path) if target is None else {},
    )


@functools.lru_cache(maxsize=64)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.lru_cache(maxsize=64)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
