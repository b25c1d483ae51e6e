"""The append-only message log of one durable queue: segment files, acks, recovery.

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
``NNNNNNNN.ack`` file.  A segment whose records are all settled is deleted with
its ack file; a quiet queue's fully settled write segment is rolled and deleted
by :meth:`~storage.store.LogStore.housekeep`.  Acks and deletions wait for no
fsync, but the next group commit covers them (ack files and directories
included): once a later publish is confirmed, a settled message cannot come back
after a power loss.

Records are buffered and written with one ``os.write`` per file per loop turn,
when the store flushes the log (:meth:`QueueLog.flush`); the store's group commit
(:mod:`storage.store`) makes them durable.  A write that fails loses the records
from the failed batch to the end of their segment: the queue that owns the log
hears it through ``QueueLog.on_lost``.

Recovery (:meth:`QueueLog.recover`) reads each queue's segments in order, checks
every record's CRC, skips (and reports) a damaged record or a damaged length
field by resynchronising on the next record with a valid CRC, cuts a torn or
corrupt tail with no valid record after it, drops acked and transient records, and
reports the delivery watermark (``delivered`` file): messages at or below it
were delivered before and go out redelivered.
"""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Callable

from .interfaces import LogHost, StorageError, WriteFailed
from .records import (  # noqa: F401  (REC_ACKS, REC_HEAD, REC_MSG, decode_message, scan_records are part of this module's interface)
    REC_ACKS,
    REC_HEAD,
    REC_MSG,
    U32,
    U64,
    decode_message,
    decode_message_full,
    encode_acks,
    encode_message,
    read_acks,
    read_returns,
    ref_of,
    scan_records,
    scan_segment,
    segment_end,
)

log = logging.getLogger("storage")

SEGMENT_SIZE = 8 * 1024 * 1024


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

    def __init__(self, store: LogHost, directory: str) -> None:
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
