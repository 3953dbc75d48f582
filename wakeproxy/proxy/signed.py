"""Signed file URLs: which sandbox a `/files` request on the base host is for.

The SDKs' `download_url()` and `upload_url()` of a secure sandbox build
``<E2B_SANDBOX_URL>/files?path=…&signature=v1_…[&signature_expiration=…][&username=…]``:
on the base host, with neither the sandbox id nor its port, since on E2B that URL is the
sandbox's own host. The signature is E2B's, ``v1_`` + unpadded base64 of
sha256(``<path>:<read|write>:<user>:<envd access token>[:<expiration>]``), so only the
sandbox whose token made it is named by it: the backend is asked which one that is
(`SignedFileLookup`). The agent inside checks the signature again, as envd does.

Pure, apart from the lookup it is handed.
"""

from __future__ import annotations

import urllib.parse

from wakeproxy.backends.base import AGENT_PORT, SignedFile, SignedFileLookup
from wakeproxy.errors import BadSignature
from wakeproxy.routing import Target

FILES_PATH = "/files"
_OPERATIONS = {"GET": "read", "POST": "write"}


def signed_file(method: str, target: str) -> SignedFile | None:
    """The signed grant a request target carries, or None if it is no signed file URL."""
    operation = _OPERATIONS.get(method)
    path, _, query = target.partition("?")
    if operation is None or path != FILES_PATH or "signature=" not in query:
        return None
    values = urllib.parse.parse_qs(query, keep_blank_values=True)

    def one(name: str) -> str | None:
        found = values.get(name)
        return None if not found else found[0]

    signature = one("signature")
    if signature is None:
        return None
    return SignedFile(
        path=one("path") or "",
        operation=operation,
        username=one("username") or "",
        signature=signature,
        expiration=one("signature_expiration"),
    )


def signed_target(lookup: SignedFileLookup, grant: SignedFile, now: float) -> Target:
    """The agent port of the sandbox that signed `grant`; `BadSignature` (401, as envd
    answers) when none did or the signature has expired, so nothing is woken for it."""
    if grant.expiration is not None:
        try:
            expires = int(grant.expiration)
        except ValueError:
            raise BadSignature("invalid signature expiration") from None
        if expires < now:
            raise BadSignature("signature is already expired")
    sandbox_id = lookup.sandbox_for_signed_file(grant)
    if sandbox_id is None:
        raise BadSignature(
            "invalid signature: no sandbox signed this URL; make a new one with "
            "download_url() or upload_url()"
        )
    return Target(sandbox_id, AGENT_PORT)
