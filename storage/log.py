"""Append-only message logs, one per durable queue, with group commit.

Theory of operation
-------------------
A durable queue owns a directory of segment files ``NNNNNNNN.seg`` (8 MiB by
default) of records in the format of :mod:`storage.records`: the content header
as the publisher sent it, so delivery never re-encodes properties.  Transient
messages are written too (to keep memory flat under a backlog) but are dropped
at recovery.

A message is named by its *ref* (segment and offset, see
:mod:`storage.records`); refs grow with the append order, so they double as the
queue's sequence numbers.  Acks are never written in place: the offsets of
records settled in the segment being written go into an acks record appended to
that segment, so one fsync covers a queue's publishes and acks; the offset of a
settled record of an older segment is appended to that segment's
``NNNNNNNN.ack`` file.  A segment
whose records are all settled is deleted with its ack file; a quiet queue's
fully settled write segment is rolled and deleted by :meth:`LogStore.housekeep`.
Acks and deletions wait for no fsync, but the next group commit covers them
(ack files and directories included): once a later publish is confirmed, a
settled message cannot come back after a power loss.

Writes are buffered and written with one ``os.write`` per file per loop turn
(:meth:`LogStore.flush`).  Durability is group commit: a publisher confirm that
needs the disk waits for the epoch its record was written in
(:meth:`LogStore.want_sync`); one batch of fsyncs (in worker threads, so the
event loop never blocks on the disk; the files of a batch in parallel) covers
every file written since the previous one, and while it runs new work
accumulates for the next.  No confirmable work pending:
no fsync.  Whoever waits registers a :class:`SyncWaiter` in
``LogStore.sync_waiters`` and is told when its epoch is safe, or failed.  A
write that fails loses the records from the failed batch to the end of their
segment: the queue that owns the log hears it through ``QueueLog.on_lost``.

Recovery (:meth:`QueueLog.recover`) reads each queue's segments in order, checks
every record's CRC, skips (and reports) a damaged record or a damaged length
field by resynchronising on the next record with a valid CRC, cuts a torn or
corrupt tail with no valid record after it, drops acked and transient records, and
reports the delivery watermark (``delivered`` file): messages at or below it
were delivered before and go out redelivered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import logging
import os
import time
from array import array
from collections.abc import Callable
from typing import Protocol

from .fileio import OS, FileIO, fsync_all
from .records import (  # noqa: F401  (REC_ACKS, REC_HEAD, REC_MSG, decode_message, scan_records are part of this module's interface)
    LOST_FOUND,
    REC_ACKS,
    REC_HEAD,
    REC_MSG,
    U32,
    U64,
    decode_message,
    decode_message_full,
    encode_acks,
    encode_message,
    offset_of,
    read_acks,
    read_returns,
    ref_of,
    scan_records,
    scan_segment,
    segment_end,
    segment_of,
    write_identity,
)

log = logging.getLogger("storage")

SEGMENT_SIZE = 8 * 1024 * 1024
SYNC_THREADS = 4


class SyncWaiter(Protocol):
    """Someone waiting for an fsync epoch (a confirming channel, an HTTP publish).

    Each method returns True while the waiter still waits for a later epoch;
    False takes it out of ``LogStore.sync_waiters``."""

    def synced(self, epoch: int) -> bool: ...

    def sync_failed(self, epoch: int, exc: Exception) -> bool: ...


class OwnedLog(Protocol):
    """A log the store flushes and fsyncs: a queue's :class:`QueueLog`, or a stream's log."""

    dir: str
    wbuf_size: int

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def destroy(self) -> None: ...

    def roll_if_idle(self, now: float, idle: float) -> None: ...

    def records_lost(self, lost_from: int) -> None: ...

    def sync_failed(self, fds: set[int]) -> None:
        """An fsync of ``fds`` failed: never write to those files again (roll)."""
        ...


class DataDirError(Exception):
    """The data directory cannot be used: the broker does not start."""


class DataDirLocked(DataDirError):
    """Another broker holds the data directory."""


class StorageError(Exception):
    """A write or fsync failed."""


class WriteFailed(StorageError):
    """Buffered records of one queue could not be written; refs from ``lost_from``
    up to the end of that segment are gone."""

    def __init__(self, qlog: OwnedLog, lost_from: int, cause: OSError) -> None:
        super().__init__(f"write to {qlog.dir} failed: {cause}")
        self.qlog = qlog
        self.lost_from = lost_from
        self.cause = cause


class Segment:
    __slots__ = (
        "sid", "path", "ack_path", "fd", "size", "flushed", "live", "acked", "ack_buf", "ack_fd", "ret_buf", "ret_fd"
    )

    def __init__(self, sid: int, path: str) -> None:
        self.sid = sid
        self.path = path
        self.ack_path = path[:-4] + ".ack"
        self.fd = -1
        self.size = 0
        self.flushed = 0
        self.live = 0
        self.acked = 0
        self.ack_buf = bytearray()
        self.ack_fd = -1
        self.ret_buf = bytearray()  # offsets of records that went back to the queue (returns file)
        self.ret_fd = -1

    @property
    def ret_path(self) -> str:
        return self.path[:-4] + ".ret"


class QueueLog:
    """The segment log of one durable queue."""

    def __init__(self, store: "LogStore", directory: str) -> None:
        self.store = store
        self.account = store.account  # the store whose appended_bytes counts this log's records
        self.io = store.io
        self.dir = directory
        self.segments: dict[int, Segment] = {}
        self.wseg: Segment | None = None
        self.wbuf: list[bytes] = []
        self.wbuf_size = 0
        self.wbuf_count = 0
        # the owning queue's callback: records with refs in [lo, hi) never reached the disk
        self.on_lost: Callable[[int, int], None] | None = None
        self.next_sid = 1
        self.delivered_upto = 0
        self.delivered_written = 0
        self.last_append = 0.0
        self.deleted = False
        self.recovered_bytes = 0
        # ref -> how often it went back to the queue, for the live records recovery found
        self.recovered_returns: dict[int, int] = {}
        self.recovered_marked: list[int] = []  # the live records recovery found that were appended marked

    # -- writing ---------------------------------------------------------------
    def _open_write_segment(self) -> Segment:
        sid = self.next_sid
        self.next_sid += 1
        seg = Segment(sid, os.path.join(self.dir, f"{sid:08d}.seg"))
        seg.fd = self.io.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        self.segments[sid] = seg
        self.wseg = seg
        self.store.new_files.add(self.dir)
        return seg

    def append(
        self,
        persistent: bool,
        ex_raw: bytes,
        rk_raw: bytes,
        header: bytes,
        body: bytes,
        deadline: int = 0,
        marked: bool = False,
    ) -> int:
        """Buffer a message record; return its ref.  A ``marked`` record is listed in
        ``recovered_marked`` by the next recovery."""
        parts = encode_message(persistent, ex_raw, rk_raw, header, body, deadline, marked)
        n = 9 + len(parts[1]) + len(parts[2])
        seg = self.wseg
        if seg is None or (seg.size + n > SEGMENT_SIZE and seg.size > 0):
            if seg is not None:
                try:
                    self._flush_writes()
                except WriteFailed as exc:
                    self.store.write_failed(exc)
            seg = self._open_write_segment()
        ref = (seg.sid << 32) | seg.size
        seg.size += n
        seg.live += 1
        self.wbuf += parts
        self.wbuf_size += n
        self.wbuf_count += 1
        self.account.appended_bytes += n
        self.last_append = self.store.now
        self.store.dirty(self)
        return ref

    def _flush_writes(self) -> None:
        """Write the buffered records to the write segment, followed by an acks record
        for its records settled since the last write."""
        seg = self.wseg
        if seg is None or not (self.wbuf or seg.ack_buf):
            return
        if seg.ack_buf:
            acks = encode_acks(bytes(seg.ack_buf))
            self.wbuf.append(acks)
            seg.size += len(acks)
        data = b"".join(self.wbuf)
        count = self.wbuf_count
        self.wbuf = []
        self.wbuf_size = 0
        self.wbuf_count = 0
        try:
            self.io.write_all(seg.fd, data)
        except OSError as exc:
            # cut what may have been half written, and forget the records of this batch
            try:
                self.io.truncate(seg.fd, seg.flushed)
            except OSError:
                pass
            lost_from = (seg.sid << 32) | seg.flushed
            seg.size = seg.flushed
            seg.live -= count
            # never reuse the lost offsets: a lost message still in flight must not
            # settle a newer one at the same ref
            # the acks stay buffered, for the segment's ack file
            self.wseg = None
            raise WriteFailed(self, lost_from, exc) from None
        seg.flushed = seg.size
        seg.ack_buf.clear()
        self.store.sync_fds.add(seg.fd)

    def settle(self, ref: int) -> None:
        """The record at ``ref`` is acked or dropped."""
        seg = self.segments.get(ref >> 32)
        if seg is None or (ref & 0xFFFFFFFF) >= seg.size:
            return  # its segment is gone, or it was never written
        seg.live -= 1
        seg.acked += 1
        if seg.live <= 0 and seg is not self.wseg:
            self._drop_segment(seg)
            return
        seg.ack_buf += U32.pack(ref & 0xFFFFFFFF)
        self.store.dirty(self)

    def count_return(self, ref: int) -> None:
        """The record at ``ref`` went back to its queue once more (delivery counts survive a restart)."""
        seg = self.segments.get(ref >> 32)
        if seg is None or (ref & 0xFFFFFFFF) >= seg.size:
            return
        seg.ret_buf += U32.pack(ref & 0xFFFFFFFF)
        self.store.dirty(self)

    def records_lost(self, lost_from: int) -> None:
        """A failed write lost the records from ``lost_from`` to the end of its
        segment: tell the owning queue which refs are gone."""
        if self.on_lost is not None:
            self.on_lost(lost_from, segment_end(lost_from))

    def mark_delivered(self, ref: int) -> None:
        if ref > self.delivered_upto:
            self.delivered_upto = ref
            self.store.dirty(self)

    def _close_files(self, seg: Segment) -> None:
        for fd in (seg.fd, seg.ack_fd, seg.ret_fd):
            if fd >= 0:
                self.store.sync_fds.discard(fd)
                try:
                    self.io.close(fd)
                except OSError:
                    pass
        seg.fd = seg.ack_fd = seg.ret_fd = -1

    def _drop_segment(self, seg: Segment) -> None:
        self.segments.pop(seg.sid, None)
        self._close_files(seg)
        for p in (seg.path, seg.ack_path, seg.ret_path):
            self.io.unlink(p)
        self.store.new_files.add(self.dir)  # the next group commit makes the removal durable

    def flush(self) -> None:
        """Write buffered records, acks and the delivery watermark (no fsync).  The
        write segment's acks go into the segment itself (:meth:`_flush_writes`),
        other segments' into their ack files."""
        try:
            self._flush_writes()
        except WriteFailed as exc:
            self.store.write_failed(exc)
        for seg in self.segments.values():
            if seg.ack_buf:
                if seg.ack_fd < 0:
                    seg.ack_fd = self.io.open(seg.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                    self.store.new_files.add(self.dir)
                self.io.write_all(seg.ack_fd, bytes(seg.ack_buf))
                seg.ack_buf.clear()
                # acks need no fsync of their own, but the next group commit covers them:
                # once a later publish is confirmed, an acked message never comes back
                self.store.sync_fds.add(seg.ack_fd)
            if seg.ret_buf:
                if seg.ret_fd < 0:
                    seg.ret_fd = self.io.open(seg.ret_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                    self.store.new_files.add(self.dir)
                self.io.write_all(seg.ret_fd, bytes(seg.ret_buf))
                seg.ret_buf.clear()
                self.store.sync_fds.add(seg.ret_fd)  # delivery counts, durable like acks
        if self.delivered_upto != self.delivered_written:
            p = os.path.join(self.dir, "delivered")
            fd = self.io.open(p, os.O_WRONLY | os.O_CREAT)
            try:
                self.io.pwrite(fd, U64.pack(self.delivered_upto), 0)
            finally:
                self.io.close(fd)
            self.delivered_written = self.delivered_upto

    def roll_now(self) -> None:
        """Write what is buffered to the write segment, and start a new one for the next record."""
        try:
            self._flush_writes()
        except WriteFailed as exc:
            self.store.write_failed(exc)
        self.wseg = None

    def sync_failed(self, fds: set[int]) -> None:
        if self.wseg is not None and self.wseg.fd in fds:
            self.roll_now()

    def roll_if_idle(self, now: float, idle: float) -> None:
        """Delete a fully settled write segment of a quiet queue."""
        seg = self.wseg
        if seg is not None and seg.live <= 0 and not self.wbuf and now - self.last_append >= idle:
            self.wseg = None
            self._drop_segment(seg)

    # -- reading ---------------------------------------------------------------
    def read(self, ref: int) -> tuple[bool, bytes, bytes, bytes, bytes]:
        """(persistent, ex_raw, rk_raw, header, body) of the record at ``ref``."""
        persistent, _d, ex_raw, rk_raw, header, body = self.read_full(ref)
        return persistent, ex_raw, rk_raw, header, body

    def read_full(self, ref: int) -> tuple[bool, int, bytes, bytes, bytes, bytes]:
        sid, off = ref >> 32, ref & 0xFFFFFFFF
        seg = self.segments.get(sid)
        if seg is None:
            raise StorageError(f"segment {sid} of {self.dir} is gone")
        if seg is self.wseg and self.wbuf:
            self._flush_writes()
        if seg.fd < 0:
            seg.fd = self.io.open(seg.path, os.O_RDONLY)
        head = self.io.pread(seg.fd, 9, off)
        length, crc, _t = REC_HEAD.unpack(head)
        payload = self.io.pread(seg.fd, length - 1, off + 9)
        return decode_message_full(payload)

    def close(self) -> None:
        if not self.deleted:
            try:
                self.flush()
            except OSError as exc:
                log.error("flushing %s at close failed: %s", self.dir, exc)
        for seg in self.segments.values():
            self._close_files(seg)

    def destroy(self) -> None:
        """The queue is deleted: remove every file of it."""
        self.wbuf = []
        self.deleted = True
        self.close()
        self.segments.clear()
        self.wseg = None
        self.io.rmtree(self.dir)

    # -- recovery --------------------------------------------------------------
    def recover(self) -> tuple[array, int, list[str]]:
        """Rebuild from disk: (refs of live persistent messages in order,
        watermark, problems found)."""
        problems: list[str] = []
        refs = array("Q")
        total_bytes = 0
        io = self.io
        try:
            raw = io.read_file(os.path.join(self.dir, "delivered"))[:8]
            if len(raw) == 8:
                self.delivered_upto = self.delivered_written = U64.unpack(raw)[0]
        except FileNotFoundError:
            pass
        names = sorted(n for n in io.listdir(self.dir) if n.endswith(".seg"))
        for _i, name in enumerate(names):
            sid = int(name[:-4])
            path = os.path.join(self.dir, name)
            seg = Segment(sid, path)
            data = io.read_file(path)
            acked = read_acks(io, seg.ack_path)
            valid_end, live_refs, bad, nbytes = scan_segment(data, sid, acked, self.recovered_marked)
            total_bytes += nbytes
            for b in bad:
                problems.append(f"{path}: {b}")
            if valid_end < len(data):
                problems.append(f"{path}: torn or corrupt tail cut at byte {valid_end} of {len(data)}")
                fd = io.open(path, os.O_RDWR)
                try:
                    io.truncate(fd, valid_end)
                    io.fdatasync(fd)
                finally:
                    io.close(fd)
            seg.size = seg.flushed = valid_end
            seg.live = len(live_refs)
            refs.extend(live_refs)
            if live_refs and io.exists(seg.ret_path):
                live = set(live_refs)
                for off, n in read_returns(io, seg.ret_path).items():
                    if ref_of(sid, off) in live:
                        self.recovered_returns[ref_of(sid, off)] = n
            self.next_sid = max(self.next_sid, sid + 1)
            if seg.live == 0:
                self._drop_segment(seg)
                continue
            # recovered segments are never appended to again: acks that point past a
            # cut tail can then never match a new record
            self.segments[sid] = seg
        self.recovered_bytes = total_bytes
        return refs, self.delivered_upto, problems



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
            fsync_all(self.io, fds, list(self.new_files))
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
                write_identity(self.io, d, vhost, name)
                # the directory's entry, and queue.json's in it, must survive a power
                # loss before any record confirmed in it does
                self.io.fsync_dir(d)
                self.io.fsync_dir(self.msg_dir)
            except OSError:
                self.io.rmtree(d)
                raise
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
        fut = self.loop.run_in_executor(self._executor, fsync_all, self.io, fds, dirs, self._sync_pool)
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
