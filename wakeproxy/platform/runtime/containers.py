"""`RuncRuntime`: each sandbox an OCI container run by runc (the embedded platform's
default `Runtime`).

    this process
     ├─ runc create / start / pause / resume / delete   (short-lived, one per call)
     ├─ container init: the agent (root of the sandbox's user, PID, mount and network
     │   namespaces; see `oci`), with everything the user runs below it
     ├─ pasta, attached to the container's network namespace (outbound traffic)
     └─ the watchdog (`watchdog.py`), unless sandboxes are kept across restarts

A start: mount the sandbox's root (`rootfs`), write its `config.json` (`oci`), `runc
create`, bring its loopback up and attach pasta while its first process waits, `runc
start`, then wait for the agent's GET /health. The platform reaches sandbox ports with
sockets it creates in the container's network namespace (`sockets`), as before.

Pausing is `runc pause` (the cgroup freezer); memory, sockets and files stay. Killing is
`runc delete --force`, then pasta ends and the root is unmounted; the sandbox's files
stay in its folder until the platform removes it.

Lifetime: the containers do not depend on this process. Unless sandboxes are to survive
a restart, a watchdog child deletes every container of this data dir when this process
ends however it ends (it notices its stdin, a pipe from us, closing). A restarted
platform takes containers back by asking runc (`adopt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from wakeproxy.backends.base import AGENT_PORT
from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.contracts import ExitListener, RuntimeInfo, SandboxExit, SandboxSpec
from wakeproxy.platform.runtime import (
    capabilities,
    exitwatch,
    launch,
    netstack,
    oci,
    procfs,
    rootfs,
    sockets,
    userland,
)
from wakeproxy.platform.runtime.health import agent_is_healthy
from wakeproxy.platform.runtime.launch import Child
from wakeproxy.platform.runtime.netstack import NetStack
from wakeproxy.platform.runtime.polling import poll_until
from wakeproxy.platform.runtime.runc import ContainerNotFound, Runc, RuncError
from wakeproxy.platform.runtime.runtime import SandboxNotRunning, checked_id
from wakeproxy.platform.runtime.starting import SandboxStartError

log = logging.getLogger(__name__)

ID_BASE = 1_000_000_000
"""Host uid/gid of root inside every sandbox (`oci.IdRange`): far above the ranges that
`useradd` and /etc/subuid hand out, so no host account owns anything of a sandbox."""
AGENT_ROOT = "/opt/wakeproxy"
"""Where the platform's `wakeproxy` package is mounted (read-only) in a sandbox."""
WATCHDOG = Path(__file__).with_name("watchdog.py")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETSTACK_TIMEOUT = 5.0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


class IsolationUnavailable(WakeproxyError):
    """This machine cannot run isolated sandboxes; the message says what to install."""


@dataclass(slots=True)
class _Container:
    info: RuntimeInfo
    netns: int
    stack: Child | None = None


