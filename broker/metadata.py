"""The journal of durable metadata: when the definitions document is saved, and
what happens when it cannot be.

Theory of operation
-------------------
Users, vhosts, permissions and durable exchanges, queues and bindings are kept
as one document (RabbitMQ's definitions shape) replaced atomically on disk by
:func:`storage.meta.save`.  Engine code calls :meth:`MetadataJournal.changed`
after every durable change.  Whoever answers the client commits first:

- a connection commits after handling a batch of input and before its output
  is sent, so a Declare-Ok / Bind-Ok / Delete-Ok only goes out once the change
  is on disk;
- the management API commits after each request, before its answer;
- changes made by timers (queue expiry, auto-delete, exclusive queues of a
  closed connection) are saved on the next loop turn.

A save that fails raises :class:`MetadataSaveError` to the committer, which
fails its operation (the connection is closed with 541 INTERNAL_ERROR, the HTTP
request answered 500), and raises the ``metadata`` alarm that the health
checks, the overview and the metrics show.  The in-memory state keeps the
change; the save is retried every few seconds and at every later change, and
the alarm clears on the first save that succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from storage import meta
from storage.fileio import OS, FileIO

log = logging.getLogger("broker.metadata")

RETRY_INTERVAL = 2.0


class MetadataSaveError(Exception):
    """The definitions document could not be written to disk."""


class MetadataJournal:
    """Saves the durable definitions of one broker (nothing without a data dir)."""

    def __init__(self, data_dir: str | None, snapshot: Callable[[], dict], io: FileIO = OS) -> None:
        self.data_dir = data_dir
        self.io = io
        self.snapshot = snapshot
        self.dirty = False
        self.changes = 0  # counts changed() calls: a committer compares it before and after its work
        self.failure: str | None = None  # the last save's error while the alarm is up
        self.failed_since = 0.0
        self.saves = 0
        self.save_failures = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    @property
    def alarmed(self) -> bool:
        return self.failure is not None

    def changed(self) -> None:
        """Durable metadata changed: save it before the answer, or on the next turn."""
        self.dirty = True
        self.changes += 1
        if not self._scheduled and self.loop is not None:
            self._scheduled = True
            self.loop.call_soon(self._save_soon)

    def commit(self) -> None:
        """Save now if anything changed; raise :class:`MetadataSaveError` if that fails."""
        if self.dirty:
            self._save()

    def _save_soon(self) -> None:
        self._scheduled = False
        if self.dirty:
            try:
                self._save()
            except MetadataSaveError:
                pass  # logged, alarmed and retried by _save

    def _save(self) -> None:
        self.dirty = False
        if self.data_dir is None:
            return
        try:
            meta.save(self.data_dir, self.snapshot(), self.io)
        except Exception as exc:  # disk full, read-only, I/O error, a value that cannot be encoded
            self.dirty = True
            self.save_failures += 1
            reason = f"{type(exc).__name__}: {exc}"
            if self.failure is None:
                self.failed_since = time.time()
                log.error("metadata alarm set: durable metadata cannot be saved (%s); operations that "
                          "change it fail until a save succeeds", reason)
            self.failure = reason
            self._arm_retry()
            raise MetadataSaveError(f"durable metadata could not be saved: {reason}") from None
        self.saves += 1
        if self.failure is not None:
            log.warning("metadata alarm cleared: durable metadata saved again")
            self.failure = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _arm_retry(self) -> None:
        if self._retry is None and self.loop is not None:
            self._retry = self.loop.call_later(RETRY_INTERVAL, self._retry_save)

    def _retry_save(self) -> None:
        self._retry = None
        self.dirty = True
        self._save_soon()

    def close(self) -> None:
        """Last save at stop (errors are logged, not raised)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        try:
            self.commit()
        except MetadataSaveError as exc:
            log.error("at stop: %s", exc)
