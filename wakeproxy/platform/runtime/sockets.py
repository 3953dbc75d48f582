"""TCP sockets into a sandbox's network namespace, with no process in between.

A socket belongs to the network namespace it was created in, whatever thread later uses
it. So creating the socket inside the sandbox's namespace is enough; connecting and all
traffic then happen on the event loop like for any other socket.

`NamespaceSockets` makes it (as root, or with CAP_SYS_ADMIN): the calling thread enters the
namespace with setns(2), creates the socket and returns to its own namespace at once. setns
changes only the calling thread, and nothing else runs on it in between (no await),
so no other socket is created there. This is done inline rather than on a helper
thread because it costs ~10 µs, where a hop to a thread and back costs ~65 µs on
every new upstream connection. Going back cannot fail short of the kernel running
out of memory (we hold a descriptor of our namespace and the rights that just let us
leave it); if it ever did, this thread would create every later socket, of any
kind, inside a sandbox, so the process stops instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CLONE_NEWNET = 0x40000000


def _libc_setns() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.setns
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_setns = _libc_setns()


def setns(fd: int, nstype: int) -> None:
    """Move the calling *thread* into the namespace `fd` refers to (Python 3.11 has no
    os.setns)."""
    if _setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class NamespaceSockets:
    def __init__(self) -> None:
        self._own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    @property
    def own_namespace(self) -> int:
        """A descriptor of the namespace this process's sockets normally live in."""
        return self._own

    def create(self, netns_fd: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """An unconnected, non-blocking IPv4 socket (TCP unless `kind` says otherwise) in
        the namespace `netns_fd`."""
        if self._own < 0:
            raise ConnectionRefusedError("the sandbox runtime is closed")
        setns(netns_fd, CLONE_NEWNET)
        try:
            sock = socket.socket(socket.AF_INET, kind)
        finally:
            self._return()
        sock.setblocking(False)
        return sock

    def _return(self) -> None:
        error: OSError | None = None
        for _ in range(3):
            try:
                setns(self._own, CLONE_NEWNET)
            except OSError as exc:
                error = exc
            else:
                return
        log.critical("could not leave a sandbox's network namespace (%s); stopping", error)
        os.abort()

    def close(self) -> None:
        if self._own >= 0:
            os.close(self._own)
            self._own = -1


async def connect(sock: socket.socket, port: int) -> socket.socket:
    """Connect `sock` to the loopback `port` of its namespace; closes it on failure
    (ConnectionRefusedError when nothing listens)."""
    try:
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


def host_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port
