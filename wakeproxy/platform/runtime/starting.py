"""The steps of starting a sandbox, up to (not including) its agent's first /health.

launch          create its cgroup, spawn the root with the init's settings
find_init       (namespaces) wait for PID 1 and open its network namespace
attach_network  (namespaces, internet allowed) start pasta or slirp4netns
"""

from __future__ import annotations

import logging
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from wakeproxy.backends.base import AGENT_PORT
from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.contracts import RuntimeInfo, SandboxSpec
from wakeproxy.platform.runtime import cgroups, launch, netstack, procfs, sockets, userland
from wakeproxy.platform.runtime.capabilities import Capabilities
from wakeproxy.platform.runtime.launch import Child
from wakeproxy.platform.runtime.polling import poll_until
from wakeproxy.platform.runtime.sandbox import Sandbox, group_for

log = logging.getLogger(__name__)

NETSTACK_TIMEOUT = 5.0


class SandboxStartError(WakeproxyError):
    """The sandbox's agent exited or did not become healthy; the message holds its output."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What every start of one runtime shares."""

    data_dir: Path
    agent_command: Sequence[str]
    marker_prefix: str
    """`<runtime key>/`; a sandbox's marker is this plus its id."""
    die_with_platform: bool
    start_timeout: float

    def marker(self, sandbox_id: str) -> str:
        return f"{self.marker_prefix}{sandbox_id}"

    def root_env(self, sandbox_id: str) -> dict[str, str]:
        """The environment of the root and the network stack (not of the sandbox)."""
        path = os.pathsep.join(userland.search_path(os.environ.get("PATH", "")))
        return {"PATH": path, launch.MARKER: self.marker(sandbox_id)}


def launch_root(spec: SandboxSpec, caps: Capabilities, settings: Settings) -> Sandbox:
    """Create the sandbox's cgroup and spawn its root; returns at once."""
    isolated = caps.isolation.namespaces
    group = (
        None if caps.hierarchy is None else cgroups.create_group(caps.hierarchy, spec.sandbox_id)
    )
    home = launch.HOME_INSIDE if isolated else str(spec.root / "home")
    port = AGENT_PORT if isolated else sockets.free_port()
    config = init_config(spec, caps, settings, home, port)
    argv = launch.root_argv(
        isolated=isolated,
        user_namespace=caps.isolation.user_namespace,
        group=group,
        pdeathsig=caps.pdeathsig and settings.die_with_platform,
    )
    userland.provision_home(spec.root / "home")
    log_path = spec.root / "agent.log"
    offset = launch.log_size(log_path)
    try:
        env = settings.root_env(spec.sandbox_id)
        root = launch.spawn(argv, env, log=log_path, payload=config.to_json())
    except BaseException:
        if group is not None:
            cgroups.remove_group(group)
        raise
    info = RuntimeInfo(
        pid=root.pid,
        isolated_network=isolated,
        agent_port=port,
        warnings=caps.warnings(allow_internet=spec.allow_internet),
        start_time=root.start_time,
        init_pid=root.pid,
        init_start_time=root.start_time,
        home=home,
        cgroup="" if group is None else str(group),
        freezer=caps.hierarchy.kind if caps.hierarchy is not None else "signal",
        ends_with_platform=settings.die_with_platform,
        isolation="namespaces" if isolated else "none",
    )
    sandbox = Sandbox(info, root, group_for(info, root), broker=config.broker)
    sandbox.log, sandbox.log_offset = log_path, offset
    return sandbox


def init_config(
    spec: SandboxSpec, caps: Capabilities, settings: Settings, home: str, port: int
) -> launch.InitConfig:
    isolated = caps.isolation.namespaces
    folders = userland.search_path(os.environ.get("PATH", ""))
    shims = userland.shims(folders)
    shim_dir = str(settings.data_dir / ".bin")
    keep = [Path(sys.executable), launch.INIT_SCRIPT, Path(launch.HOME_INSIDE)]
    keep += [Path(arg) for arg in settings.agent_command if arg.startswith("/")]
    env = userland.sandbox_env(
        home=home,
        folders=folders,
        shim_dir=shim_dir if shims else None,
        user="root" if isolated else _user_name(),
        host_env=os.environ,
        envs=spec.envs,
    )
    if spec.agent_token is not None:
        env[launch.TOKEN_ENV] = spec.agent_token
    return launch.InitConfig(
        isolated=isolated,
        home=home,
        home_source=spec.root / "home",
        hide=userland.folders_to_hide(settings.data_dir, keep) if isolated else [],
        shim_dir=shim_dir,
        shims=shims,
        broker=spec.root / "broker.sock" if isolated else None,
        resolv_conf=_resolv_conf(spec, caps),
        env=env,
        argv=launch.agent_argv(settings.agent_command, port, home),
    )


