"""Sandboxes are a security boundary: the real `wakeproxy up` (runc containers), the real
`e2b` SDK, and from inside a sandbox each attack a user's code could try fails.

Two sandboxes share one platform for the module: `a` attacks, `b` is the neighbour whose
files and ports `a` must not reach. Every check runs a command in `a` through the SDK and
looks at what it printed (or at the host, for what the host sees of it).
"""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess

e2b = pytest.importorskip("e2b")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolated sandboxes need root")

SECRET = uuid.uuid4().hex


@dataclass
class Scene:
    platform: PlatformProcess
    a: Any
    b: Any
    host_secret: Path

    def record(self, sandbox: Any) -> dict[str, Any]:
        path = self.platform.data_dir / "records" / f"{sandbox.sandbox_id}.json"
        runtime: dict[str, Any] = json.loads(path.read_text())["runtime"]
        return runtime


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    workdir = tmp_path_factory.mktemp("isolation")
    host_secret = workdir / "host-secret.txt"
    host_secret.write_text(SECRET)
    platform = PlatformProcess(workdir).start()
    options = {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
        "request_timeout": 30,
    }
    try:
        a = e2b.Sandbox.create(**options)
        b = e2b.Sandbox.create(**options)
        yield Scene(platform, a, b, host_secret)
    finally:
        platform.stop()


def run(sandbox: Any, command: str, user: str = "user") -> tuple[int, str]:
    """Exit code and output (stdout + stderr) of `command` in the sandbox, as `user`."""
    try:
        result = sandbox.commands.run(command, user=user, timeout=60)
    except e2b.CommandExitException as failed:
        return failed.exit_code, failed.stdout + failed.stderr
    return result.exit_code, result.stdout + result.stderr


def python(sandbox: Any, code: str, user: str = "root") -> tuple[int, str]:
    return run(sandbox, f"python3 -c {shlex.quote(code)}", user)


def test_commands_run_as_user_by_default_and_as_root_only_when_asked(scene: Scene) -> None:
    assert run(scene.a, "id -un; echo $HOME") == (0, "user\n/home/user\n")
    assert run(scene.a, "id -u", user="root") == (0, "0\n")
    scene.a.files.write("/home/user/owned.txt", "mine")
    assert run(scene.a, "stat -c %U:%G /home/user/owned.txt") == (0, "user:user\n")
    code, out = run(scene.a, "touch /etc/not-for-user")
    assert code != 0
    assert "Permission denied" in out
    # Files act as the user as well: what it may not read or write fails.
    with pytest.raises(e2b.SandboxException):
        scene.a.files.read("/etc/shadow")
    with pytest.raises(e2b.SandboxException):
        scene.a.files.write("/etc/planted", "x")
    assert "root:" in scene.a.files.read("/etc/shadow", user="root")


