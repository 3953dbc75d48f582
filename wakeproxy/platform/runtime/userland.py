"""What a sandbox sees of the host's userland: its PATH, environment and shims.

Sandboxes use the host's programs (python3, python, pip, bash: the `base` template).
Pure functions of their inputs, so they are unit-tested without a sandbox.

- PATH: the sandbox's `~/.local/bin`, a shim folder when needed, then the host's PATH
  without virtualenv `bin` folders (a virtualenv on the platform's PATH is the platform's
  own Python, not the host's userland), then the usual system folders.
- Shims: `python` -> python3 (and `pip` -> pip3) when the host has only the versioned name.
- pip installs into the sandbox's home (`PIP_USER=1`), never into the host's Python; with
  that, installing into an "externally managed" (PEP 668) Python is safe, so
  `PIP_BREAK_SYSTEM_PACKAGES=1` lets `pip install flask` work on Debian's python3 too.
- Nothing else of the platform's environment leaks in (it may hold secrets), except the
  locale and time zone.
- Login shells: E2B's SDKs run commands with `bash -l -c`, and /etc/profile then resets
  PATH to the system folders. A new home is provisioned like a new account's (from
  /etc/skel), with a `.profile` that first restores the sandbox's PATH from
  `WAKEPROXY_PATH`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PASSED_THROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
SHIMMED = {"python": "python3", "pip": "pip3"}


def is_virtualenv_bin(folder: str) -> bool:
    return os.path.isfile(os.path.join(os.path.dirname(folder.rstrip("/")), "pyvenv.cfg"))


def search_path(host_path: str, is_venv: Callable[[str], bool] = is_virtualenv_bin) -> list[str]:
    """The host's PATH folders a sandbox may use, then the system ones, each once."""
    folders: list[str] = []
    for folder in [*host_path.split(os.pathsep), *SYSTEM_PATH]:
        if folder.startswith("/") and folder not in folders and not is_venv(folder):
            folders.append(folder)
    return folders


def executable(folder: str, name: str) -> bool:
    path = os.path.join(folder, name)
    return os.path.isfile(path) and os.access(path, os.X_OK)


def which(
    name: str, folders: Iterable[str], is_exe: Callable[[str, str], bool] = executable
) -> str | None:
    for folder in folders:
        if is_exe(folder, name):
            return os.path.join(folder, name)
    return None


def shims(
    folders: Sequence[str], is_exe: Callable[[str, str], bool] = executable
) -> dict[str, str]:
    """{name: target} for each unversioned name the host lacks but whose versioned one
    it has."""
    found = {}
    for name, versioned in SHIMMED.items():
        if which(name, folders, is_exe) is None:
            target = which(versioned, folders, is_exe)
            if target is not None:
                found[name] = target
    return found


def sandbox_env(
    *,
    home: str,
    folders: Sequence[str],
    shim_dir: str | None,
    user: str,
    host_env: Mapping[str, str],
    envs: Mapping[str, str],
) -> dict[str, str]:
    """The environment of the agent (and so of what it runs); `envs` (the sandbox's own
    variables) override everything."""
    path = [f"{home}/.local/bin", *([shim_dir] if shim_dir else []), *folders]
    env = {
        "HOME": home,
        "PWD": home,
        "PATH": os.pathsep.join(path),
        "WAKEPROXY_PATH": os.pathsep.join(path),
        "USER": user,
        "LOGNAME": user,
        "SHELL": which("bash", folders) or "/bin/sh",
        "LANG": "C.UTF-8",
        "PIP_USER": "1",
        "PIP_BREAK_SYSTEM_PACKAGES": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.update({key: host_env[key] for key in PASSED_THROUGH if key in host_env})
    env.update(envs)
    return env


LOGIN_FILES = (".bash_profile", ".bash_login", ".profile")
RESTORE_PATH = """\
# Login shells (`bash -l`) get PATH reset by /etc/profile; the sandbox's own PATH finds
# the host's python3, python, pip and bash.
if [ -n "${WAKEPROXY_PATH:-}" ]; then PATH="$WAKEPROXY_PATH"; export PATH; fi
"""


def profile_text(skel_profile: str | None) -> str:
    """A new home's `.profile`: the PATH restored, then the system's usual one."""
    usual = (
        skel_profile
        or 'if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi\n'
    )
    return f"{RESTORE_PATH}\n{usual}"


def provision_home(home: Path, skel: Path = Path("/etc/skel")) -> None:
    """Give a home that has no login file the files a new account gets."""
    if any((home / name).exists() for name in LOGIN_FILES):
        return
    for name in (".bashrc", ".bash_logout"):
        source = skel / name
        if source.is_file() and not (home / name).exists():
            shutil.copyfile(source, home / name)
    skel_profile = skel / ".profile"
    usual = skel_profile.read_text() if skel_profile.is_file() else None
    (home / ".profile").write_text(profile_text(usual))
