"""Directory watches over real inotify: every event is in the kernel's queue once the
system call that made it has returned, so `drain()` needs no waiting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from wakeproxy.platform.agent.errors import RpcError
from wakeproxy.platform.agent.watch import Watch, WatchOptions


def _seen(watch: Watch) -> list[tuple[str, str]]:
    return [
        (str(event["type"]).removeprefix("EVENT_TYPE_"), str(event["name"]))
        for event in watch.drain()
    ]


def test_create_write_chmod_rename_and_remove(tmp_path: Path) -> None:
    with Watch(WatchOptions(str(tmp_path))) as watch:
        (tmp_path / "a.txt").write_text("x")
        os.chmod(tmp_path / "a.txt", 0o600)
        os.rename(tmp_path / "a.txt", tmp_path / "b.txt")
        os.unlink(tmp_path / "b.txt")
        assert _seen(watch) == [
            ("CREATE", "a.txt"),
            ("WRITE", "a.txt"),
            ("CHMOD", "a.txt"),
            ("RENAME", "a.txt"),
            ("CREATE", "b.txt"),
            ("REMOVE", "b.txt"),
        ]
        assert watch.drain() == []


def test_not_recursive_sees_only_its_own_entries(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with Watch(WatchOptions(str(tmp_path))) as watch:
        (tmp_path / "sub" / "deep.txt").write_text("x")
        (tmp_path / "top.txt").write_text("")
        assert _seen(watch) == [("CREATE", "top.txt")]


def test_recursive_follows_existing_and_new_directories(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with Watch(WatchOptions(str(tmp_path), recursive=True)) as watch:
        (tmp_path / "old" / "a.txt").write_text("x")
        assert _seen(watch) == [("CREATE", "old/a.txt"), ("WRITE", "old/a.txt")]
        # Made before the watch of `new` can exist: reported as created all the same.
        (tmp_path / "new" / "deeper").mkdir(parents=True)
        (tmp_path / "new" / "deeper" / "b.txt").write_text("")
        seen = _seen(watch)
        assert seen[0] == ("CREATE", "new")
        assert ("CREATE", "new/deeper/b.txt") in seen
        (tmp_path / "new" / "deeper" / "b.txt").write_text("now watched")
        assert _seen(watch) == [("WRITE", "new/deeper/b.txt")]


def test_entries_are_included_when_asked(tmp_path: Path) -> None:
    with Watch(WatchOptions(str(tmp_path), include_entry=True)) as watch:
        (tmp_path / "a.txt").write_text("x")
        written = watch.drain()
        (tmp_path / "a.txt").unlink()
        removed = watch.drain()
    assert written[0]["entry"]["path"] == str(tmp_path / "a.txt")  # type: ignore[index]
    assert removed == [{"name": "a.txt", "type": "EVENT_TYPE_REMOVE"}]  # nothing to describe


def test_a_missing_directory_is_not_found_and_a_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as raised:
        Watch(WatchOptions(str(tmp_path / "missing")))
    assert raised.value.code == "not_found"
    (tmp_path / "file").write_text("")
    with pytest.raises(RpcError) as raised:
        Watch(WatchOptions(str(tmp_path / "file")))
    assert raised.value.code == "invalid_argument"


async def test_next_waits_for_the_next_event(tmp_path: Path) -> None:
    with Watch(WatchOptions(str(tmp_path))) as watch:
        watch.follow(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(watch.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        (tmp_path / "a.txt").write_text("")
        event = await asyncio.wait_for(waiting, 30)
    assert event == {"name": "a.txt", "type": "EVENT_TYPE_CREATE"}


async def test_a_followed_watch_watches_a_new_directory_before_it_is_asked(
    tmp_path: Path,
) -> None:
    with Watch(WatchOptions(str(tmp_path), recursive=True)) as watch:
        watch.follow(asyncio.get_running_loop())
        (tmp_path / "made").mkdir()
        assert await asyncio.wait_for(watch.next(), 30) == {
            "name": "made",
            "type": "EVENT_TYPE_CREATE",
        }
        (tmp_path / "made" / "f.txt").write_text("x")  # after the loop read the mkdir
        assert _seen(watch) == [("CREATE", "made/f.txt"), ("WRITE", "made/f.txt")]
