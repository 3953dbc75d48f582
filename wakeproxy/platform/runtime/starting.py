"""Starting a plain-process sandbox, up to (not including) its agent's first /health:
create its cgroup, spawn the root with the init's settings."""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.errors import WakeproxyError
from wakeproxy.platform.contracts import RuntimeInfo, SandboxSpec
from wakeproxy.platform.runtime import cgroups, launch, sockets, userland
from wakeproxy.platform.runtime.capabilities import Capabilities
from wakeproxy.platform.runtime.sandbox import Sandbox, group_for


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
        """The environment of the root (not of the sandbox)."""
        path = os.pathsep.join(userland.search_path(os.environ.get("PATH", "")))
        return {"PATH": path, launch.MARKER: self.marker(sandbox_id)}


def launch_root(spec: SandboxSpec, caps: Capabilities, settings: Settings) -> Sandbox:
    """Create the sandbox's cgroup and spawn its root; returns at once."""
    group = (
        None if caps.hierarchy is None else cgroups.create_group(caps.hierarchy, spec.sandbox_id)
    )
    home = str(spec.root / "home")
    port = sockets.free_port()
    config = init_config(spec, settings, home, port)
    argv = launch.root_argv(group=group, pdeathsig=caps.pdeathsig and settings.die_with_platform)
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
        isolated_network=False,
        agent_port=port,
        warnings=caps.warnings(),
        start_time=root.start_time,
        init_pid=root.pid,
        init_start_time=root.start_time,
        home=home,
        cgroup="" if group is None else str(group),
        freezer=caps.hierarchy.kind if caps.hierarchy is not None else "signal",
        ends_with_platform=settings.die_with_platform,
        isolation="none",
    )
    sandbox = Sandbox(info, root, group_for(info, root))
    sandbox.log, sandbox.log_offset = log_path, offset
    return sandbox


def init_config(spec: SandboxSpec, settings: Settings, home: str, port: int) -> launch.InitConfig:
    folders = userland.search_path(os.environ.get("PATH", ""))
    shims = userland.shims(folders)
    shim_dir = str(settings.data_dir / ".bin")
    env = userland.sandbox_env(
        home=home,
        folders=folders,
        shim_dir=shim_dir if shims else None,
        user=_user_name(),
        host_env=os.environ,
        envs=spec.envs,
    )
    if spec.agent_token is not None:
        env[launch.TOKEN_ENV] = spec.agent_token
    return launch.InitConfig(
        home=home,
        shim_dir=shim_dir,
        shims=shims,
        env=env,
        argv=launch.agent_argv(settings.agent_command, port, home),
    )


def failure(what: str, sandbox: Sandbox) -> str:
    output = launch.log_tail(sandbox.log, sandbox.log_offset)
    return f"the sandbox agent {what}; its output:\n{output or '(none)'}"


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
