"""The OCI runtime configuration (`config.json`) of one sandbox: a pure function of its
settings, so that what a sandbox may do is read and tested in one place.

What it asks of the OCI runtime (runc), and why:
  - namespaces: user, PID, network, mount, IPC, UTS and cgroup, all new;
  - the user namespace maps the sandbox's uids and gids 0-65535 to one unprivileged host
    range (`IdRange`): root inside is an unprivileged uid outside, owning nothing of the
    host. All sandboxes share the range, so that one template root filesystem, owned by
    that range, serves them all; they cannot see each other anyway (their own mount, PID
    and network namespaces; the data dir is in none of them);
  - capabilities: Docker's default set minus NET_RAW (no raw sockets), and
    no_new_privs, so no setuid program gains any;
  - seccomp: `seccomp.profile()`, an allowlist modelled on Docker's default;
  - /proc and /sys entries that tell about or act on the host are masked or read-only;
  - resources: memory (no swap beyond it), CPU, a pids limit (a fork bomb stays inside),
    and an OOM score that makes the kernel pick a sandbox's processes before the
    platform's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wakeproxy.platform.runtime import seccomp

IN_SANDBOX_IDS = 65536
"""uids/gids 0..65535 exist inside a sandbox (nobody is 65534)."""

CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
"""Docker's default set without CAP_NET_RAW. They hold only inside the sandbox's own
user namespace: none of them reaches anything of the host."""

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

OOM_SCORE_ADJ = 500
"""Added to a sandbox process's OOM badness (-1000..1000): under memory pressure on the
host, the kernel kills in a sandbox before it kills the platform (which keeps 0)."""


@dataclass(frozen=True, slots=True)
class IdRange:
    """Host uids/gids that a sandbox's 0..65535 map to."""

    base: int
    size: int = IN_SANDBOX_IDS

    def host(self, inside: int) -> int:
        return self.base + inside


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path mounted into the sandbox."""

    source: str
    destination: str
    writable: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpu_count: float
    pids: int = 4096
    open_files: int = 65536


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    rootfs: str
    """The sandbox's root filesystem (mounted before the runtime starts)."""
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    hostname: str
    ids: IdRange
    limits: Limits
    cgroups_path: str
    """Relative to each cgroup hierarchy's root: `wakeproxy-<key>/<sandbox id>`."""
    binds: Sequence[Bind] = field(default_factory=tuple)


def config(spec: ContainerSpec) -> dict[str, Any]:
    """The `config.json` document (OCI runtime spec 1.0)."""
    caps = list(CAPABILITIES)
    return {
        "ociVersion": "1.0.2",
        "root": {"path": spec.rootfs, "readonly": False},
        "hostname": spec.hostname,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(spec.argv),
            "env": [f"{key}={value}" for key, value in spec.env.items()],
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [
                {
                    "type": "RLIMIT_NOFILE",
                    "hard": spec.limits.open_files,
                    "soft": spec.limits.open_files,
                },
            ],
            "noNewPrivileges": True,
            "oomScoreAdj": OOM_SCORE_ADJ,
        },
        "mounts": _mounts(spec.binds),
        "linux": {
            "uidMappings": [_mapping(spec.ids)],
            "gidMappings": [_mapping(spec.ids)],
            "namespaces": [
                {"type": kind}
                for kind in ("pid", "network", "ipc", "uts", "mount", "user", "cgroup")
            ],
            "cgroupsPath": spec.cgroups_path,
            "resources": _resources(spec.limits),
            "seccomp": seccomp.profile(),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def _mapping(ids: IdRange) -> dict[str, int]:
    return {"containerID": 0, "hostID": ids.base, "size": ids.size}


def _resources(limits: Limits) -> dict[str, Any]:
    memory = limits.memory_mb * 1024 * 1024
    period = 100_000
    return {
        # Only the character devices every container gets (null, zero, full, random,
        # urandom, tty, ptmx/pts); no block device, nothing of the host's.
        "devices": [{"allow": False, "access": "rwm"}],
        # swap = memory: no swap on top of the limit, so the limit is what it uses.
        "memory": {"limit": memory, "swap": memory},
        "cpu": {"period": period, "quota": max(int(limits.cpu_count * period), 1000)},
        "pids": {"limit": limits.pids},
    }


def _mounts(binds: Sequence[Bind]) -> list[dict[str, Any]]:
    nosuid_nodev = ["nosuid", "nodev"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": [*nosuid_nodev, "noexec", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": [*nosuid_nodev, "noexec"],
        },
        {
            # A sysfs of the sandbox's own network namespace, read-only.
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": [*nosuid_nodev, "noexec", "ro"],
        },
    ]
    for bind in binds:
        options = ["rbind", "nosuid", "nodev", "rw" if bind.writable else "ro"]
        mounts.append(
            {
                "destination": bind.destination,
                "type": "bind",
                "source": bind.source,
                "options": options,
            }
        )
    return mounts
