"""Signed file URLs on the base host: parsing, E2B's signature scheme, the lookup."""

from __future__ import annotations

import urllib.parse

import pytest
from e2b.sandbox.signature import get_signature

from wakeproxy.backends.base import AGENT_PORT, SignedFile
from wakeproxy.errors import BadSignature
from wakeproxy.proxy.signed import signed_file, signed_target
from wakeproxy.routing import Target

TOKEN = "token-of-sandbox-b"


class Tokens:
    """The lookup as the embedded platform does it, over a fixed set of tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def sandbox_for_signed_file(self, grant: SignedFile) -> str | None:
        return next((sid for sid, tok in self.tokens.items() if grant.signed_with(tok)), None)


LOOKUP = Tokens({"a": "token-of-sandbox-a", "b": TOKEN})


def _url(path: str, operation: str, user: str | None, expiration: int | None) -> str:
    # The SDK's own signing function, so the scheme is checked against E2B's code, and its
    # encoding of the query (a "+" in a signature travels as %2B).
    signature = get_signature(path, operation, user, TOKEN, expiration)  # type: ignore[arg-type]
    query = {"path": path, "signature": signature["signature"]}
    if user:
        query["username"] = user
    if signature["expiration"] is not None:
        query["signature_expiration"] = str(signature["expiration"])
    return "/files?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def test_a_download_url_names_the_sandbox_whose_token_signed_it() -> None:
    grant = signed_file("GET", _url("/home/user/a b.txt", "read", None, None))
    assert grant is not None
    assert grant.operation == "read"
    assert grant.path == "/home/user/a b.txt"
    assert signed_target(LOOKUP, grant, now=0) == Target("b", AGENT_PORT)


def test_an_upload_url_with_user_and_expiration_is_a_write() -> None:
    grant = signed_file("POST", _url("x.txt", "write", "root", 60))
    assert grant is not None
    assert grant.operation == "write"
    assert grant.username == "root"
    assert signed_target(LOOKUP, grant, now=0) == Target("b", AGENT_PORT)


def test_a_url_signed_for_reading_does_not_allow_writing() -> None:
    grant = signed_file("POST", _url("x.txt", "read", None, None))
    assert grant is not None
    with pytest.raises(BadSignature) as raised:
        signed_target(LOOKUP, grant, now=0)
    assert raised.value.status == 401


def test_an_expired_or_tampered_signature_is_401() -> None:
    expired = signed_file("GET", _url("x.txt", "read", None, -10))
    assert expired is not None
    with pytest.raises(BadSignature, match="expired"):
        signed_target(LOOKUP, expired, now=10**12)
    tampered = signed_file("GET", _url("x.txt", "read", None, None).replace("path=x", "path=y"))
    assert tampered is not None
    with pytest.raises(BadSignature, match="invalid signature"):
        signed_target(LOOKUP, tampered, now=0)
    garbled = SignedFile("x", "read", "", "v1_x", "soon")
    with pytest.raises(BadSignature, match="expiration"):
        signed_target(LOOKUP, garbled, now=0)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/files?path=x"),  # no signature: the E2B headers are missing, a 400
        ("GET", "/filesystem?signature=v1_x"),
        ("PUT", "/files?signature=v1_x"),
        ("GET", "/files"),
    ],
)
def test_other_requests_are_no_signed_file_urls(method: str, target: str) -> None:
    assert signed_file(method, target) is None


def test_a_signature_with_plus_and_slash_survives_query_encoding() -> None:
    signature = "v1_2xAiS4LpROO/4Cm4f6rVr04k12iJI4Gnf6kYgvgNq+I"  # of expiration 15
    assert SignedFile("x.txt", "read", "", signature, "15").signed_with(TOKEN)
    query = urllib.parse.urlencode(
        {"path": "x.txt", "signature": signature, "signature_expiration": "15"},
        quote_via=urllib.parse.quote,
    )
    grant = signed_file("GET", f"/files?{query}")
    assert grant is not None
    assert signed_target(LOOKUP, grant, now=0) == Target("b", AGENT_PORT)
