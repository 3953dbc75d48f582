"""A sandbox's root filesystem: the host's userland read-only, under a writable layer of
its own.

    /             overlayfs: lower = the template (below), upper = <sandbox>/layer/upper
    /usr          the host's /usr, bind-mounted read-only (so /bin, /lib... via symlinks)
    /home/user    <sandbox>/home (the folder the platform's files API has always used)
    (the platform's Python and package, read-only; see `launch`)

The template is built once per data dir from the host: a copy of /etc without its secrets
(shadow files, SSH host keys, sudoers, private TLS keys), with accounts of its own
(`root`, the host's system accounts, and `user`, uid/gid 1000, HOME /home/user), and the
top-level folders and symlinks of a Debian-like root. Every file of the template and
of the layer is owned by the sandbox's own ids (`oci.IdRange`), so that root inside owns
/etc and /root, `user` owns its home, and nothing in the template belongs to the host.

Writes anywhere but /usr land in the sandbox's layer, in the data dir: they stay inside
the sandbox, persist across pause and platform restarts, and go with it when it is
killed. Nothing of the data dir, other sandboxes, the platform's sockets or records is
mounted in; the overlay's own mount shows no path of the host to open.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from wakeproxy.platform.runtime.oci import IdRange

TEMPLATE_VERSION = 1
USER_ID = 1000
HOME = "/home/user"
SHIM_DIR = "/opt/wakeproxy/bin"

SECRETS = (
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "subuid",
    "subuid-",
    "subgid",
    "subgid-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl/private",
    "security/opasswd",
    "machine-id",
    ".pwd.lock",
    "wakeproxy",
)
"""Entries of the host's /etc left out of the template."""

TOP_FOLDERS = {
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "run": 0o755,
    "run/lock": 0o1777,
    "tmp": 0o1777,
    "root": 0o700,
    "home": 0o755,
    "mnt": 0o755,
    "media": 0o755,
    "opt": 0o755,
    "srv": 0o755,
    "usr": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
    "var/log": 0o755,
    "var/cache": 0o755,
    "var/lib": 0o755,
    "var/spool": 0o755,
}
USERLAND_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level names that a merged-/usr host has as symlinks into /usr."""

_MS_NOSUID, _MS_NODEV, _MS_BIND = 2, 4, 4096
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def template(
    data_dir: Path, ids: IdRange, shims: Mapping[str, str], host: Path = Path("/")
) -> Path:
    """The data dir's template, built (atomically) when missing. `shims`: symlinks for
    the `SHIM_DIR` (python -> /usr/bin/python3 where the host has no `python`)."""
    target = data_dir / f"template-{TEMPLATE_VERSION}"
    if target.is_dir():
        return target
    building = data_dir / f".template-{TEMPLATE_VERSION}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    build_template(building, ids, shims, host)
    try:
        building.rename(target)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(building, ignore_errors=True)
    return target


def build_template(target: Path, ids: IdRange, shims: Mapping[str, str], host: Path) -> None:
    target.mkdir(mode=0o755)
    for name, mode in TOP_FOLDERS.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        os.chmod(target / name, mode)
    (target / "var/run").symlink_to("/run")
    (target / "var/lock").symlink_to("/run/lock")
    for name in USERLAND_LINKS:
        source = host / name
        if source.is_symlink():
            (target / name).symlink_to(os.readlink(source))
        elif source.is_dir():
            (target / name).mkdir()  # a mount point: bind-mounted from the host
    (target / HOME.lstrip("/")).mkdir(mode=0o750)
    (target / SHIM_DIR.lstrip("/")).mkdir(parents=True)
    for name, program in shims.items():
        (target / SHIM_DIR.lstrip("/") / name).symlink_to(program)
    _copy_etc(host / "etc", target / "etc")
    _write_accounts(target / "etc", host / "etc")
    _own(target, ids)
    os.lchown(target / HOME.lstrip("/"), ids.host(USER_ID), ids.host(USER_ID))


def _copy_etc(source: Path, target: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(source)
        return {name for name in names if str(relative / name).removeprefix("./") in SECRETS}

    shutil.copytree(source, target, symlinks=True, ignore=ignore, ignore_dangling_symlinks=True)
    for name in ("resolv.conf", "hosts", "hostname"):
        (target / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (target / "resolv.conf").write_text((source / "resolv.conf").read_text())
    (target / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    (target / "hostname").write_text("sandbox\n")
    (target / "machine-id").write_text("")
    (target / "ssl/private").mkdir(parents=True, exist_ok=True, mode=0o700)


def _system_lines(path: Path, id_field: int) -> list[str]:
    """Entries of a host passwd/group file with ids below 1000 (system accounts), and
    `nobody`/`nogroup`; their member lists dropped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    kept = []
    for line in lines:
        fields = line.split(":")
        if len(fields) <= id_field or not fields[id_field].isdigit():
            continue
        number = int(fields[id_field])
        if number < USER_ID or number == 65534:
            if path.name == "group":
                fields[3] = ""
            kept.append(":".join(fields))
    return kept


