"""Listing sandboxes as `GET /v2/sandboxes` does: filters, order and cursor paging.

Query parameters, as the SDKs send them:
  `state`        `running`, `paused`; comma-separated (Python SDK) or repeated (JS SDK);
                 both when absent
  `metadata`     a query string of percent-encoded pairs, itself one parameter
                 (`user%3Dabc%26app%3Dprod`): every pair must match
  `startedAfter` RFC 3339 time; `template` a template id; `order` `asc` | `desc` by start
                 time (default `desc`, newest first), applied before paging
  `limit`        1 to 100 (default 100); `nextToken` the cursor from the previous page

The cursor is opaque to clients: the position (start time, sandbox id) of the last item
served, so pages stay consistent while sandboxes come and go. It is sent back in the
`x-next-token` response header only when more items follow.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import parse_qsl, unquote

from wakeproxy.platform.api.wire import BadRequest, api_state
from wakeproxy.platform.control.records import SandboxRecord

MAX_LIMIT = 100
_STATES = frozenset({"running", "paused"})


class Query(Protocol):
    def getall(self, key: str, default: list[str], /) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ListQuery:
    states: frozenset[str] = _STATES
    metadata: Mapping[str, str] | None = None
    started_after: float | None = None
    template: str | None = None
    order: Literal["asc", "desc"] = "desc"
    limit: int = MAX_LIMIT
    after: tuple[float, str] | None = None


def parse_query(query: Query) -> ListQuery:
    states = {s.strip() for v in query.getall("state", []) for s in v.split(",") if s.strip()}
    if states - _STATES:
        raise BadRequest(f"state must be running or paused, not {sorted(states - _STATES)}")
    order = _last(query, "order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be asc or desc, not {order!r}")
    return ListQuery(
        states=frozenset(states) or _STATES,
        metadata=parse_metadata(_last(query, "metadata")),
        started_after=_time(_last(query, "startedAfter")),
        template=_last(query, "template"),
        order="asc" if order == "asc" else "desc",
        limit=_limit(_last(query, "limit")),
        after=_cursor(_last(query, "nextToken")),
    )


def parse_metadata(text: str | None) -> dict[str, str] | None:
    """`a=1&b=2` with each key and value percent-encoded once more, as E2B expects."""
    if not text:
        return None
    return {unquote(k): unquote(v) for k, v in parse_qsl(text, keep_blank_values=True)}


def select(records: Iterable[SandboxRecord], query: ListQuery) -> list[SandboxRecord]:
    """The records that match, in the query's order, from its cursor on (all of them)."""
    chosen = [r for r in records if _matches(r, query)]
    descending = query.order == "desc"
    chosen.sort(key=_position, reverse=descending)
    if query.after is not None:
        after = query.after
        chosen = [
            r for r in chosen if (_position(r) < after if descending else _position(r) > after)
        ]
    return chosen


def page(records: Sequence[SandboxRecord], limit: int) -> tuple[list[SandboxRecord], str | None]:
    """The first `limit` of `records`, and the cursor for the rest (None: no more)."""
    served = list(records[:limit])
    if len(records) <= limit or not served:
        return served, None
    last = _position(served[-1])
    token = base64.urlsafe_b64encode(json.dumps([last[0], last[1]]).encode()).decode()
    return served, token


def _matches(record: SandboxRecord, query: ListQuery) -> bool:
    if api_state(record.state) not in query.states:
        return False
    if query.template is not None and record.template_id != query.template:
        return False
    if query.started_after is not None and record.started_at < query.started_after:
        return False
    wanted = query.metadata or {}
    return all(record.metadata.get(k) == v for k, v in wanted.items())


def _position(record: SandboxRecord) -> tuple[float, str]:
    return record.started_at, record.sandbox_id


def _last(query: Query, name: str) -> str | None:
    values = query.getall(name, [])
    return values[-1] if values else None


def _limit(text: str | None) -> int:
    if text is None:
        return MAX_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest(f"limit must be a whole number, not {text!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def _time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"startedAfter must be an RFC 3339 time, not {text!r}") from None


def _cursor(text: str | None) -> tuple[float, str] | None:
    if not text:
        return None
    try:
        started_at, sandbox_id = json.loads(base64.urlsafe_b64decode(text.encode()))
        return float(started_at), str(sandbox_id)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("nextToken is not a token this API handed out") from None
