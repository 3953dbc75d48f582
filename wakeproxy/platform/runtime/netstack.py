"""Outbound network for a sandbox with its own network namespace.

A new network namespace has only loopback. A user-mode network stack gives it an
interface whose traffic leaves through this process's namespace, without root-only
plumbing (veth pairs, NAT rules): `pasta` (Debian package `passt`) or `slirp4netns`.

Both are started with the namespace passed as an inherited descriptor
(`/proc/self/fd/N`): opening another process's /proc/<pid>/ns/net needs ptrace rights
that pasta, which drops capabilities before opening it, no longer has.

Settings that matter for isolation:
  - no port forwarding in either direction (pasta's default forwards every port the
    sandbox binds to the host, and the host's bound ports into the sandbox, which would
    both clash between sandboxes and expose the host's loopback services);
  - no mapping of the gateway address to the host's loopback (`--no-map-gw`,
    `--disable-host-loopback`), for the same reason.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

StackName = Literal["pasta", "slirp4netns"]
MISSING_WARNING = (
    "no outbound network: no user-mode network stack is installed "
    "(install passt, which provides pasta, or slirp4netns)"
)


@dataclass(frozen=True, slots=True)
class NetStack:
    name: StackName
    path: str

    def argv(
        self, netns_fd: int, userns_fd: int | None, *, as_root: bool, dns_forward: bool
    ) -> list[str]:
        """The command that attaches this stack to the namespace open as `netns_fd` (and,
        for an unprivileged platform, the sandbox's user namespace `userns_fd`).
        `dns_forward`: answer DNS at `DNS_FORWARD` (only then: pasta's forwarding also
        changes how it treats queries to other resolvers)."""
        netns = f"/proc/self/fd/{netns_fd}"
        userns = None if userns_fd is None else f"/proc/self/fd/{userns_fd}"
        if self.name == "pasta":
            options = _pasta_options(as_root=as_root, userns=userns)
            dns = ["--dns-forward", DNS_FORWARD["pasta"]] if dns_forward else []
            return [self.path, *options, *dns, "--netns", netns]
        user = [] if userns is None else [f"--userns-path={userns}"]
        return [
            self.path,
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            *user,
            "--netns-type=path",
            netns,
            "tap0",
        ]


def _pasta_options(*, as_root: bool, userns: str | None) -> list[str]:
    no_forwarding = ["-t", "none", "-u", "none", "-T", "none", "-U", "none"]
    # As root, pasta otherwise switches to `nobody`, which may not enter our namespaces.
    identity = ["--runas", "0:0"] if as_root else []
    user = [] if userns is None else ["--userns", userns]
    return [
        "--foreground",
        "--quiet",
        "--config-net",
        "--no-map-gw",
        *no_forwarding,
        *identity,
        *user,
    ]


# Where a sandbox sends DNS queries when the host's resolvers are on the host's loopback
# (systemd-resolved's 127.0.0.53), which a network namespace cannot reach: the stack
# answers there by forwarding to the host's resolver. slirp4netns's address is fixed;
# for pasta any address routed to it works, and a link-local one clashes with nothing.
DNS_FORWARD: dict[StackName, str] = {"pasta": "169.254.1.53", "slirp4netns": "10.0.2.3"}


def sandbox_resolv_conf(host_resolv_conf: str, stack: StackName) -> str | None:
    """The resolv.conf a sandbox needs instead of the host's, or None when the host's
    works from a network namespace (it names a resolver that is not on loopback)."""
    servers, other = [], []
    for line in host_resolv_conf.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            servers.append(words[1])
        elif words[:1] in (["search"], ["domain"], ["options"]):
            other.append(line.strip())
    if not servers or any(not _is_loopback(server) for server in servers):
        return None
    return "\n".join([f"nameserver {DNS_FORWARD[stack]}", *other]) + "\n"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def find(prefer: str = "auto") -> NetStack | None:
    """The first installed stack: pasta, then slirp4netns; `prefer` names one, or "none"."""
    names: tuple[StackName, ...] = ("pasta", "slirp4netns")
    for name in names:
        if prefer in ("auto", name) and (path := shutil.which(name)) is not None:
            return NetStack(name, path)
    return None


def has_default_route(pid: int) -> bool:
    """Whether the network namespace of `pid` has a default route, i.e. the stack has
    configured its interface (read from /proc, which shows the namespace of the pid)."""
    try:
        lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1:2] == ["00000000"] for line in lines)


def interfaces(pid: int) -> list[str]:
    """Network interfaces of the namespace `pid` is in."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines]