class RuncRuntime:
    """Runs each sandbox as a runc container; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        runc: Runc,
        *,
        limits: oci.Limits,
        survive_restart: bool = False,
        start_timeout: float = 20.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._runc = runc
        self._limits = limits
        self._survive = survive_restart
        self._start_timeout = start_timeout
        self._connect_timeout = connect_timeout
        self._key = capabilities.runtime_key(self._data_dir)
        self._ids = oci.IdRange(ID_BASE)
        self._sockets = sockets.NamespaceSockets()
        self._stack = netstack.find("pasta")
        self._containers: dict[str, _Container] = {}
        self._starting: set[str] = set()
        self._template: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watches: dict[str, exitwatch.ExitWatch] = {}
        self._exit_listeners: list[ExitListener] = []
        # A container's first process is orphaned when `runc create` exits: as the
        # subreaper we become its parent, so its exit is ours to reap (no zombie) and its
        # status is known.
        _become_subreaper()

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, *, limits: oci.Limits, survive_restart: bool = False
    ) -> RuncRuntime:
        """The runtime, or `IsolationUnavailable` saying what this machine lacks."""
        problem = missing()
        runc = Runc.find(runc_root(data_dir))
        if problem or runc is None:
            raise IsolationUnavailable(problem or "runc is not installed")
        return cls(data_dir, runc, limits=limits, survive_restart=survive_restart)

    # -- Runtime protocol -------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> RuntimeInfo:
        sandbox_id = checked_id(spec.sandbox_id)
        if sandbox_id in self._containers or sandbox_id in self._starting:
            raise WakeproxyError(f"sandbox {sandbox_id} is already running")
        self._starting.add(sandbox_id)
        try:
            await self._end_leftovers(sandbox_id)
            self._start_watchdog()
            container = await self._create(spec)
            try:
                await self._runc.start(sandbox_id)
                await self._wait_healthy(spec, container)
            except BaseException:
                await self._end(sandbox_id, container)
                raise
        finally:
            self._starting.discard(sandbox_id)
        self._hold(sandbox_id, container)
        return container.info

    async def freeze(self, sandbox_id: str) -> None:
        self._get(sandbox_id)
        await self._runc.pause(sandbox_id)

    async def thaw(self, sandbox_id: str) -> None:
        self._get(sandbox_id)
        await self._runc.resume(sandbox_id)

    async def kill(self, sandbox_id: str) -> None:
        """End the container, its network stack and its root's mount. Killing a sandbox
        that is not running (or twice) is fine."""
        container = self._containers.pop(checked_id(sandbox_id), None)
        if (watch := self._watches.pop(sandbox_id, None)) is not None:
            watch.cancel()
        await self._end(sandbox_id, container)

    async def open_socket(self, sandbox_id: str, port: int) -> socket.socket:
        container = self._containers.get(sandbox_id)
        if container is None:
            raise ConnectionRefusedError(f"sandbox {sandbox_id} is not running")
        async with asyncio.timeout(self._connect_timeout):
            return await sockets.connect(self._sockets.create(container.netns), port)

    async def adopt(self, spec: SandboxSpec, info: RuntimeInfo) -> bool:
        """Take back a container a previous platform process started. A sandbox that was
        to end with its platform, or that runc no longer runs, is ended: False."""
        sandbox_id = checked_id(spec.sandbox_id)
        if sandbox_id in self._containers:
            return True
        try:
            state = await self._runc.state(sandbox_id)
        except ContainerNotFound:
            state = None
        if (
            state is None
            or state.status not in ("running", "paused")
            or info.ends_with_platform
            or (info.pid and info.pid != state.pid)
        ):
            await self._end(sandbox_id, None)
            return False
        self._start_watchdog()
        init = Child.of(state.pid)
        netns = os.open(f"/proc/{init.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        stack = None
        if info.netstack_pid and procfs.is_running(info.netstack_pid, info.netstack_start_time):
            stack = Child(info.netstack_pid, info.netstack_start_time)
        full = self._info(sandbox_id, init, stack, warnings=info.warnings)
        self._hold(sandbox_id, _Container(full, netns, stack))
        return True

    def on_exit(self, listener: ExitListener) -> None:
        """`listener` hears of every container whose first process (the agent) ends by
        itself; see `Runtime.on_exit`."""
        self._exit_listeners.append(listener)

    # -- beyond the protocol ----------------------------------------------------------------

    async def close(self) -> None:
        """Kill every sandbox (platform shutdown when sandboxes are not kept)."""
        results = await asyncio.gather(
            *(self.kill(sandbox_id) for sandbox_id in list(self._containers)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("ending a sandbox at shutdown failed: %s", result)
        self.detach()
        _remove_empty_parents(self._key)

    def detach(self) -> None:
        """Forget every sandbox, leaving the containers running (for the next start)."""
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        for container in self._containers.values():
            with contextlib.suppress(OSError):
                os.close(container.netns)
        self._containers.clear()
        self._sockets.close()
        if self._watchdog is not None:
            # Its stdin closes: it ends what is left, then itself.
            self._watchdog.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(10)
            self._watchdog = None

    # -- exits ------------------------------------------------------------------------------

    def _hold(self, sandbox_id: str, container: _Container) -> None:
        self._containers[sandbox_id] = container
        info = container.info
        self._watches[sandbox_id] = exitwatch.ExitWatch(
            info.init_pid,
            info.init_start_time,
            lambda status: self._exited(sandbox_id, container, status),
        )

    def _exited(self, sandbox_id: str, container: _Container, status: exitwatch.Status) -> None:
        # The container stays held (and its cgroup, which tells of OOM kills) until the
        # listener's owner kills it.
        if self._containers.get(sandbox_id) is not container:
            return
        self._watches.pop(sandbox_id, None)
        memory = _memory_group(f"wakeproxy-{self._key}/{sandbox_id}")
        reason, detail = exitwatch.describe(status, oom_kills(memory))
        ended = SandboxExit(sandbox_id, reason, detail)
        for listener in list(self._exit_listeners):
            try:
                listener(ended)
            except Exception:
                log.exception("a sandbox exit listener failed")

    # -- starting ---------------------------------------------------------------------------

    async def _create(self, spec: SandboxSpec) -> _Container:
        sandbox_id = spec.sandbox_id
        if self._template is None:
            shims = userland.shims(userland.SYSTEM_PATH)
            self._template = await asyncio.to_thread(
                rootfs.template, self._data_dir, self._ids, shims
            )
        merged = rootfs.mount_point(self._key, sandbox_id)
        await asyncio.to_thread(self._prepare, spec, merged, self._template)
        pid_file = spec.root / "container.pid"
        pid_file.unlink(missing_ok=True)
        await self._runc.create(sandbox_id, spec.root, pid_file, spec.root / "agent.log")
        init = Child.of(int(pid_file.read_text()))
        netns = os.open(f"/proc/{init.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        container = _Container(self._info(sandbox_id, init, None), netns)
        try:
            self._loopback_up(netns)
            if spec.allow_internet:
                await self._attach_network(spec, container)
        except BaseException:
            await self._end(sandbox_id, container)
            raise
        return container

    def _prepare(self, spec: SandboxSpec, merged: Path, template: Path) -> None:
        """Blocking: the sandbox's root mounted, its home provisioned, its config written."""
        rootfs.mount_root(spec.root, merged, template, self._ids)
        home = spec.root / "home"
        _provision(home, self._ids)
        resolv = _resolv_conf(spec, self._stack)
        document = oci.config(self._container_spec(spec, merged, resolv))
        config = spec.root / "config.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(document, file)

    def _container_spec(
        self, spec: SandboxSpec, merged: Path, resolv: Path | None
    ) -> oci.ContainerSpec:
        env = userland.sandbox_env(
            home=rootfs.HOME,
            folders=list(userland.SYSTEM_PATH),
            shim_dir=rootfs.SHIM_DIR,
            user="user",
            host_env=os.environ,
            envs=spec.envs,
        )
        if spec.agent_token is not None:
            env[launch.TOKEN_ENV] = spec.agent_token
        binds = [oci.Bind("/usr", "/usr"), *_python_binds(), _package_bind()]
        binds += [oci.Bind(f"/{name}", f"/{name}") for name in _userland_folders()]
        if resolv is not None:
            binds.append(oci.Bind(str(resolv), "/etc/resolv.conf"))
        argv = [*agent_command(), "--port", str(AGENT_PORT), "--home", rootfs.HOME, "--accounts",
                "--sudo-dir", rootfs.SHIM_DIR]  # fmt: skip
        return oci.ContainerSpec(
            rootfs=str(merged),
            argv=argv,
            env=env,
            cwd="/",
            hostname="sandbox",
            ids=self._ids,
            limits=self._limits,
            cgroups_path=f"/wakeproxy-{self._key}/{spec.sandbox_id}",
            binds=binds,
        )

    def _info(
        self, sandbox_id: str, init: Child, stack: Child | None, warnings: Sequence[str] = ()
    ) -> RuntimeInfo:
        freezer, group = _freezer_group(f"wakeproxy-{self._key}/{sandbox_id}")
        return RuntimeInfo(
            pid=init.pid,
            isolated_network=True,
            agent_port=AGENT_PORT,
            warnings=tuple(warnings),
            start_time=init.start_time,
            init_pid=init.pid,
            init_start_time=init.start_time,
            home=rootfs.HOME,
            cgroup=group,
            freezer=freezer,
            netstack="" if stack is None else "pasta",
            netstack_pid=0 if stack is None else stack.pid,
            netstack_start_time=0 if stack is None else stack.start_time,
            ends_with_platform=not self._survive,
            isolation="runc",
        )

    def _loopback_up(self, netns: int) -> None:
        """A new network namespace has its loopback down; the agent listens there."""
        import fcntl
        import struct

        sock = self._sockets.create(netns, socket.SOCK_DGRAM)
        with sock:
            request = struct.pack("16sH22x", b"lo", 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))

    async def _attach_network(self, spec: SandboxSpec, container: _Container) -> None:
        """pasta for outbound traffic; one that does not come up is a warning on the
        sandbox, not a failed start."""
        stack = self._stack
        if stack is None:
            self._warn(spec, container, netstack.MISSING_WARNING)
            return
        dns = (spec.root / "resolv.conf").exists()
        argv = stack.argv(container.netns, None, as_root=True, dns_forward=dns)
        argv = launch.wrap(argv, group=None, pdeathsig=not self._survive)
        env = {"PATH": os.environ.get("PATH", ""), launch.MARKER: self._marker(spec.sandbox_id)}
        log_path = spec.root / "agent.log"
        offset = launch.log_size(log_path)
        child = launch.spawn(argv, env, log=log_path, pass_fds=[container.netns])
        container.stack = child
        container.info = replace(
            container.info,
            netstack="pasta",
            netstack_pid=child.pid,
            netstack_start_time=child.start_time,
        )
        init = container.info.init_pid

        def settled() -> bool:
            return netstack.has_default_route(init) or not child.alive()

        await poll_until(settled, NETSTACK_TIMEOUT)
        if not netstack.has_default_route(init):
            lines = launch.log_tail(log_path, offset).splitlines()
            output = "; ".join(line for line in lines if "to syslog" not in line) or "no output"
            self._warn(spec, container, f"outbound network did not come up (pasta: {output})")

    def _warn(self, spec: SandboxSpec, container: _Container, warning: str) -> None:
        log.warning("sandbox %s: %s", spec.sandbox_id, warning)
        warnings = (*container.info.warnings, warning)
        container.info = replace(container.info, warnings=warnings)

    async def _wait_healthy(self, spec: SandboxSpec, container: _Container) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        init = Child(container.info.init_pid, container.info.init_start_time)
        while True:
            if not init.alive():
                raise SandboxStartError(_failure("exited", spec))
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    sock = self._sockets.create(container.netns)
                    await sockets.connect(sock, AGENT_PORT)
                if await agent_is_healthy(sock, spec.agent_token):
                    return
            if loop.time() >= deadline:
                what = f"did not answer GET /health within {self._start_timeout:g} s"
                raise SandboxStartError(_failure(what, spec))
            await asyncio.sleep(0.01)

    def _start_watchdog(self) -> None:
        if self._survive or self._watchdog is not None:
            return
        argv = [sys.executable, "-I", str(WATCHDOG), self._runc.binary, str(self._runc.root)]
        self._watchdog = subprocess.Popen(
            argv, stdin=subprocess.PIPE, start_new_session=True, close_fds=True
        )

    # -- ending -----------------------------------------------------------------------------

    async def _end(self, sandbox_id: str, container: _Container | None) -> None:
        try:
            await self._runc.delete(sandbox_id)
        finally:
            stacks: list[Child] = []
            if container is not None:
                with contextlib.suppress(OSError):
                    os.close(container.netns)
                if container.stack is not None:
                    container.stack.signal(9)
                    stacks.append(container.stack)
            await self._end_leftovers(sandbox_id, stacks)

    async def _end_leftovers(self, sandbox_id: str, known: Sequence[Child] = ()) -> None:
        """What a sandbox may have left: its container, its network stack (ours, and any
        found by the marker in its environment), its root's mount."""
        with contextlib.suppress(RuncError):
            await self._runc.delete(sandbox_id)
        marked = procfs.find_by_environ(launch.MARKER, self._marker(sandbox_id))
        # A stack we started is waited for by its handle: once it is a zombie its
        # environment is gone, so the marker would no longer find it to reap.
        stacks = [*known, *(Child.of(pid) for pid in marked)]
        for stack in stacks:
            stack.signal(9)
        if not await poll_until(lambda: not any(s.alive() for s in stacks), 5.0):
            raise WakeproxyError(f"the network stack of sandbox {sandbox_id} did not end")
        await asyncio.to_thread(rootfs.unmount_root, rootfs.mount_point(self._key, sandbox_id))
        _remove_groups(f"wakeproxy-{self._key}/{sandbox_id}")

    def _marker(self, sandbox_id: str) -> str:
        return f"{self._key}/{sandbox_id}"

    def _get(self, sandbox_id: str) -> _Container:
        container = self._containers.get(sandbox_id)
        if container is None:
            raise SandboxNotRunning(f"sandbox {sandbox_id} is not running in this runtime")
        return container


