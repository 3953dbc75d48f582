"""When a sandbox record cannot be written: what is done, what is refused, what is retried.

Two kinds of writes, so that the records and the sandboxes never disagree in a way a
restarted platform would get wrong:

- write-ahead (`durable=True`): the record says what is about to happen (`pausing`,
  `resuming`, a new timeout) before anything happens. If it cannot be written the step is
  not taken: the caller gets the error (`NoSpace`: 507), the sandbox stays as it was.
- after the fact (`durable=False`): the step happened (`paused`, `running` again, a start
  that finished, activity). The table in memory follows the truth at once; the file keeps
  the write-ahead state, which a restarted platform completes (a `pausing` record is
  paused again, a `resuming` one resumed), and the write is retried until it succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from wakeproxy.platform.control import events
from wakeproxy.platform.control.records import RecordNotWritten, RecordStore, SandboxRecord

log = logging.getLogger(__name__)


class Ledger:
    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._unsaved: set[str] = set()

    @property
    def behind(self) -> bool:
        """Whether some records on disk are older than the sandboxes they describe."""
        return bool(self._unsaved)

    def write(self, record: SandboxRecord, *, durable: bool) -> None:
        """Save `record`; see the module docstring for what a failure means."""
        try:
            self._store.save(record)
        except RecordNotWritten as exc:
            if durable:
                raise
            if record.sandbox_id not in self._unsaved:
                events.logged(
                    "failed", record.sandbox_id, 0.0, level=logging.ERROR, what="record",
                    error=str(exc),
                )  # fmt: skip
            self._unsaved.add(record.sandbox_id)
        else:
            self._unsaved.discard(record.sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        self._unsaved.discard(sandbox_id)

    def retry(self, records: Mapping[str, SandboxRecord]) -> None:
        """Write again the records that could not be written (those still in `records`)."""
        for sandbox_id in list(self._unsaved):
            record = records.get(sandbox_id)
            if record is None:
                self._unsaved.discard(sandbox_id)
                continue
            try:
                self._store.save(record)
            except RecordNotWritten:
                continue
            self._unsaved.discard(sandbox_id)
            log.info("the record of sandbox %s is written again", sandbox_id)
