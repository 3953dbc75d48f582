"""File metadata as `user.e2b.*` extended attributes (envd 0.6.2+)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wakeproxy.platform.agent import entries, metadata
from wakeproxy.platform.agent.errors import FilesError
from wakeproxy.platform.agent.messages import entry_info


def test_headers_give_lower_cased_keys_and_ignore_other_headers() -> None:
    headers = [("X-Metadata-Author", "mish"), ("x-metadata-purpose", "up load"), ("Host", "x")]
    assert metadata.from_headers(headers) == {"author": "mish", "purpose": "up load"}


@pytest.mark.parametrize(
    "header", [("X-Metadata-", "v"), ("X-Metadata-a b", "v"), ("X-Metadata-k", "caf\u00e9")]
)
def test_a_bad_key_or_value_is_a_400(header: tuple[str, str]) -> None:
    with pytest.raises(FilesError) as raised:
        metadata.from_headers([header])
    assert raised.value.status == 400


def test_replace_sets_reads_and_clears_only_its_namespace(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("x")
    try:
        os.setxattr(path, "user.other", b"kept")
    except OSError as exc:
        pytest.skip(f"this filesystem keeps no user xattrs: {exc}")
    metadata.replace(str(path), {"author": "mish"})
    assert metadata.read(str(path)) == {"author": "mish"}
    assert entry_info(entries.entry(str(path)))["metadata"] == {"author": "mish"}
    metadata.replace(str(path), {})
    assert metadata.read(str(path)) == {}
    assert "metadata" not in entry_info(entries.entry(str(path)))
    assert os.getxattr(path, "user.other") == b"kept"