# -- helpers ---------------------------------------------------------------------------------


def runc_root(data_dir: Path) -> Path:
    """runc's state of a data dir's containers: beside their roots in /run, not in the data
    dir, so that a full data dir does not stop runc from recording a pause or a kill
    (the state is as old as the containers: both go with a reboot)."""
    return rootfs.RUN_DIR / capabilities.runtime_key(Path(data_dir)) / "runc"


def missing() -> str:
    """What this machine lacks to isolate sandboxes ("" when nothing)."""
    if os.geteuid() != 0:
        return "isolated sandboxes need root (runc creates their namespaces and cgroups)"
    if Runc.find(Path("/")) is None:
        return "runc is not installed (Debian/Ubuntu: apt-get install runc passt)"
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
    except (OSError, ValueError):
        return "this kernel has no user namespaces"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "this kernel has no overlayfs (modprobe overlay)"
    return ""


def agent_command() -> list[str]:
    """`launch.AGENT_COMMAND` as seen inside a sandbox: the same interpreter, the package
    from where it is mounted."""
    return [*launch.AGENT_COMMAND[:-1], AGENT_ROOT]


def _python_binds() -> list[oci.Bind]:
    """The platform's Python installation, read-only at its own path, unless it is the
    host's (under /usr, mounted anyway)."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return [
        oci.Bind(prefix, prefix)
        for prefix in sorted(prefixes)
        if prefix != "/usr" and not prefix.startswith("/usr/")
    ]


def _package_bind() -> oci.Bind:
    package = Path(launch.AGENT_COMMAND[-1]) / "wakeproxy"
    return oci.Bind(str(package), f"{AGENT_ROOT}/wakeproxy")


def _userland_folders() -> list[str]:
    """Top-level folders of the host's userland that are not symlinks into /usr (a host
    without merged /usr)."""
    return [
        name
        for name in rootfs.USERLAND_LINKS
        if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")
    ]


def _freezer_group(path: str) -> tuple[str, str]:
    """("cgroup1" | "cgroup2", the folder) of the freezer cgroup runc gives `path`."""
    if (CGROUP_ROOT / "freezer").is_dir():
        return "cgroup1", str(CGROUP_ROOT / "freezer" / path)
    return "cgroup2", str(CGROUP_ROOT / path)


def _hierarchies() -> list[Path]:
    return [path for path in CGROUP_ROOT.iterdir() if path.is_dir()] + [CGROUP_ROOT]


def _remove_groups(path: str) -> None:
    """What runc may leave of a deleted container's cgroups (an empty folder in a
    hierarchy it did not clean up)."""
    for hierarchy in _hierarchies():
        with contextlib.suppress(OSError):
            (hierarchy / path).rmdir()


def _remove_empty_parents(key: str) -> None:
    """The folders runc made for this data dir's cgroups, and its mount points' folder,
    once no sandbox is left in them."""
    run = rootfs.RUN_DIR / key
    for folder in (*(h / f"wakeproxy-{key}" for h in _hierarchies()), run / "runc", run):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _memory_group(path: str) -> Path:
    if (CGROUP_ROOT / "memory").is_dir():
        return CGROUP_ROOT / "memory" / path
    return CGROUP_ROOT / path


def oom_kills(group: Path) -> int:
    """Processes of a memory cgroup the kernel killed for lack of memory: `oom_kill` in
    v2's memory.events or v1's memory.oom_control; 0 when neither says."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            text = (group / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return 0


