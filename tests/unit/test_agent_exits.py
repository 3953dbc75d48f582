"""How the agent words exits and file modes: as envd, which takes both from Go."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wakeproxy.platform.agent import entries, exits
from wakeproxy.platform.agent.messages import Exit


def exited(code: int) -> int:
    return code << 8


def signalled(signum: int, core: bool = False) -> int:
    return signum | (0x80 if core else 0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (exited(0), Exit(0, True, "exit status 0", None)),
        (exited(3), Exit(3, True, "exit status 3", "exit status 3")),
        (signalled(9), Exit(-1, False, "signal: killed", "signal: killed")),
        (signalled(15), Exit(-1, False, "signal: terminated", "signal: terminated")),
        (
            signalled(11, core=True),
            Exit(
                -1,
                False,
                "signal: segmentation fault (core dumped)",
                "signal: segmentation fault (core dumped)",
            ),
        ),
        (signalled(40), Exit(-1, False, "signal: signal 40", "signal: signal 40")),
    ],
)
def test_wait_statuses_read_as_go_prints_them(status: int, expected: Exit) -> None:
    assert exits.from_wait_status(status) == expected


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        (stat.S_IFREG | 0o644, "-rw-r--r--"),
        (stat.S_IFDIR | 0o755, "drwxr-xr-x"),
        (stat.S_IFLNK | 0o777, "Lrwxrwxrwx"),
        (stat.S_IFDIR | stat.S_ISVTX | 0o777, "dtrwxrwxrwx"),
        (stat.S_IFREG | stat.S_ISUID | 0o755, "urwxr-xr-x"),
        (stat.S_IFCHR | 0o666, "Dcrw-rw-rw-"),
        (stat.S_IFIFO | 0o600, "prw-------"),
        (stat.S_IFSOCK | 0o700, "Srwx------"),
    ],
)
def test_modes_read_as_gos_file_mode_string(mode: int, text: str) -> None:
    assert entries.go_mode_string(mode) == text


def test_an_entry_describes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"12345")
    path.chmod(0o640)
    entry = entries.entry(str(path))
    assert (entry.name, entry.type, entry.path) == ("f.txt", "FILE_TYPE_FILE", str(path))
    assert (entry.size, entry.mode, entry.permissions) == (5, 0o640, "-rw-r-----")
    assert entry.modified_ns == os.stat(path).st_mtime_ns
    assert not entry.is_symlink


def test_a_symlink_takes_its_targets_type_and_names_the_target(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    entry = entries.entry(str(tmp_path / "link"))
    assert entry.type == "FILE_TYPE_DIRECTORY"
    assert entry.is_symlink
    assert entry.symlink_target == str(tmp_path / "dir")
    assert entry.permissions.startswith("L")


def test_a_dangling_symlink_has_no_type(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert entries.entry(str(tmp_path / "link")).type == "FILE_TYPE_UNSPECIFIED"
