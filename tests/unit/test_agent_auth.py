"""The agent's access token and the signed `/files` URLs the SDKs make."""

from __future__ import annotations

import pytest

from wakeproxy.platform.agent import auth
from wakeproxy.platform.agent.auth import FileGrant

signature = pytest.importorskip("e2b.sandbox.signature")

TOKEN = "secret-token"
NOW = 1_800_000_000.0


def grant(**fields: object) -> FileGrant:
    values: dict[str, object] = {
        "path": "/home/user/a.txt",
        "operation": "read",
        "username": None,
        "signature": None,
        "expiration": None,
    }
    values.update(fields)
    return FileGrant(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", [None, "root"])
@pytest.mark.parametrize("expires_in", [None, 60])
def test_signatures_match_the_sdks(user: str | None, expires_in: int | None) -> None:
    made = signature.get_signature("a.txt", "write", user, TOKEN, expires_in)
    expiration = made["expiration"]
    assert auth.sign("a.txt", "write", user or "", TOKEN, expiration) == made["signature"]


def test_the_right_token_header_is_enough_and_a_wrong_one_is_refused() -> None:
    assert auth.check_files_access(TOKEN, TOKEN, grant(), NOW) is None
    assert auth.check_files_access(TOKEN, "wrong", grant(), NOW) is not None


def test_a_signed_url_needs_no_token() -> None:
    signed = auth.sign("/home/user/a.txt", "read", "", TOKEN, None)
    assert auth.check_files_access(TOKEN, None, grant(signature=signed), NOW) is None


def test_a_signature_is_bound_to_path_operation_and_user() -> None:
    signed = auth.sign("/home/user/a.txt", "read", "", TOKEN, None)
    for other in (
        grant(signature=signed, path="/home/user/b.txt"),
        grant(signature=signed, operation="write"),
        grant(signature=signed, username="root"),
    ):
        assert auth.check_files_access(TOKEN, None, other, NOW) == "invalid signature"


def test_an_expired_signature_is_refused() -> None:
    expiration = int(NOW) - 1
    signed = auth.sign("/home/user/a.txt", "read", "", TOKEN, expiration)
    reason = auth.check_files_access(
        TOKEN, None, grant(signature=signed, expiration=str(expiration)), NOW
    )
    assert reason == "signature is already expired"
    later = int(NOW) + 60
    fresh = auth.sign("/home/user/a.txt", "read", "", TOKEN, later)
    assert auth.check_files_access(
        TOKEN, None, grant(signature=fresh, expiration=str(later)), NOW
    ) is None  # fmt: skip


def test_no_token_and_no_signature_is_refused() -> None:
    assert auth.check_files_access(TOKEN, None, grant(), NOW) == "missing signature query parameter"
    assert auth.check_files_access(TOKEN, "", grant(), NOW) == "missing signature query parameter"


def test_secrets_compare_whole() -> None:
    assert auth.same_secret(TOKEN, TOKEN)
    assert not auth.same_secret(TOKEN, TOKEN[:-1])
    assert not auth.same_secret(TOKEN, None)
