"""The journal of durable metadata: when the definitions document is saved, and
what happens when it cannot be.

Theory of operation
-------------------
Users, vhosts, permissions and durable exchanges, queues and bindings are kept
as one document (RabbitMQ's definitions shape) replaced atomically on disk by
:func:`storage.meta.write`.  Engine code calls :meth:`MetadataJournal.changed`
after every durable change; each change bumps ``changes``.  Whoever answers the
client waits for a save that covers its changes before answering:

- a connection, after handling a batch of input, holds its output and stops
  reading (:meth:`MetadataJournal.wait_saved`), so a Declare-Ok / Bind-Ok /
  Delete-Ok only goes out once the change is on disk;
- the management API awaits the same before its answer;
- changes made by timers (queue expiry, auto-delete, exclusive queues of a
  closed connection) are saved on the next loop turn.

A save is a group commit off the event loop: the document is built and encoded on
the loop (it reads live state), then written, fsync'd and renamed by a worker
thread, so no client waits on another one's disk.  Before writing it, the save
waits for the message store to sync the directories made or removed so far
(``sync_directories``: a group commit), so that what the document says about a
queue is never older than its directory: a queue deleted and declared again
never finds the old one's messages after a power loss.  One save runs at a time; it
covers every change made before it began, and changes made meanwhile go into the
next one, which starts when it ends.

A save that fails fails its waiters with :class:`MetadataSaveError` (the
connection is closed with 541 INTERNAL_ERROR, the HTTP request answered 500),
and raises the ``metadata`` alarm that the health checks, the overview and the
metrics show.  The in-memory state keeps the change; the save is retried every
few seconds and at every later change, and the alarm clears on the first save
that succeeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable

from storage import meta
from storage.fileio import OS, FileIO

log = logging.getLogger("broker.metadata")

RETRY_INTERVAL = 2.0


class MetadataSaveError(Exception):
    """The definitions document could not be written to disk."""


class MetadataJournal:
    """Saves the durable definitions of one broker (nothing without a data dir)."""

    def __init__(
        self,
        data_dir: str | None,
        snapshot: Callable[[], dict],
        io: FileIO = OS,
        sync_directories: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.io = io
        self.snapshot = snapshot
        # the message store's "sync the directories made or removed so far"
        self.sync_directories = sync_directories
        self.dirty = False
        self.changes = 0  # counts changed() calls: a committer compares it before and after its work
        self.saved_changes = 0  # the change count the last successful save covered
        self.failure: str | None = None  # the last save's error while the alarm is up
        self.failed_since = 0.0
        self.saves = 0
        self.save_failures = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self._saving: asyncio.Future[None] | None = None  # the save running in the worker thread
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (changes needed, told when saved)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

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

    def wait_saved(self) -> "asyncio.Future[None]":
        """A future done once a save covers every change so far (its exception a
        :class:`MetadataSaveError` if that save fails)."""
        assert self.loop is not None
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.data_dir is None or self.changes <= self.saved_changes:
            fut.set_result(None)
            return fut
        self._waiters.append((self.changes, fut))
        self._start_save()
        return fut

    def commit(self) -> None:
        """Save now, on the calling thread (at start, before any client): raise
        :class:`MetadataSaveError` if that fails."""
        assert self._saving is None, "a save is running in the worker thread"
        if self.data_dir is None:
            self.dirty = False
            return
        if self.dirty:
            covers = self.changes
            self.dirty = False
            try:
                self._write(self._encode(), covers)
            except MetadataSaveError:
                self.dirty = True
                self._arm_retry()
                raise

    def _save_soon(self) -> None:
        self._scheduled = False
        self._start_save()

    def _start_save(self) -> None:
        """Begin a save in the worker thread unless one is running (it starts the next when it ends)."""
        if self._saving is not None or not self.dirty or self.data_dir is None or self.loop is None:
            return
        covers = self.changes
        self.dirty = False
        try:
            raw = self._encode()
        except MetadataSaveError as exc:
            self._failed(exc)
            return
        fut = asyncio.ensure_future(self._save(raw, covers), loop=self.loop)
        self._saving = fut
        fut.add_done_callback(self._save_done)

    async def _save(self, raw: bytes, covers: int) -> None:
        if self.sync_directories is not None:
            try:
                await self.sync_directories()
            except Exception as exc:  # the store's fsync failed
                raise self._failure(exc) from None
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metadata")
        assert self.loop is not None
        await self.loop.run_in_executor(self._executor, self._write, raw, covers)

    def _save_done(self, fut: "asyncio.Future[None]") -> None:
        self._saving = None
        if fut.cancelled():  # the loop is closing
            return
        exc = fut.exception()
        if exc is not None:
            self._failed(exc if isinstance(exc, MetadataSaveError) else MetadataSaveError(str(exc)))
            return
        waiters = self._waiters
        self._waiters = []
        for needed, w in waiters:
            if needed <= self.saved_changes:
                if not w.done():
                    w.set_result(None)
            else:
                self._waiters.append((needed, w))
        if self.dirty:
            self._start_save()

    def _failed(self, exc: MetadataSaveError) -> None:
        """A save failed: every waiter hears it, and the save is retried."""
        self.dirty = True
        waiters, self._waiters = self._waiters, []
        for _needed, w in waiters:
            if not w.done():
                w.set_exception(exc)
        self._arm_retry()

    def _encode(self) -> bytes:
        try:
            return meta.encode(self.snapshot())
        except Exception as exc:  # a value that cannot be encoded
            raise self._failure(exc) from None

    def _write(self, raw: bytes, covers: int) -> None:
        """Write the document (in the worker thread, or at start and stop on the loop's)."""
        assert self.data_dir is not None
        try:
            meta.write(self.data_dir, raw, self.io)
        except Exception as exc:  # disk full, read-only, I/O error
            raise self._failure(exc) from None
        self.saves += 1
        self.saved_changes = max(self.saved_changes, covers)
        if self.failure is not None:
            log.warning("metadata alarm cleared: durable metadata saved again")
            self.failure = None
        if self._retry is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel_retry)

    def _failure(self, exc: Exception) -> MetadataSaveError:
        self.save_failures += 1
        reason = f"{type(exc).__name__}: {exc}"
        if self.failure is None:
            self.failed_since = time.time()
            log.error("metadata alarm set: durable metadata cannot be saved (%s); operations that "
                      "change it fail until a save succeeds", reason)
        self.failure = reason
        return MetadataSaveError(f"durable metadata could not be saved: {reason}")

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _arm_retry(self) -> None:
        if self._retry is None and self.loop is not None:
            self._retry = self.loop.call_later(RETRY_INTERVAL, self._retry_save)

    def _retry_save(self) -> None:
        self._retry = None
        self.dirty = True
        self._start_save()

    async def close(self) -> None:
        """Last save at stop, after the running one (errors are logged, not raised)."""
        self._cancel_retry()
        if self._saving is not None:
            await asyncio.wait([self._saving])
        if self.dirty and self.sync_directories is not None:
            try:
                await self.sync_directories()
            except Exception as exc:
                log.error("at stop: the store's last sync failed: %s", exc)
        try:
            self.commit()
        except MetadataSaveError as exc:
            log.error("at stop: %s", exc)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