async def find_init(sandbox: Sandbox, timeout: float) -> None:  # noqa: ASYNC109
    """Wait for the root to fork PID 1, then hold on to its network namespace."""
    children: list[int] = []

    def forked() -> bool:
        children[:] = procfs.children_of(sandbox.root.pid)
        return bool(children) or not sandbox.root.alive()

    await poll_until(forked, timeout)
    if not children:
        raise SandboxStartError(failure("did not start", sandbox))
    init = Child.of(children[0])
    sandbox.netns = os.open(f"/proc/{init.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    sandbox.info = replace(sandbox.info, init_pid=init.pid, init_start_time=init.start_time)
    sandbox.group = group_for(sandbox.info, sandbox.root)


async def attach_network(
    sandbox: Sandbox, spec: SandboxSpec, caps: Capabilities, settings: Settings
) -> None:
    """Start the network stack and wait (briefly) until it has configured a route; a stack
    that fails is a warning on the sandbox, not a failed start."""
    stack = caps.netstack
    if sandbox.netns is None or not spec.allow_internet or stack is None:
        return
    offset = launch.log_size(sandbox.log)
    sandbox.stack = _spawn_stack(stack, sandbox.netns, sandbox, spec, caps, settings)
    sandbox.info = replace(
        sandbox.info,
        netstack=stack.name,
        netstack_pid=sandbox.stack.pid,
        netstack_start_time=sandbox.stack.start_time,
    )
    init, running = sandbox.info.init_pid, sandbox.stack

    def settled() -> bool:
        return netstack.has_default_route(init) or not running.alive()

    await poll_until(settled, NETSTACK_TIMEOUT)
    if not netstack.has_default_route(init):
        # pasta reports every message it could not send to syslog; those say nothing here.
        lines = launch.log_tail(sandbox.log, offset).splitlines()
        output = "; ".join(line for line in lines if "to syslog" not in line) or "no output"
        warning = f"outbound network did not come up ({stack.name}: {output})"
        log.warning("sandbox %s: %s", spec.sandbox_id, warning)
        sandbox.info = replace(sandbox.info, warnings=(*sandbox.info.warnings, warning))


def _spawn_stack(
    stack: netstack.NetStack,
    netns: int,
    sandbox: Sandbox,
    spec: SandboxSpec,
    caps: Capabilities,
    settings: Settings,
) -> Child:
    as_root = os.geteuid() == 0
    userns = None
    if caps.isolation.user_namespace and not as_root:
        userns = os.open(f"/proc/{sandbox.info.init_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        dns = sandbox_resolv_conf_path(spec).exists()
        argv = stack.argv(netns, userns, as_root=as_root, dns_forward=dns)
        group = Path(sandbox.info.cgroup) if sandbox.info.cgroup else None
        argv = launch.wrap(
            argv, group=group, pdeathsig=caps.pdeathsig and settings.die_with_platform
        )
        fds = [netns] + ([] if userns is None else [userns])
        return launch.spawn(argv, settings.root_env(spec.sandbox_id), log=sandbox.log, pass_fds=fds)
    finally:
        if userns is not None:
            os.close(userns)


def sandbox_resolv_conf_path(spec: SandboxSpec) -> Path:
    return spec.root / "resolv.conf"


def _resolv_conf(spec: SandboxSpec, caps: Capabilities) -> Path | None:
    """A resolv.conf for the sandbox, written to its folder, when the host's would not
    work inside its network namespace (see `netstack.DNS_FORWARD`); else none (and any
    from an earlier start is removed)."""
    path = sandbox_resolv_conf_path(spec)
    path.unlink(missing_ok=True)
    if not (caps.isolation.namespaces and spec.allow_internet and caps.netstack):
        return None
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        return None
    text = netstack.sandbox_resolv_conf(host, caps.netstack.name)
    if text is None:
        return None
    path.write_text(text)
    return path


def failure(what: str, sandbox: Sandbox) -> str:
    output = launch.log_tail(sandbox.log, sandbox.log_offset)
    return f"the sandbox agent {what}; its output:\n{output or '(none)'}"


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
