"""The template root filesystem of sandboxes, built from a stand-in host folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wakeproxy.platform.runtime import oci, rootfs

IDS = oci.IdRange(1_000_000_000)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    etc = root / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "ssh" / "ssh_host_ed25519_key").write_text("PRIVATE")
    (etc / "shadow").write_text("root:$6$secret:19000::::::\n")
    (etc / "sudoers").write_text("alice ALL=(ALL) ALL\n")
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n")
    (etc / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="building a template chowns files (root)")
def test_the_template_keeps_no_host_secret_and_has_the_sandbox_accounts(
    tmp_path: Path, host: Path
) -> None:
    (tmp_path / "data").mkdir()
    built = rootfs.template(tmp_path / "data", IDS, {"python": "/usr/bin/python3"}, host)
    etc = built / "etc"
    assert not (etc / "ssh").exists()
    assert "secret" not in (etc / "shadow").read_text()
    assert "alice" not in (etc / "sudoers").read_text()
    assert "user ALL=(ALL:ALL) NOPASSWD: ALL" in (etc / "sudoers").read_text()
    passwd = (etc / "passwd").read_text()
    assert "alice" not in passwd
    assert "user:x:1000:1000:user:/home/user:/bin/bash" in passwd
    assert "daemon:x:1:1" in passwd
    assert "nobody:x:65534" in passwd
    assert "sudo:x:27:user" in (etc / "group").read_text()
    assert (etc / "resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert os.readlink(built / "bin") == "usr/bin"
    assert os.readlink(built / rootfs.SHIM_DIR.lstrip("/") / "python") == "/usr/bin/python3"
    # Owned by the sandbox's ids: root inside owns /etc, `user` its home.
    assert os.lstat(etc / "passwd").st_uid == IDS.host(0)
    assert os.lstat(built / "home" / "user").st_uid == IDS.host(1000)
    assert os.lstat(built / "root").st_mode & 0o777 == 0o700
    assert all(
        os.lstat(os.path.join(folder, name)).st_uid >= IDS.base
        for folder, dirs, files in os.walk(built)
        for name in (*dirs, *files)
    )
    # Built once: a second call finds it.
    assert rootfs.template(tmp_path / "data", IDS, {}, host) == built
