"""One platform per data dir: an exclusive lock held for the platform's whole life.

Two platforms on one data dir would each take the other's sandboxes for their own (adopt
them at start, end them at stop) while both answer for them. So `wakeproxy up` and
`wakeproxy serve-api` hold `flock(2)` on `<data dir>/platform.lock` from before they
read a record until they exit, and write in it who they are (pid, then the API's address
once it listens). A second one finds the lock taken, names the holder and stops (exit 2)
without touching anything.

The kernel releases the lock when the process ends, however it ends (SIGKILL included),
so a dead platform leaves no stale lock to clean: the next one simply takes it and the
records are taken back as after any restart. The descriptor is close-on-exec, so the
sandboxes a platform starts (which may outlive it) never hold its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.errors import ConfigError

LOCK_NAME = "platform.lock"


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int | None
    api: str


class DataDirInUse(ConfigError):
    """Another live platform holds the data dir (a configuration conflict: exit 2)."""

    def __init__(self, data_dir: Path, holder: Holder) -> None:
        self.holder = holder
        pid = "an unknown pid (it is starting)" if holder.pid is None else f"pid {holder.pid}"
        api = f", API {holder.api}" if holder.api else ", API not listening yet"
        super().__init__(
            [
                (
                    "platform.data_dir",
                    f"{data_dir} is in use by another wakeproxy platform ({pid}{api}); "
                    "stop that one first, or give this one another --data-dir",
                )
            ]
        )


class DataDirLock:
    """The held lock of one data dir; `release` (or the process's end) lets it go."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, data_dir: Path) -> DataDirLock:
        """Lock `data_dir` (created if missing) for this process; `DataDirInUse` naming
        the holder when another live process has it."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise DataDirInUse(data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        lock = cls(fd)
        lock.announce("")
        return lock

    def announce(self, api: str) -> None:
        """Write who holds the lock: this pid and the API's address (empty: none yet)."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "api": api}).encode()
        # Rewritten in place: a reader may catch it half-written, which it reads as
        # "unknown"; replacing the file would leave the lock on the old inode.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> Holder:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid = data.get("pid")
        return Holder(pid if isinstance(pid, int) else None, str(data.get("api") or ""))
    except (OSError, ValueError, AttributeError):
        return Holder(None, "")
