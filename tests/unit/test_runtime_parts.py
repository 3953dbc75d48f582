"""The runtimes' pure parts: /proc parsing, command lines, environment, DNS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from wakeproxy.platform.runtime import cgroups, launch, netstack, procfs, sandbox_init, userland
from wakeproxy.platform.runtime.capabilities import Capabilities
from wakeproxy.platform.runtime.cgroups import Hierarchy
from wakeproxy.platform.runtime.health import status_ok
from wakeproxy.platform.runtime.netstack import NetStack

# -- /proc ----------------------------------------------------------------------------------


def test_stat_fields_are_counted_from_the_last_parenthesis() -> None:
    fields = " ".join(["S", "7"] + ["0"] * 17 + ["123456"] + ["0"] * 30)
    stat = procfs.parse_stat(f"42 (a) b (c)) {fields}")
    assert stat == procfs.ProcStat(pid=42, ppid=7, state="S", start_time=123456)
    assert not stat.dead
    assert procfs.parse_stat(f"1 (x) {fields.replace('S', 'Z', 1)}").dead


def test_descendants_walk_the_whole_tree_but_not_the_root() -> None:
    def stat(pid: int, ppid: int) -> procfs.ProcStat:
        return procfs.ProcStat(pid, ppid, "S", 0)

    table = {s.pid: s for s in [stat(1, 0), stat(10, 1), stat(11, 10), stat(12, 11), stat(20, 1)]}
    assert procfs.descendants(10, table) == [11, 12]
    assert procfs.descendants(1, table) == [10, 20, 11, 12]
    assert procfs.descendants(12, table) == []


def test_environ_is_split_on_nul_and_the_first_equals_sign() -> None:
    data = b"A=1\0B=x=y\0EMPTY=\0junk\0"
    assert procfs.parse_environ(data) == {"A": "1", "B": "x=y", "EMPTY": ""}


MOUNTINFO = """\
25 1 0:23 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,freezer rw master:1 - cgroup cgroup rw,cpu,freezer
31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 1 0:28 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
"""

CGROUP = """\
12:cpu,freezer:/user.slice
1:name=systemd:/user.slice/session-1.scope
0::/user.slice/session-1.scope
"""


def test_mountinfo_gives_mount_points_types_and_options() -> None:
    mounts = procfs.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][-1] == "/mnt/with space"
    assert mounts[1].fs_type == "cgroup"
    assert "freezer" in mounts[1].super_options


def test_cgroup_membership_keys_each_controller_and_v2_by_empty_string() -> None:
    membership = procfs.parse_cgroup_membership(CGROUP)
    assert membership["freezer"] == membership["cpu"] == "/user.slice"
    assert membership["name=systemd"] == "/user.slice/session-1.scope"
    assert membership[""] == "/user.slice/session-1.scope"


def test_cgroup_candidates_prefer_the_v1_freezer_and_sit_below_our_own_group() -> None:
    found = cgroups.candidates(MOUNTINFO, CGROUP, "wakeproxy-k")
    assert found == [
        Hierarchy("cgroup1", Path("/sys/fs/cgroup/cpu,freezer/user.slice/wakeproxy-k")),
        Hierarchy("cgroup2", Path("/sys/fs/cgroup/unified/user.slice/session-1.scope/wakeproxy-k")),
    ]
    assert found[0].group("sbx") == found[0].base / "sbx"


def test_without_freezer_membership_only_v2_is_a_candidate() -> None:
    found = cgroups.candidates(MOUNTINFO, "0::/\n", "w")
    assert found == [Hierarchy("cgroup2", Path("/sys/fs/cgroup/unified/w"))]


# -- command lines ---------------------------------------------------------------------------


def test_the_root_is_layered_pdeathsig_then_cgroup_then_init() -> None:
    group = Path("/sys/fs/cgroup/freezer/w/sbx")
    argv = launch.root_argv(group=group, pdeathsig=True)
    # TERM, not KILL: the init ends its tree before it goes (see sandbox_init).
    assert argv[:4] == ["setpriv", "--pdeathsig", "TERM", "--"]
    assert argv[4:6] == ["sh", "-c"]
    assert argv[7] == str(group / "cgroup.procs")
    assert argv[-2:] == ["-I", str(launch.INIT_SCRIPT)]


def test_a_root_without_cgroup_or_pdeathsig_is_just_the_init() -> None:
    argv = launch.root_argv(group=None, pdeathsig=False)
    assert argv[1:] == ["-I", str(launch.INIT_SCRIPT)]


def test_the_cgroup_is_joined_by_a_shell_that_then_execs() -> None:
    argv = cgroups.join_argv(Path("/cg/x"), ["prog", "arg"])
    assert argv == ["sh", "-c", 'echo $$ > "$0" && exec "$@"', "/cg/x/cgroup.procs", "prog", "arg"]


def test_agent_arguments() -> None:
    assert launch.agent_argv(["agent"], 49983, "/home/user") == [
        "agent",
        "--port",
        "49983",
        "--home",
        "/home/user",
    ]


def test_init_config_carries_every_setting_the_init_reads() -> None:
    config = launch.InitConfig(
        home="/data/s/home",
        shim_dir="/data/.bin",
        shims={"python": "/usr/bin/python3"},
        env={"HOME": "/data/s/home"},
        argv=["agent"],
    )
    document = json.loads(config.to_json())
    init_source = Path(sandbox_init.__file__).read_text()
    for key in document:
        assert f'config["{key}"]' in init_source, key
    assert document["shims"] == {"python": "/usr/bin/python3"}


# -- network stacks --------------------------------------------------------------------------

NO_FORWARDING = ["-t", "none", "-u", "none", "-T", "none", "-U", "none"]


def test_pasta_forwards_no_ports_and_maps_no_gateway() -> None:
    argv = NetStack("pasta", "/usr/bin/pasta").argv(7, None, as_root=True, dns_forward=False)
    assert argv[0] == "/usr/bin/pasta"
    text = " ".join(argv)
    assert " ".join(NO_FORWARDING) in text
    assert "--no-map-gw" in argv
    assert "--foreground" in argv
    assert argv[argv.index("--runas") + 1] == "0:0"
    assert argv[-2:] == ["--netns", "/proc/self/fd/7"]
    assert "--dns-forward" not in argv


def test_unprivileged_pasta_joins_the_user_namespace_and_may_forward_dns() -> None:
    argv = NetStack("pasta", "pasta").argv(7, 8, as_root=False, dns_forward=True)
    assert "--runas" not in argv
    assert argv[argv.index("--userns") + 1] == "/proc/self/fd/8"
    assert argv[argv.index("--dns-forward") + 1] == netstack.DNS_FORWARD["pasta"]


def test_slirp4netns_is_given_the_namespace_as_a_path() -> None:
    argv = NetStack("slirp4netns", "slirp4netns").argv(7, 8, as_root=False, dns_forward=True)
    assert "--disable-host-loopback" in argv
    assert "--userns-path=/proc/self/fd/8" in argv
    assert argv[-3:] == ["--netns-type=path", "/proc/self/fd/7", "tap0"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("nameserver 10.0.0.2\n", None),
        ("nameserver 127.0.0.53\nnameserver 10.0.0.2\n", None),
        ("# nothing\n", None),
        (
            "nameserver 127.0.0.53\nsearch lan\noptions edns0 trust-ad\n",
            "nameserver 169.254.1.53\nsearch lan\noptions edns0 trust-ad\n",
        ),
        ("nameserver ::1\n", "nameserver 169.254.1.53\n"),
    ],
)
def test_a_sandbox_gets_its_own_resolv_conf_only_for_loopback_resolvers(
    host: str, expected: str | None
) -> None:
    assert netstack.sandbox_resolv_conf(host, "pasta") == expected


def test_slirp4netns_answers_dns_at_its_fixed_address() -> None:
    assert netstack.sandbox_resolv_conf("nameserver 127.0.0.1\n", "slirp4netns") == (
        "nameserver 10.0.2.3\n"
    )


# -- userland --------------------------------------------------------------------------------


def test_search_path_drops_virtualenvs_relative_and_repeated_folders() -> None:
    folders = userland.search_path(
        "/venv/bin:/usr/bin:relative::/opt/tools:/usr/bin", is_venv=lambda f: f == "/venv/bin"
    )
    assert folders[:2] == ["/usr/bin", "/opt/tools"]
    assert folders[2:] == [f for f in userland.SYSTEM_PATH if f != "/usr/bin"]


def _exe(present: set[str]) -> Callable[[str, str], bool]:
    return lambda folder, name: f"{folder}/{name}" in present


def test_python_and_pip_are_shimmed_only_when_missing() -> None:
    folders = ["/a", "/b"]
    assert userland.shims(folders, _exe({"/b/python3", "/a/pip3"})) == {
        "python": "/b/python3",
        "pip": "/a/pip3",
    }
    assert userland.shims(folders, _exe({"/a/python", "/b/python3", "/b/pip"})) == {}
    assert userland.shims(folders, _exe(set())) == {}


def test_sandbox_env_has_home_path_and_pip_to_home_and_nothing_secret() -> None:
    env = userland.sandbox_env(
        home="/home/user",
        folders=["/usr/bin", "/bin"],
        shim_dir="/data/.bin",
        user="root",
        host_env={"LANG": "de_DE.UTF-8", "AWS_SECRET_ACCESS_KEY": "x", "VIRTUAL_ENV": "/v"},
        envs={"FOO": "bar", "LANG": "C"},
    )
    assert env["HOME"] == env["PWD"] == "/home/user"
    assert env["PATH"] == "/home/user/.local/bin:/data/.bin:/usr/bin:/bin"
    assert env["WAKEPROXY_PATH"] == env["PATH"]  # for login shells; see provision_home
    assert env["PIP_USER"] == "1"
    assert env["FOO"] == "bar"
    assert env["LANG"] == "C"  # the sandbox's own variables win
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "VIRTUAL_ENV" not in env


# -- small things ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"HTTP/1.1 204 No Content\r\n", True),
        (b"HTTP/1.0 200 OK\r\n", True),
        (b"HTTP/1.1 401 Unauthorized\r\n", False),
        (b"HTTP/1.1 502\r\n", False),
        (b"", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
    ],
)
def test_health_status_line(line: bytes, ok: bool) -> None:
    assert status_ok(line) is ok


def _capabilities(**changes: object) -> Capabilities:
    fields: dict[str, object] = {
        "hierarchy": Hierarchy("cgroup1", Path("/cg")),
        "no_cgroup_reason": "",
        "pdeathsig": True,
    }
    fields.update(changes)
    return Capabilities(**fields)  # type: ignore[arg-type]


def test_warnings_say_what_is_missing() -> None:
    (warning,) = _capabilities().warnings()
    assert "not isolated" in warning
    signals = _capabilities(hierarchy=None, no_cgroup_reason="read-only")
    assert "SIGSTOP" in " ".join(signals.warnings())
    assert "read-only" in " ".join(signals.warnings())
    orphans = _capabilities(pdeathsig=False)
    assert "setpriv" in " ".join(orphans.warnings())


def test_a_new_home_gets_skel_files_and_a_profile_that_restores_path(tmp_path: Path) -> None:
    skel, home = tmp_path / "skel", tmp_path / "home"
    skel.mkdir()
    home.mkdir()
    (skel / ".bashrc").write_text("# bashrc\n")
    (skel / ".profile").write_text("# usual profile\n")
    userland.provision_home(home, skel)
    assert (home / ".bashrc").read_text() == "# bashrc\n"
    profile = (home / ".profile").read_text()
    assert profile.index('PATH="$WAKEPROXY_PATH"') < profile.index("# usual profile")
    (home / ".profile").write_text("# the user's own\n")
    userland.provision_home(home, skel)  # a home with a login file is left alone
    assert (home / ".profile").read_text() == "# the user's own\n"


def test_without_skel_the_profile_still_reads_bashrc() -> None:
    assert '. "$HOME/.bashrc"' in userland.profile_text(None)