def test_root_inside_is_an_unprivileged_uid_outside(scene: Scene) -> None:
    code, out = run(scene.a, "cat /proc/self/uid_map", user="root")
    assert code == 0
    inside, outside, count = (int(word) for word in out.split())
    assert (inside, count) == (0, 65536)
    assert outside >= 100_000
    agent = scene.record(scene.a)["pid"]
    status = Path(f"/proc/{agent}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid_line.split()[1:]) == {str(outside)}  # root inside, nobody outside
    assert os.readlink(f"/proc/{agent}/ns/user") != os.readlink("/proc/self/ns/user")
    code, out = python(scene.a, "import os; os.setuid(0); open('/proc/sysrq-trigger', 'w')")
    assert code != 0


def test_host_files_are_neither_readable_nor_writable(scene: Scene) -> None:
    code, out = run(scene.a, f"cat {scene.host_secret}", user="root")
    assert code != 0
    assert SECRET not in out
    host_root_hash = Path("/etc/shadow").read_text().splitlines()[0]
    code, out = run(scene.a, "cat /etc/shadow", user="root")
    assert code == 0
    assert host_root_hash not in out
    marker = f"/tmp/written-from-a-sandbox-{uuid.uuid4().hex}"
    assert run(scene.a, f"echo x > {marker} && cat {marker}", user="root") == (0, "x\n")
    assert not Path(marker).exists()  # its /tmp is its own
    code, out = run(scene.a, "touch /usr/bin/planted", user="root")
    assert code != 0
    assert "Read-only file system" in out
    assert not Path("/usr/bin/planted").exists()


def test_mount_and_umount_fail(scene: Scene) -> None:
    for command in (
        "mount -t tmpfs none /mnt",
        "umount /home/user",
        "umount -l /usr",
        "mount --bind / /mnt",
        "unshare -m true",
        "unshare -U -r true",
    ):
        code, out = run(scene.a, command, user="root")
        assert code != 0, (command, out)
    assert run(scene.a, "ls /home/user/owned.txt /usr/bin/env")[0] == 0  # all still there


def test_another_sandbox_s_files_and_the_data_dir_are_not_there(scene: Scene) -> None:
    scene.b.files.write("/home/user/b-secret.txt", SECRET)
    data_dir = scene.platform.data_dir
    for path in (data_dir, data_dir / "sandboxes", data_dir / "records", data_dir / "ports.sock"):
        code, _ = run(scene.a, f"test -e {path}", user="root")
        assert code != 0, path
    # Everywhere a sandbox can write or a platform could have put something of b's.
    folders = "/home /root /tmp /etc /var /opt /run /mnt /srv /media"
    _, out = run(scene.a, f"grep -rls {SECRET} {folders} 2>/dev/null", user="root")
    assert out.strip() == ""


def test_no_unix_socket_of_the_platform_is_reachable(scene: Scene) -> None:
    _, out = run(scene.a, "find / -xdev -type s 2>/dev/null; find /run /tmp -type s", "root")
    assert "wakeproxy" not in out
    assert "broker" not in out
    assert "ports.sock" not in out
    code, out = python(
        scene.a,
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(scene.platform.data_dir / 'ports.sock')!r})",
    )
    assert code != 0
    assert "FileNotFoundError" in out


def _connects(sandbox: Any, host: str, port: int) -> bool:
    code, out = python(
        sandbox,
        "import socket\n"
        f"s = socket.create_connection(({host!r}, {port}), timeout=3)\n"
        "print('connected')",
    )
    return code == 0 and "connected" in out


def test_the_platform_s_listeners_and_another_sandbox_s_ports_are_unreachable(
    scene: Scene,
) -> None:
    platform = scene.platform
    listeners = (platform.proxy_port, platform.api_port, platform.admin_port)
    _, out = python(
        scene.a,
        "import socket, struct\n"
        "for line in open('/proc/net/route').read().splitlines()[1:]:\n"
        "    fields = line.split()\n"
        "    if fields[1] == '00000000':\n"
        "        print(socket.inet_ntoa(struct.pack('<I', int(fields[2], 16))))",
    )
    hosts = ["127.0.0.1", *out.split()]  # its loopback, and pasta's gateway when online
    for host in hosts:
        for port in listeners:
            assert not _connects(scene.a, host, port), (host, port)
    scene.b.commands.run("python3 -m http.server 8765 --bind 127.0.0.1", background=True)
    scene.b.commands.run(
        "python3 -c 'import socket,time\n"
        "for _ in range(300):\n"
        '  try: socket.create_connection(("127.0.0.1", 8765), 1); break\n'
        "  except OSError: time.sleep(0.05)'"
    )
    assert _connects(scene.b, "127.0.0.1", 8765)  # it listens...
    for host in hosts:
        assert not _connects(scene.a, host, 8765), host  # ...for b alone


