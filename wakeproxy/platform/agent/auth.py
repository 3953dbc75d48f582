"""The access token of a `secure` sandbox, checked the way envd checks it.

With a token set, every request must carry it in `X-Access-Token`, except:

* `GET /health`, so the platform can tell that the agent is up without knowing it;
* `/files`, which also accepts a *signed URL* instead: the SDKs' `download_url()` and
  `upload_url()` put `signature=v1_<base64(sha256("<path>:<read|write>:<user>:<token>
  [:<expiration>]"))>` (and `signature_expiration`, epoch seconds) in the query, so a
  browser can fetch a file without the token. A token that *is* sent must match.

Comparisons are constant-time. Pure: the caller passes in the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

TOKEN_HEADER = "X-Access-Token"

UNAUTHORIZED = (
    "unauthorized access, please provide a valid access token or method signing if supported"
)


def same_secret(expected: str, given: str | None) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def sign(path: str, operation: str, username: str, token: str, expiration: int | None) -> str:
    parts = [path, operation, username, token]
    if expiration is not None:
        parts.append(str(expiration))
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return "v1_" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class FileGrant:
    """What a `/files` request presents instead of (or besides) the token header."""

    path: str
    operation: str
    """`read` or `write`."""
    username: str | None
    signature: str | None
    expiration: str | None


def check_files_access(token: str, header: str | None, grant: FileGrant, now: float) -> str | None:
    """None when the request may proceed, else the reason it may not (a 401)."""
    if header is not None and header != "":
        return (
            None
            if same_secret(token, header)
            else "access token present in header but does not match"
        )
    if grant.signature is None:
        return "missing signature query parameter"
    expiration: int | None = None
    if grant.expiration is not None:
        try:
            expiration = int(grant.expiration)
        except ValueError:
            return "invalid signature expiration"
    expected = sign(grant.path, grant.operation, grant.username or "", token, expiration)
    if not same_secret(expected, grant.signature):
        return "invalid signature"
    if expiration is not None and expiration < now:
        return "signature is already expired"
    return None