def _write_accounts(etc: Path, host_etc: Path) -> None:
    users = [line for line in _system_lines(host_etc / "passwd", 2) if not line.startswith("user:")]
    groups = [line for line in _system_lines(host_etc / "group", 2) if not line.startswith("user:")]
    if not any(line.startswith("root:") for line in users):
        users.insert(0, "root:x:0:0:root:/root:/bin/bash")
    if not any(line.startswith("root:") for line in groups):
        groups.insert(0, "root:x:0:")
    groups = [_with_member(line, "sudo", "user") for line in groups]
    users.append(f"user:x:{USER_ID}:{USER_ID}:user:{HOME}:/bin/bash")
    groups.append(f"user:x:{USER_ID}:")
    (etc / "passwd").write_text("\n".join(users) + "\n")
    (etc / "group").write_text("\n".join(groups) + "\n")
    names = [line.split(":", 1)[0] for line in users]
    _write_private(etc / "shadow", "".join(f"{name}:*:19000:0:99999:7:::\n" for name in names))
    group_names = [line.split(":", 1)[0] for line in groups]
    _write_private(etc / "gshadow", "".join(f"{name}:*::\n" for name in group_names))
    _write_private(
        etc / "sudoers",
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\nuser ALL=(ALL:ALL) NOPASSWD: ALL\n",
        mode=0o440,
    )


def _with_member(line: str, group: str, member: str) -> str:
    fields = line.split(":")
    if fields[0] != group:
        return line
    fields[3] = ",".join(filter(None, [fields[3], member]))
    return ":".join(fields)


def _write_private(path: Path, text: str, mode: int = 0o640) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _own(root: Path, ids: IdRange) -> None:
    """Shift every owner by the sandbox id range: host uid N becomes N inside."""

    def shift(path: str) -> None:
        stat = os.lstat(path)
        uid, gid = min(stat.st_uid, ids.size - 1), min(stat.st_gid, ids.size - 1)
        os.lchown(path, ids.host(uid), ids.host(gid))

    shift(str(root))
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            shift(os.path.join(folder, name))


# -- one sandbox's layer ----------------------------------------------------------------------

RUN_DIR = Path("/run/wakeproxy")
"""Where sandbox roots are mounted. runc enters a sandbox's root as the sandbox's own
(unprivileged) root, which may not pass through the data dir (0700, and often below
another private folder): so the root is mounted in a folder anyone may traverse, and
everything from the data dir is mounted into it from here, by this process."""


def mount_point(runtime_key: str, sandbox_id: str) -> Path:
    return RUN_DIR / runtime_key / sandbox_id / "rootfs"


def mount_root(sandbox_root: Path, merged: Path, template_dir: Path, ids: IdRange) -> None:
    """Mount the sandbox's root at `merged` (creating its layer the first time), with its
    home in it. A root still mounted from before is unmounted first."""
    layer = sandbox_root / "layer"
    upper, work, home = layer / "upper", layer / "work", sandbox_root / "home"
    for folder in (upper, work, home):
        folder.mkdir(parents=True, exist_ok=True)
    os.chown(upper, ids.host(0), ids.host(0))
    os.chown(home, ids.host(USER_ID), ids.host(USER_ID))
    unmount_root(merged)
    for folder in (*reversed(merged.parents[: len(merged.relative_to(RUN_DIR).parts)]), merged):
        folder.mkdir(mode=0o711, exist_ok=True)
        os.chmod(folder, 0o711)  # also when runc made it first (0700, for its state)
    options = f"lowerdir={template_dir},upperdir={upper},workdir={work}"
    _mount("overlay", str(merged), "overlay", _MS_NOSUID | _MS_NODEV, options)
    try:
        _mount(str(home), str(merged / HOME.lstrip("/")), "", _MS_BIND, "")
    except BaseException:
        unmount_root(merged)
        raise


def unmount_root(merged: Path) -> None:
    """Unmount a sandbox's root and what is mounted in it; remove its folder."""
    while os.path.ismount(merged):
        if _libc.umount2(str(merged).encode(), _MNT_DETACH) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"umount {merged}: {os.strerror(errno)}")
    with contextlib.suppress(OSError):
        merged.rmdir()
        merged.parent.rmdir()


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    result = _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {fstype or 'bind'} on {target}: {os.strerror(errno)}")