def test_kernel_modules_ptrace_of_the_host_and_raw_sockets_fail(scene: Scene) -> None:
    # finit_module(-1, "", 0): EPERM, not EBADF: the call never reaches the kernel's check.
    code, out = python(
        scene.a,
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(313, -1, b'', 0), os.strerror(ctypes.get_errno()))",
    )
    assert (code, out.strip()) == (0, "-1 Operation not permitted")
    code, out = run(scene.a, "modprobe dummy; insmod /nonexistent.ko", user="root")
    assert code != 0
    platform_pid = scene.platform.proc.pid if scene.platform.proc else 1
    code, out = python(
        scene.a,
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.ptrace(16, {platform_pid}, 0, 0), os.strerror(ctypes.get_errno()))",
    )
    assert code == 0
    assert out.startswith("-1 ")
    for family, kind in (("AF_INET", "SOCK_RAW, 1"), ("AF_PACKET", "SOCK_RAW, 0")):
        code, out = python(scene.a, f"import socket; socket.socket(socket.{family}, socket.{kind})")
        assert code != 0, family
        assert "PermissionError" in out


def test_host_processes_are_not_in_proc(scene: Scene) -> None:
    code, out = run(scene.a, "ps -eo pid,args", user="root")
    assert code == 0
    assert "wakeproxy up" not in out
    assert "pytest" not in out
    platform_pid = scene.platform.proc.pid if scene.platform.proc else 1
    assert run(scene.a, f"cat /proc/{platform_pid}/cmdline | tr '\\0' ' '")[1].find("up") < 0
    pids = [line.split()[0] for line in out.splitlines()[1:]]
    assert pids[0] == "1"
    assert len(pids) < 20


def test_a_memory_hog_is_killed_alone(scene: Scene) -> None:
    code, out = python(scene.a, "b = bytearray(2 * 1024**3); print('allocated')", user="user")
    assert "allocated" not in out
    assert code != 0
    assert run(scene.b, "echo b serves") == (0, "b serves\n")
    assert run(scene.a, "echo a serves") == (0, "a serves\n")
    memory = Path(scene.record(scene.a)["cgroup"].replace("/freezer/", "/memory/"))
    assert oom_kills(memory / "memory.oom_control") > 0


def test_a_fork_bomb_stays_inside(scene: Scene) -> None:
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    scene.a.commands.run(f"python3 -c {shlex.quote(bomb)}", background=True, timeout=0)
    freezer = scene.record(scene.a)["cgroup"]
    pids = Path(freezer.replace("/freezer/", "/pids/")) / "pids.events"
    memory = Path(freezer.replace("/freezer/", "/memory/")) / "memory.oom_control"

    def stopped_by_a_limit() -> bool:
        # The pids limit refuses forks, or the memory limit kills the forked copies first.
        return "max 0" not in pids.read_text() or oom_kills(memory) > kills_before

    kills_before = oom_kills(memory)
    deadline = time.monotonic() + 60
    while not stopped_by_a_limit():
        assert time.monotonic() < deadline, "the fork bomb met no limit"
        time.sleep(0.05)
    assert run(scene.b, "echo b serves") == (0, "b serves\n")
    platform = scene.platform
    assert e2b.Sandbox.list(
        api_key=platform.env["E2B_API_KEY"], api_url=platform.env["E2B_API_URL"]
    ).next_items()
    scene.a.kill()  # however busy it is


def oom_kills(memory_oom_control: Path) -> int:
    for line in memory_oom_control.read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def test_user_has_passwordless_sudo_to_root_inside_only(scene: Scene) -> None:
    # setuid cannot work under no_new_privs: `sudo` asks the agent, which is root inside.
    # (Sandbox b: the fork bomb's test ends a.)
    assert run(scene.b, "sudo id -u; sudo -u root whoami; id -un") == (0, "0\nroot\nuser\n")
    planting = "echo planted | sudo tee /etc/planted >/dev/null; cat /etc/planted"
    assert run(scene.b, planting) == (0, "planted\n")
    assert run(scene.b, "sudo sh -c 'exit 3'")[0] == 3
    assert run(scene.b, "sudo -i pwd") == (0, "/root\n")
    code, out = run(scene.b, "sudo no-such-command")
    assert (code, "command not found" in out) == (1, True)
    # Root through sudo is the sandbox's root: still no way to the host's files.
    code, out = run(scene.b, f"sudo cat {scene.host_secret}")
    assert code != 0
    assert SECRET not in out