def _become_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _provision(home: Path, ids: oci.IdRange) -> None:
    """A new home gets the files a new account gets; what this process wrote there (or an
    unisolated platform did, before) becomes `user`'s."""
    userland.provision_home(home)
    owner = ids.host(rootfs.USER_ID)
    for folder, dirs, files in os.walk(home):
        for path in (folder, *(os.path.join(folder, name) for name in (*dirs, *files))):
            if not ids.base <= os.lstat(path).st_uid < ids.base + ids.size:
                os.lchown(path, owner, owner)


def _resolv_conf(spec: SandboxSpec, stack: NetStack | None) -> Path | None:
    """A resolv.conf for the sandbox when the host's names resolvers on its loopback (see
    `netstack.DNS_FORWARD`), written to its folder; else None."""
    path = spec.root / "resolv.conf"
    path.unlink(missing_ok=True)
    if not spec.allow_internet or stack is None:
        return None
    try:
        text = netstack.sandbox_resolv_conf(Path("/etc/resolv.conf").read_text(), stack.name)
    except OSError:
        return None
    if text is None:
        return None
    path.write_text(text)
    return path


def _failure(what: str, spec: SandboxSpec) -> str:
    output = launch.log_tail(spec.root / "agent.log", 0)
    return f"the sandbox agent {what}; its output:\n{output or '(none)'}"


def open_files_limit() -> int:
    """What a sandbox may keep open: this process's hard limit, at most 65536 (runc may
    not raise it)."""
    return min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
