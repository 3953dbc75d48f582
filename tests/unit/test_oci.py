"""The OCI config of a sandbox (`oci.config`), its seccomp profile, and reading OOM kills
from a cgroup: pure data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wakeproxy.platform.runtime import oci, seccomp
from wakeproxy.platform.runtime.containers import oom_kills


def _config(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "rootfs": "/run/wakeproxy/k/s/rootfs",
        "argv": ["agent", "--port", "49983"],
        "env": {"HOME": "/home/user", "PATH": "/usr/bin"},
        "cwd": "/",
        "hostname": "sandbox",
        "ids": oci.IdRange(1_000_000_000),
        "limits": oci.Limits(memory_mb=512, cpu_count=2, pids=100, open_files=1024),
        "cgroups_path": "/wakeproxy-k/s",
        "binds": (oci.Bind("/usr", "/usr"), oci.Bind("/data/home", "/home/user", True)),
    }
    fields.update(changes)
    return oci.config(oci.ContainerSpec(**fields))


def test_every_namespace_is_new_and_root_maps_to_the_unprivileged_range() -> None:
    linux = _config()["linux"]
    kinds = {namespace["type"] for namespace in linux["namespaces"]}
    assert kinds == {"user", "pid", "network", "mount", "ipc", "uts", "cgroup"}
    assert all("path" not in namespace for namespace in linux["namespaces"])
    expected = [{"containerID": 0, "hostID": 1_000_000_000, "size": 65536}]
    assert linux["uidMappings"] == linux["gidMappings"] == expected


def test_the_process_has_no_new_privileges_and_no_raw_sockets_or_admin_rights() -> None:
    process = _config()["process"]
    assert process["noNewPrivileges"] is True
    assert process["user"] == {"uid": 0, "gid": 0}
    capabilities = process["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        assert "CAP_NET_RAW" not in capabilities[kind]
        assert "CAP_SYS_ADMIN" not in capabilities[kind]
        assert "CAP_SYS_MODULE" not in capabilities[kind]
        assert "CAP_SYS_PTRACE" not in capabilities[kind]
    assert capabilities["ambient"] == capabilities["inheritable"] == []
    assert process["oomScoreAdj"] > 0


def test_limits_come_from_the_settings() -> None:
    resources = _config()["linux"]["resources"]
    assert resources["memory"] == {"limit": 512 << 20, "swap": 512 << 20}
    assert resources["cpu"] == {"period": 100_000, "quota": 200_000}
    assert resources["pids"] == {"limit": 100}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]


def test_binds_are_read_only_unless_asked_and_never_setuid() -> None:
    mounts = {mount["destination"]: mount for mount in _config()["mounts"]}
    assert "ro" in mounts["/usr"]["options"]
    assert "rw" in mounts["/home/user"]["options"]
    for mount in (mounts["/usr"], mounts["/home/user"]):
        assert {"nosuid", "nodev", "rbind"} <= set(mount["options"])
    assert "ro" in mounts["/sys"]["options"]
    assert "/proc/kcore" in _config()["linux"]["maskedPaths"]
    assert "/proc/sys" in _config()["linux"]["readonlyPaths"]


def test_seccomp_allows_common_calls_and_denies_what_reaches_the_host() -> None:
    profile = seccomp.profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for name in rule["names"]
    }
    assert {"read", "openat", "execve", "socket", "ptrace", "futex"} <= allowed
    denied = {
        "mount", "umount2", "unshare", "setns", "init_module", "finit_module", "kexec_load",
        "bpf", "perf_event_open", "open_by_handle_at", "reboot", "swapon", "keyctl",
        "io_uring_setup", "userfaultfd", "pivot_root", "fsopen", "move_mount",
    }  # fmt: skip
    assert not denied & allowed
    (clone,) = [rule for rule in profile["syscalls"] if rule["names"] == ["clone"]]
    assert clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    assert clone["args"][0]["value"] & 0x10000000  # CLONE_NEWUSER is among the masked
    (clone3,) = [rule for rule in profile["syscalls"] if rule["names"] == ["clone3"]]
    assert clone3["errnoRet"] == seccomp.ENOSYS


def test_oom_kills_are_read_from_cgroup_v1_and_v2_files(tmp_path: Path) -> None:
    v1, v2, none = tmp_path / "v1", tmp_path / "v2", tmp_path / "none"
    for folder in (v1, v2, none):
        folder.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    assert oom_kills(v1) == 3
    assert oom_kills(v2) == 2
    assert oom_kills(none) == 0
