"""Every message log of one data directory, and their group commit.

Theory of operation
-------------------
A :class:`LogStore` owns a data directory: it locks it (``broker.lock``), makes
it private, and holds every log in it: a durable queue's
:class:`~storage.log.QueueLog` (made by :meth:`LogStore.queue_log`, in a
directory named by a hash of vhost and queue) or another :class:`OwnedLog` (a
stream's, :meth:`LogStore.add_log`).

A log that buffered something marks itself dirty; at the end of the loop turn
:meth:`LogStore.flush` has each dirty log write what it buffered, with one
``os.write`` per file.  Durability is group commit: a publisher confirm that
needs the disk waits for the epoch its record was written in
(:meth:`LogStore.want_sync`); one batch of fsyncs (in worker threads, so the
event loop never blocks on the disk; the files of a batch in parallel) covers
every file and directory written since the previous one, and while it runs new
work accumulates for the next.  No confirmable work pending: no fsync.  Whoever
waits registers a :class:`SyncWaiter` in ``LogStore.sync_waiters`` and is told
when its epoch is safe, or failed.  A failed fsync is never retried as if it had
succeeded: its files are never synced again (their logs roll) and everything
that waited on them is failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import logging
import os
import time

from .fileio import OS, FileIO, fsync_all
from .interfaces import DataDirError, DataDirLocked, OwnedLog, StorageError, SyncWaiter, WriteFailed
from .log import QueueLog
from .records import IDENTITY_FILE, LOST_FOUND, write_identity

log = logging.getLogger("storage")

SYNC_THREADS = 4


class EpochWaiter:
    """A :class:`SyncWaiter` that settles a future when its epoch is synced, or failed."""

    def __init__(self, epoch: int, fut: "asyncio.Future[None]") -> None:
        self.epoch = epoch
        self.fut = fut

    def synced(self, epoch: int) -> bool:
        if epoch >= self.epoch:
            if not self.fut.done():
                self.fut.set_result(None)
            return False
        return True

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        if epoch >= self.epoch:
            if not self.fut.done():
                self.fut.set_exception(exc)
            return False
        return True


class LogStore:
    """All queue logs under one data directory, with the group-commit fsync."""

    def __init__(self, data_dir: str, io: FileIO = OS, account: "LogStore | None" = None) -> None:
        """``account``: another store on the same disk whose ``appended_bytes`` counts this one's
        records too (the scratch store's go to the main store's: the disk alarm watches one count)."""
        self.io = io
        self.account: LogStore = account if account is not None else self
        self.data_dir = os.path.abspath(data_dir)
        self.msg_dir = os.path.join(self.data_dir, "queues")
        self.logs: dict[str, OwnedLog] = {}
        self.dirty_logs: set[OwnedLog] = set()
        self.sync_fds: set[int] = set()
        self.new_files: set[str] = set()
        self.unsynced_files: set[str] = set()  # small files written whole, synced by path in the next batch
        self.flush_scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.now = time.monotonic()
        # group commit
        self.write_epoch = 1
        self.sync_wanted = False
        self.syncing = False
        self.sync_waiters: set[SyncWaiter] = set()
        self._failed: Exception | None = None
        self.write_errors = 0
        self.appended_bytes = 0  # message record bytes ever appended (the disk alarm's estimate)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsync")
        # the files and directories of one batch are synced in parallel (see fsync_all)
        self._sync_pool = concurrent.futures.ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="fsync-file")
        self._lock_fd = -1
        self.fsyncs = 0

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        """Make the data directory private and writable, and lock it."""
        self._prepare_dir()
        path = os.path.join(self.data_dir, "broker.lock")
        try:
            fd = self.io.open(path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataDirError(
                    f"data directory {self.data_dir}: broker.lock is a symbolic link; refusing to follow it "
                    "(remove it if you did not put it there)"
                ) from None
            raise DataDirError(f"cannot write to data directory {self.data_dir}: {exc.strerror or exc}") from None
        try:
            self.io.lock(fd)
        except OSError:
            try:
                other = self.io.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                other = "?"
            self.io.close(fd)
            raise DataDirLocked(
                f"data directory {self.data_dir} is in use by another broker (pid {other or '?'}); "
                "stop that broker or start this one with another --data-dir"
            ) from None
        self.io.truncate(fd, 0)
        self.io.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _prepare_dir(self) -> None:
        """Create the data and queues directories (0700), check that files can be
        created there, and make an existing data directory that others can read
        private."""
        try:
            io = self.io
            io.makedirs(self.data_dir)
            io.makedirs(self.msg_dir)
            probe = os.path.join(self.data_dir, f".write-test.{os.getpid()}")
            io.unlink(probe)  # left by a crash at this very point
            io.close(io.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            io.unlink(probe)
            # new directories survive a power loss only once their parents are synced
            io.fsync_dir(os.path.dirname(self.data_dir))
            io.fsync_dir(self.data_dir)
        except OSError as exc:
            raise DataDirError(f"cannot write to data directory {self.data_dir}: {exc.strerror or exc}") from None
        try:
            old = self.io.tighten_dir(self.data_dir)
        except OSError as exc:
            log.warning("data directory %s is open to other users and cannot be made private: %s",
                        self.data_dir, exc.strerror)
            return
        if old is not None:
            log.warning("data directory %s was open to other users (mode %04o); tightened to 0700",
                        self.data_dir, old)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def close(self) -> None:
        now = time.monotonic()
        for qlog in list(self.logs.values()):
            qlog.roll_if_idle(now, 0.0)
            qlog.close()
        fds = list(self.sync_fds)
        self.sync_fds.clear()
        try:
            fsync_all(self.io, fds, list(self.new_files), paths=self.unsynced_files)
        except OSError as exc:
            log.error("final fsync failed: %s", exc)
        self._executor.shutdown(wait=True)
        self._sync_pool.shutdown(wait=True)
        if self._lock_fd >= 0:
            self.io.close(self._lock_fd)
            self._lock_fd = -1

    # -- queue logs --------------------------------------------------------------
    def queue_dir(self, vhost: str, name: str) -> str:
        h = hashlib.sha256(f"{vhost}\x00{name}".encode()).hexdigest()[:32]
        return os.path.join(self.msg_dir, h)

    def queue_log(self, vhost: str, name: str) -> QueueLog:
        d = self.queue_dir(vhost, name)
        qlog = self.logs.get(d)
        if not isinstance(qlog, QueueLog):
            self.io.makedirs(d)
            try:
                write_identity(self.io, d, vhost, name, sync=False)
            except OSError:
                self.io.rmtree(d)
                raise
            # the directory's entry, and queue.json in it, must survive a power loss before any
            # record confirmed in it does: the next group commit syncs them, off the event loop
            self.unsynced_files.add(os.path.join(d, IDENTITY_FILE))
            self.new_files.add(d)
            self.new_files.add(self.msg_dir)
            qlog = QueueLog(self, d)
            self.logs[d] = qlog
        return qlog

    def quarantine(self, directory: str) -> str:
        """Move a queue directory that no declared queue owns into ``lost+found``
        (never delete message data we cannot match); return its new path."""
        lf = os.path.join(self.data_dir, LOST_FOUND)
        self.io.makedirs(lf)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest = os.path.join(lf, f"{os.path.basename(directory)}-{stamp}")
        n = 1
        while self.io.exists(dest):
            n += 1
            dest = os.path.join(lf, f"{os.path.basename(directory)}-{stamp}-{n}")
        self.io.replace(directory, dest)
        for d in (lf, self.msg_dir):
            self.io.fsync_dir(d)
        return dest

    def add_log(self, olog: OwnedLog) -> None:
        """Register a log of another kind (a stream's) made in :meth:`queue_dir`."""
        self.logs[olog.dir] = olog

    def drop_queue_log(self, qlog: OwnedLog) -> None:
        self.logs.pop(qlog.dir, None)
        self.dirty_logs.discard(qlog)
        qlog.destroy()
        self.new_files.add(self.msg_dir)  # the removal is durable after the next sync of its parent

    def existing_queue_dirs(self) -> set[str]:
        try:
            return {os.path.join(self.msg_dir, n) for n in self.io.listdir(self.msg_dir)}
        except FileNotFoundError:
            return set()

    # -- flushing and group commit ---------------------------------------------------
    def dirty(self, qlog: OwnedLog) -> None:
        self.dirty_logs.add(qlog)
        if not self.flush_scheduled and self.loop is not None:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    async def wait_synced(self) -> None:
        """Return once a group commit covers everything written so far (raise what it
        failed with)."""
        assert self.loop is not None
        fut: asyncio.Future[None] = self.loop.create_future()
        w = EpochWaiter(self.want_sync(), fut)
        self.sync_waiters.add(w)
        try:
            await fut
        finally:
            self.sync_waiters.discard(w)

    async def sync_directories(self) -> None:
        """Return once the directories made or removed so far (and their small files) are
        synced: at once if there are none."""
        if self.new_files or self.unsynced_files:
            await self.wait_synced()

    def buffered_bytes(self) -> int:
        """Message record bytes appended but not yet written."""
        return sum(qlog.wbuf_size for qlog in self.dirty_logs)

    def want_sync(self) -> int:
        """Ask for an fsync covering everything written so far; return its epoch."""
        self.sync_wanted = True
        if not self.flush_scheduled and self.loop is not None:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return self.write_epoch

    def write_failed(self, exc: WriteFailed) -> None:
        """Records could not be written: the engine drops them from their queue,
        and every publish still waiting for the disk is nacked."""
        log.error("%s; the publishes waiting for the disk are nacked", exc)
        self.write_errors += 1
        exc.qlog.records_lost(exc.lost_from)
        self._failed = exc.cause

    def append_failed(self, qlog: OwnedLog, exc: OSError) -> None:
        """A record could not even be buffered (its segment file could not be made)."""
        log.error("cannot append to %s: %s; the publish is refused", qlog.dir, exc)
        self.write_errors += 1

    def flush(self) -> None:
        self.flush_scheduled = False
        self.now = time.monotonic()
        for qlog in list(self.dirty_logs):
            try:
                qlog.flush()
            except OSError as exc:  # ack files, watermark: a lost ack is a redelivery
                log.error("write to %s failed: %s", qlog.dir, exc)
        self.dirty_logs.clear()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            epoch = self.write_epoch
            self.write_epoch += 1
            self.sync_wanted = False
            self._wake_failed(epoch, failed)
            return
        if self.sync_wanted and not self.syncing:
            self._start_sync()

    def _start_sync(self) -> None:
        assert self.loop is not None
        epoch = self.write_epoch
        self.write_epoch += 1
        self.sync_wanted = False
        self.syncing = True
        fds = list(self.sync_fds)
        self.sync_fds.clear()
        dirs = list(self.new_files)
        self.new_files.clear()
        paths = list(self.unsynced_files)
        self.unsynced_files.clear()
        fut = self.loop.run_in_executor(self._executor, fsync_all, self.io, fds, dirs, self._sync_pool, paths)
        fut.add_done_callback(lambda f: self._sync_done(f, epoch, fds, dirs))

    def _sync_done(self, fut: "asyncio.Future[None]", epoch: int, fds: list[int], dirs: list[str]) -> None:
        self.syncing = False
        self.fsyncs += 1
        exc = fut.exception()
        if exc is not None:
            log.error("fsync failed: %s; publishes waiting for it are nacked and the segments it covered "
                      "are rolled", exc)
            self.write_errors += 1
            cause = exc if isinstance(exc, Exception) else StorageError(str(exc))
            self._wake_failed(epoch, cause)
            self._sync_failed(fds, dirs, cause)
        else:
            self._wake_synced(epoch)
        if self.sync_wanted:
            self.flush()

    def _sync_failed(self, fds: list[int], dirs: list[str], cause: Exception) -> None:
        """An fsync failed.  After a failed fsync the kernel may have dropped the
        dirty pages it covered, so a later fsync of the same file that succeeds
        proves nothing about them: the file is never synced again.  Every write
        segment in the failed batch is rolled (new records go to a new file), and
        whatever was written since the batch started is failed as well (its
        publishes are nacked now) instead of riding on that file."""
        failed = set(fds)
        for owned in self.logs.values():
            owned.sync_failed(failed)
        self.sync_fds.difference_update(failed)
        self.new_files.update(dirs)  # a directory's entries are re-synced with the next batch
        epoch = self.write_epoch
        self.write_epoch += 1
        self.sync_wanted = False
        self._wake_failed(epoch, cause)

    def _wake_synced(self, epoch: int) -> None:
        """Tell every waiter that ``epoch`` is on disk; drop those done waiting."""
        waiters = self.sync_waiters
        for w in list(waiters):
            if not w.synced(epoch):
                waiters.discard(w)

    def _wake_failed(self, epoch: int, exc: Exception) -> None:
        """Tell every waiter that ``epoch`` failed to reach the disk; drop those done waiting."""
        waiters = self.sync_waiters
        for w in list(waiters):
            if not w.sync_failed(epoch, exc):
                waiters.discard(w)

    def housekeep(self, idle: float = 2.0) -> None:
        now = time.monotonic()
        for qlog in list(self.logs.values()):
            qlog.roll_if_idle(now, idle)

    def disk_usage(self) -> int:
        return self.io.tree_size(self.msg_dir)
