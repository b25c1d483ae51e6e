"""A stream's log: append-only segments of records named by stable offsets.

Theory of operation
-------------------
A stream is written once and read by any number of readers, each from its own
place, and reading never removes anything: unlike a classic queue's log there is
nothing to settle, so this log keeps no ack files and no per-message state.

Each record gets the next *offset* (0, 1, 2, ... for the life of the stream, never
reused, never renumbered).  Records live in segment files named after the offset
of their first record, ``00000000000000000000.seg``; a segment is closed when the
next record would take it past ``max_segment_bytes`` and a new one is opened at
the next offset.  A record is ``length:u32 crc32:u32 type:u8 payload``
(:mod:`storage.records`'s framing, type ``REC_STREAM``) whose payload is
``offset:u64 timestamp_ms:u64 filter:shortstr exchange:shortstr
routing_key:shortstr header_len:u32 header body``.  The offset inside the record
makes every record self-describing, so a follower can be fed bytes from any
offset and check where it is.

Memory does not grow with the messages: per segment the log keeps its first
offset, record count, byte size, first and last timestamps, and a sparse index
(the byte position and timestamp of every :data:`INDEX_EVERY`-th record, 16 bytes
per 512 records).  Readers hold a :class:`Cursor` (offset, segment, byte
position) and read records from the file in bounded batches (:meth:`StreamLog.read`).

Writes are buffered and written once per loop turn by the :class:`LogStore`'s
flush, which also runs the group-commit fsync.  Readers see a record only once
an fsync has made it durable (:class:`DurableMark` follows the group commit and
:attr:`StreamLog.on_readable` wakes them), as publishers' confirms wait for it:
so an offset a consumer was given never holds another message after a power
loss (a record only written could be lost, and its offset given out again).
Without an event loop there is no group commit: :meth:`StreamLog.sync` writes,
fsyncs and makes readable at once (tools and tests).

Retention removes whole segments from the head, never the one being written:
while the stream is over ``max_bytes``, or while its oldest segment's newest
record is older than ``max_age_ms`` (:meth:`StreamLog.apply_retention`, run on
every segment roll and by the owning queue's timer).

A segment that is closed, and the one being written at a clean stop, get an
index file ``NNN.idx`` (count, size, timestamps and sparse index), so recovery
reads that instead of the segment; a segment without a matching index file (the
one being written at a crash) is scanned, every CRC checked and a torn or corrupt tail cut.  The offsets come back
from the records, so they are the same after a restart.

Every file operation (appends, index files, retention's deletes, recovery's reads
and cuts) goes through the store's :class:`~storage.fileio.FileIO`, so a test can
run a stream on a file system that simulates power loss.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import zlib
from array import array
from collections import deque
from collections.abc import Callable

from .interfaces import WriteFailed
from .records import MAX_RECORD, REC_HEAD, U32, decode_routed, write_identity
from .store import LogStore
from .stream_peek import PeekPlan, SegmentSpan

log = logging.getLogger("storage")

REC_STREAM = 3
STREAM_META = struct.Struct(">QQ")  # offset, timestamp (ms since the epoch)
# a closed segment's index file: magic, count, size, first and last timestamps, index length
INDEX_HEAD = struct.Struct(">8sQQQQQ")
INDEX_MAGIC = b"BMQSIDX1"
INDEX_EVERY = 512  # one sparse index entry per this many records
DEFAULT_SEGMENT_BYTES = 500_000_000  # RabbitMQ's default x-stream-max-segment-size-bytes
READ_CHUNK = 256 * 1024  # bytes read from a segment file at a time
SCAN_CHUNK = 8 * 1024 * 1024  # bytes read at a time by recovery's scan of a segment

# (offset, timestamp ms, filter value or b"", exchange short string, routing key short string, header, body)
StreamRecord = tuple[int, int, bytes, bytes, bytes, bytes, bytes]


def encode_record(
    offset: int, ts: int, filter_value: bytes, ex_raw: bytes, rk_raw: bytes, header: bytes, body: bytes
) -> list[bytes]:
    """The parts of one stream record (for ``b''.join``)."""
    meta = b"".join(
        (STREAM_META.pack(offset, ts), bytes((len(filter_value),)), filter_value, ex_raw, rk_raw,
         U32.pack(len(header)), header)
    )
    crc = zlib.crc32(body, zlib.crc32(meta, zlib.crc32(bytes((REC_STREAM,)))))
    return [REC_HEAD.pack(1 + len(meta) + len(body), crc, REC_STREAM), meta, body]


def record_size(filter_value: bytes, ex_raw: bytes, rk_raw: bytes, header: bytes, body: bytes) -> int:
    """Bytes one stream record takes in its segment file."""
    return REC_HEAD.size + STREAM_META.size + 1 + len(filter_value) + len(ex_raw) + len(rk_raw) + U32.size \
        + len(header) + len(body)


def decode_payload(p: bytes | memoryview) -> StreamRecord:
    """The fields of a stream record's payload (after the 9-byte record head)."""
    offset, ts = STREAM_META.unpack_from(p, 0)
    o = 16
    fl = p[o]
    fv = bytes(p[o + 1 : o + 1 + fl])
    return (offset, ts, fv, *decode_routed(p, o + 1 + fl))


class StreamSegment:
    """One segment file and the little the log remembers of it."""

    __slots__ = ("first", "count", "written", "size", "flushed", "durable", "durable_count", "given_up", "first_ts",
                 "last_ts", "positions", "stamps", "path", "fd")

    def __init__(self, first: int, path: str) -> None:
        self.first = first  # offset of its first record
        self.count = 0  # records appended (buffered ones included)
        self.written = 0  # records written to the file
        self.size = 0  # bytes appended
        self.flushed = 0  # bytes written to the file
        self.durable = 0  # bytes an fsync made durable: what readers may read
        self.durable_count = 0  # records in those bytes
        self.given_up = False  # an fsync of it failed: what was not durable then never will be
        self.first_ts = 0
        self.last_ts = 0
        self.positions = array("Q")  # byte position of record i * INDEX_EVERY
        self.stamps = array("Q")  # timestamp of record i * INDEX_EVERY
        self.path = path
        self.fd = -1

    @property
    def end(self) -> int:
        """The offset just past its last record."""
        return self.first + self.count

    def note(self, pos: int, ts: int) -> None:
        """Index the record about to be counted at byte ``pos`` (timestamp ``ts``)."""
        if self.count % INDEX_EVERY == 0:
            self.positions.append(pos)
            self.stamps.append(ts)
        if self.count == 0:
            self.first_ts = ts
        self.last_ts = ts
        self.count += 1


class Cursor:
    """A reader's place: the next offset it reads, and where that record starts."""

    __slots__ = ("offset", "seg", "pos")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.seg: StreamSegment | None = None
        self.pos = 0


class StreamLog:
    """The segment log of one stream (see the module doc)."""

    def __init__(self, store: LogStore, directory: str) -> None:
        self.store = store
        self.io = store.io
        self.dir = directory
        self.segments: list[StreamSegment] = []
        self.firsts: list[int] = []  # first offsets of ``segments``, for bisect
        self.wseg: StreamSegment | None = None
        self.wbuf: list[bytes] = []
        self.wbuf_size = 0
        self.next_offset = 0  # the offset the next append gets
        self.max_segment_bytes = DEFAULT_SEGMENT_BYTES
        self.max_bytes: int | None = None
        self.max_age_ms: int | None = None
        self.deleted = False
        # the owning queue: records became durable (readers may go on)
        self.on_readable: Callable[[], None] | None = None
        self.mark = DurableMark(self)
        self.dropped_segments = 0

    # -- what it holds ----------------------------------------------------------------
    @property
    def first_offset(self) -> int:
        """The oldest offset still in the log (== next_offset when it is empty)."""
        for seg in self.segments:
            if seg.count:
                return seg.first
        return self.next_offset

    @property
    def messages(self) -> int:
        return self.next_offset - self.first_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- writing ---------------------------------------------------------------------
    def _open_segment(self, first: int) -> StreamSegment:
        seg = StreamSegment(first, os.path.join(self.dir, f"{first:020d}.seg"))
        seg.fd = self.io.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        self.segments.append(seg)
        self.firsts.append(first)
        self.wseg = seg
        self.store.new_files.add(self.dir)
        return seg

    def append(self, ts: int, filter_value: bytes, ex_raw: bytes, rk_raw: bytes, header: bytes, body: bytes) -> int:
        """Buffer one record at :attr:`next_offset`; return that offset."""
        n = record_size(filter_value, ex_raw, rk_raw, header, body)
        seg = self.wseg
        if seg is None or (seg.size + n > self.max_segment_bytes and seg.count > 0):
            if seg is not None:
                self.flush()  # may fail and give offsets back: the next offset is read after it
                self._write_index(seg)
            seg = self._open_segment(self.next_offset)
            if len(self.segments) > 1:
                self.apply_retention(ts)
        offset = self.next_offset
        parts = encode_record(offset, ts, filter_value, ex_raw, rk_raw, header, body)
        seg.note(seg.size, ts)
        seg.size += n
        self.next_offset = offset + 1
        self.wbuf += parts
        self.wbuf_size += n
        self.store.appended_bytes += n
        self.store.dirty(self)
        return offset

    def flush(self) -> None:
        """Write buffered records (no fsync: the store's group commit does that)."""
        seg = self.wseg
        if not self.wbuf or seg is None:
            return
        data = b"".join(self.wbuf)
        self.wbuf = []
        self.wbuf_size = 0
        try:
            self.io.write_all(seg.fd, data)
        except OSError as exc:
            self._write_failed(seg, exc)
            return
        seg.flushed = seg.size
        seg.written = seg.count
        store = self.store
        store.sync_fds.add(seg.fd)
        if store.loop is not None:  # readable once the group commit that covers the write is done
            self.mark.wait(store.want_sync(), seg)

    def _write_failed(self, seg: StreamSegment, exc: OSError) -> None:
        """Forget the records of the failed batch (their publishers get nacks through the
        store) and give their offsets out again: offsets stay contiguous."""
        try:
            self.io.truncate(seg.fd, seg.flushed)
        except OSError:
            pass
        lost_from = seg.first + seg.written
        seg.size = seg.flushed
        seg.count = seg.written
        keep = (seg.count + INDEX_EVERY - 1) // INDEX_EVERY
        del seg.positions[keep:]
        del seg.stamps[keep:]
        self.next_offset = lost_from
        self.store.write_failed(WriteFailed(self, lost_from, exc))

    def sync(self) -> None:
        """Write what is buffered, fsync it and make it readable now (without an event
        loop, where there is no group commit: tools and tests)."""
        self.flush()
        for seg in self.segments:
            if seg.durable < seg.flushed and seg.fd >= 0:
                self.io.fdatasync(seg.fd)
                self.store.sync_fds.discard(seg.fd)
                seg.durable, seg.durable_count = seg.flushed, seg.written

    def became_durable(self, seg: StreamSegment, size: int, count: int) -> None:
        """The group commit made ``seg``'s first ``size`` bytes (``count`` records) durable."""
        if size > seg.durable:
            seg.durable, seg.durable_count = size, count

    def readable(self) -> None:
        """Records became durable: readers may go on."""
        if self.on_readable is not None and not self.deleted:
            self.on_readable()

    def sync_failed(self, fds: set[int]) -> None:
        """An fsync failed: what it covered never becomes readable, and the next record
        starts a new segment."""
        for old in self.segments:
            if old.fd in fds:
                old.given_up = True
        seg = self.wseg
        if seg is not None and seg.fd in fds:
            self.flush()
            self._write_index(seg)
            self.wseg = None

    def records_lost(self, lost_from: int) -> None:
        """The store's report of a failed write: already handled by :meth:`_write_failed`."""

    def roll_if_idle(self, now: float, idle: float) -> None:
        """Nothing to roll: a stream's segments are never settled."""

    # -- retention ----------------------------------------------------------------------
    def apply_retention(self, now_ms: int) -> int:
        """Drop whole segments from the head while over ``max_bytes`` or older than
        ``max_age_ms``; never the segment being written.  Return how many went."""
        dropped = 0
        while len(self.segments) > 1:
            head = self.segments[0]
            over_bytes = self.max_bytes is not None and self.size_bytes > self.max_bytes
            too_old = self.max_age_ms is not None and head.last_ts < now_ms - self.max_age_ms
            if not (over_bytes or too_old):
                break
            self._drop_head()
            dropped += 1
        self.dropped_segments += dropped
        return dropped

    def _drop_head(self) -> None:
        seg = self.segments.pop(0)
        self.firsts.pop(0)
        self._close(seg)
        self.io.unlink(seg.path)
        self.io.unlink(seg.path[:-4] + ".idx")
        self.store.new_files.add(self.dir)  # the next group commit makes the removal durable

    def _write_index(self, seg: StreamSegment) -> None:
        """Save a closed segment's index beside it (no fsync: a missing or stale index
        file only means a scan at recovery)."""
        if seg.flushed != seg.size:
            return  # its last write failed: recovery scans it
        raw = b"".join((INDEX_HEAD.pack(INDEX_MAGIC, seg.count, seg.size, seg.first_ts, seg.last_ts,
                                        len(seg.positions)), seg.positions.tobytes(), seg.stamps.tobytes()))
        path = seg.path[:-4] + ".idx"
        io = self.io
        try:
            fd = io.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                io.write_all(fd, raw)
            finally:
                io.close(fd)
            io.replace(path + ".tmp", path)
        except OSError as exc:
            log.warning("cannot write the index of %s: %s (recovery will scan it)", seg.path, exc)

    def _read_index(self, seg: StreamSegment) -> bool:
        """Load a closed segment's index file if it matches the segment file."""
        try:
            raw = self.io.read_file(seg.path[:-4] + ".idx")
            magic, count, size, first_ts, last_ts, n = INDEX_HEAD.unpack_from(raw, 0)
            seg_size = self.io.file_size(seg.path)
        except (OSError, struct.error):
            return False
        if magic != INDEX_MAGIC or size != seg_size or len(raw) != INDEX_HEAD.size + 16 * n \
                or n != (count + INDEX_EVERY - 1) // INDEX_EVERY:
            return False
        seg.positions.frombytes(raw[INDEX_HEAD.size : INDEX_HEAD.size + 8 * n])
        seg.stamps.frombytes(raw[INDEX_HEAD.size + 8 * n :])
        if n and seg.positions[0] != 0:  # written on a machine of the other byte order
            del seg.positions[:], seg.stamps[:]
            return False
        seg.count, seg.first_ts, seg.last_ts = count, first_ts, last_ts
        return True

    def _close(self, seg: StreamSegment) -> None:
        if seg.fd >= 0:
            self.store.sync_fds.discard(seg.fd)
            try:
                self.io.close(seg.fd)
            except OSError:
                pass
            seg.fd = -1

    # -- reading -------------------------------------------------------------------------
    def readable_end(self) -> int:
        """The offset just past the last durable record (where readers stop)."""
        for seg in reversed(self.segments):
            if seg.durable_count:
                return seg.first + seg.durable_count
        return self.first_offset

    def offset_at_time(self, ts_ms: int) -> int:
        """The first offset whose record was appended at or after ``ts_ms``."""
        for seg in self.segments:
            if seg.count and seg.last_ts >= ts_ms:
                if seg.first_ts >= ts_ms:
                    return seg.first
                # the last index point before ``ts_ms``, then record by record
                i = max(bisect.bisect_left(seg.stamps, ts_ms) - 1, 0)
                cur = Cursor(seg.first + i * INDEX_EVERY)
                cur.seg, cur.pos = seg, seg.positions[i]
                while True:
                    recs = self.read(cur, 256, READ_CHUNK)
                    if not recs:
                        return cur.offset
                    for r in recs:
                        if r[1] >= ts_ms:
                            return r[0]
        return self.next_offset

    def _locate(self, cur: Cursor) -> bool:
        """Point ``cur`` at the index point at or before its offset (the oldest record
        kept if that offset is gone); False if it is past what is durable."""
        first = self.first_offset
        if cur.offset < first:
            cur.offset = first
        if cur.offset >= self.readable_end():
            cur.seg = None
            return False
        seg = self.segments[bisect.bisect_right(self.firsts, cur.offset) - 1]
        cur.seg, cur.pos = seg, seg.positions[(cur.offset - seg.first) // INDEX_EVERY]
        return True

    def read(
        self, cur: Cursor, max_records: int, max_bytes: int, raw: list[bytes] | None = None
    ) -> list[StreamRecord]:
        """Up to ``max_records`` records (about ``max_bytes`` of headers and bodies) from
        ``cur`` on, advancing it; only records an fsync made durable.  A cursor
        whose segment was dropped by retention moves on to the oldest record kept.  With
        ``raw``, each record's bytes as stored are appended to it too."""
        seg = cur.seg
        if seg is None or not self.firsts or seg.first < self.firsts[0]:
            if not self._locate(cur):
                return []
            seg = cur.seg
            assert seg is not None
        out: list[StreamRecord] = []
        nbytes = 0
        while len(out) < max_records and nbytes < max_bytes:
            limit = seg.durable
            if cur.pos >= limit:
                i = bisect.bisect_right(self.firsts, seg.first)
                if i >= len(self.segments) or (limit < seg.size and not seg.given_up):
                    break  # the end of what is durable
                if seg.fd >= 0 and seg.fd not in self.store.sync_fds:
                    self.io.close(seg.fd)  # read through: a long stream must not hold a descriptor per segment
                    seg.fd = -1
                seg = self.segments[i]
                cur.seg, cur.pos = seg, 0
                continue
            if seg.fd < 0:
                seg.fd = self.io.open(seg.path, os.O_RDONLY)
            data = self.io.pread(seg.fd, min(READ_CHUNK, limit - cur.pos), cur.pos)
            n = len(data)
            if n >= 9 and 8 + REC_HEAD.unpack_from(data, 0)[0] > n:
                data = self.io.pread(seg.fd, 8 + REC_HEAD.unpack_from(data, 0)[0], cur.pos)  # one big record
                n = len(data)
            mv = memoryview(data)
            off = 0
            while off + 9 <= n and len(out) < max_records and nbytes < max_bytes:
                end = off + 8 + REC_HEAD.unpack_from(data, off)[0]
                if end > n:
                    break
                if STREAM_META.unpack_from(data, off + 9)[0] >= cur.offset:
                    rec = decode_payload(mv[off + 9 : end])
                    out.append(rec)
                    nbytes += len(rec[6]) + len(rec[5])
                    if raw is not None:
                        raw.append(data[off:end])
                    cur.offset = rec[0] + 1
                off = end  # records before the offset asked for are skipped (seeking from an index point)
            if off == 0:
                break  # a short read: the rest is not written yet
            cur.pos += off
        return out

    def peek_plan(self, offset: int, max_segments: int) -> PeekPlan:
        """Where the records from ``offset`` on are (clamped to what is kept), in at
        most ``max_segments`` segments, for :func:`storage.stream_peek.read_plan` to
        read off the loop.  Only durable records are in it."""
        offset = max(offset, self.first_offset)
        if offset >= self.readable_end():
            return PeekPlan(offset, ())
        i = bisect.bisect_right(self.firsts, offset) - 1
        seg = self.segments[i]
        return PeekPlan(offset, self._spans(i, seg.positions[(offset - seg.first) // INDEX_EVERY], max_segments))

    def peek_plan_since(self, ts_ms: int, max_segments: int) -> PeekPlan:
        """:meth:`peek_plan` for the records appended at or after ``ts_ms``: it starts
        at the index point before that time and the reader skips older records, so
        finding the place reads no record here."""
        end = self.readable_end()
        for i, seg in enumerate(self.segments):
            if seg.count and seg.last_ts >= ts_ms and seg.first < end:
                k = max(bisect.bisect_left(seg.stamps, ts_ms) - 1, 0)
                return PeekPlan(seg.first + k * INDEX_EVERY, self._spans(i, seg.positions[k], max_segments), ts_ms)
        return PeekPlan(self.next_offset, ())

    def _spans(self, i: int, start: int, max_segments: int) -> tuple[SegmentSpan, ...]:
        """Segments ``i``, ``i + 1``... (at most ``max_segments``), the first from byte ``start``."""
        spans = []
        for seg in self.segments[i : i + max_segments]:
            spans.append(SegmentSpan(seg.path, start, seg.durable))
            start = 0
        return tuple(spans)

    def read_raw(self, cur: Cursor, max_bytes: int) -> bytes:
        """Whole records from ``cur`` on, byte for byte as stored (about ``max_bytes``),
        advancing ``cur``: what a follower replicating this stream from an offset is sent.
        Each record carries its offset and CRC, so the follower can check what it got."""
        parts: list[bytes] = []
        self.read(cur, 1 << 30, max_bytes, parts)
        return b"".join(parts)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Write what is buffered and, on a clean stop, the write segment's index file too
        (the next start then reads no segment; after a crash it scans the last one)."""
        if not self.deleted:
            try:
                self.flush()
            except OSError as exc:
                log.error("flushing %s at close failed: %s", self.dir, exc)
            if self.wseg is not None and self.wseg.count:
                self._write_index(self.wseg)
        for seg in self.segments:
            self._close(seg)

    def destroy(self) -> None:
        """The stream is deleted: remove every file of it."""
        self.wbuf = []
        self.deleted = True
        self.close()
        self.segments.clear()
        self.firsts.clear()
        self.wseg = None
        self.io.rmtree(self.dir)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Rebuild the segment table from the files; return the problems found.  A torn or
        corrupt tail is cut; the stream goes on writing into a new segment."""
        problems: list[str] = []
        io = self.io
        names = sorted(n for n in io.listdir(self.dir) if n.endswith(".seg"))
        for name in names:
            path = os.path.join(self.dir, name)
            try:
                first = int(name[:-4])
            except ValueError:
                problems.append(f"{path}: not a stream segment name; ignored")
                continue
            if first < self.next_offset:
                problems.append(f"{path}: overlaps the segment before it; ignored")
                continue
            seg = StreamSegment(first, path)
            size = io.file_size(path)
            indexed = self._read_index(seg)
            valid_end = size if indexed else self._scan(seg, problems)
            if not indexed and valid_end == size and valid_end:
                # found after a crash: it may have been read back from the page cache,
                # and readers may be given it only once it is durable
                fd = io.open(path, os.O_RDONLY)
                try:
                    io.fdatasync(fd)
                finally:
                    io.close(fd)
            if valid_end < size:
                problems.append(f"{path}: torn or corrupt tail cut at byte {valid_end} of {size}")
                fd = io.open(path, os.O_RDWR)
                try:
                    io.truncate(fd, valid_end)
                    io.fdatasync(fd)
                finally:
                    io.close(fd)
            seg.size = seg.flushed = seg.durable = valid_end
            seg.written = seg.durable_count = seg.count
            self.next_offset = max(self.next_offset, first)
            if seg.count == 0:
                if name != names[-1]:
                    io.unlink(path)
                # the last one stays, empty, to keep the next offset; the next append reopens it
                continue
            self.segments.append(seg)
            self.firsts.append(first)
            self.next_offset = seg.end
        # recovered segments are closed: the next append opens a new one
        return problems

    def _scan(self, seg: StreamSegment, problems: list[str]) -> int:
        """Index a segment file record by record; return where its valid records end."""
        pos = 0
        expect = seg.first
        crc32 = zlib.crc32
        io = self.io
        fd = io.open(seg.path, os.O_RDONLY)
        try:
            buf = b""
            base = 0  # file position of buf[0]
            while True:
                chunk = io.pread(fd, SCAN_CHUNK, base + len(buf))
                if not chunk:
                    return pos
                buf = buf[pos - base :] + chunk
                base = pos
                mv = memoryview(buf)
                off = 0
                n = len(buf)
                while off + 9 <= n:
                    length, crc, rtype = REC_HEAD.unpack_from(buf, off)
                    end = off + 8 + length
                    if length < 17 or length > MAX_RECORD:
                        return base + off
                    if end > n:
                        break
                    if rtype != REC_STREAM or crc32(mv[off + 8 : end]) != crc:
                        return base + off
                    offset, ts = STREAM_META.unpack_from(buf, off + 9)
                    if offset != expect:
                        problems.append(f"{seg.path}: record at byte {base + off} has offset {offset}, "
                                        f"expected {expect}")
                        return base + off
                    seg.note(base + off, ts)
                    expect += 1
                    off = end
                pos = base + off
        finally:
            io.close(fd)


class DurableMark:
    """A stream log's :class:`~storage.log.SyncWaiter`: which of its writes wait for
    which group-commit epoch, and what becomes readable when that epoch is durable."""

    __slots__ = ("slog", "pending")

    def __init__(self, slog: StreamLog) -> None:
        self.slog = slog
        self.pending: deque[tuple[int, StreamSegment, int, int]] = deque()  # (epoch, segment, bytes, records)

    def wait(self, epoch: int, seg: StreamSegment) -> None:
        """Everything written to ``seg`` so far is durable once ``epoch`` is."""
        self.pending.append((epoch, seg, seg.flushed, seg.written))
        self.slog.store.sync_waiters.add(self)

    def synced(self, epoch: int) -> bool:
        pending = self.pending
        moved = False
        while pending and pending[0][0] <= epoch:
            _e, seg, size, count = pending.popleft()
            self.slog.became_durable(seg, size, count)
            moved = True
        if moved:
            self.slog.readable()
        return bool(pending) and not self.slog.deleted

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        """Writes of a failed epoch never become readable (their segment is given up)."""
        pending = self.pending
        while pending and pending[0][0] <= epoch:
            pending.popleft()
        return bool(pending) and not self.slog.deleted


def open_stream_log(store: LogStore, vhost: str, name: str) -> StreamLog:
    """The stream log of queue ``name`` in ``vhost``, made and registered with the store."""
    d = store.queue_dir(vhost, name)
    existing = store.logs.get(d)
    if isinstance(existing, StreamLog):
        return existing
    store.io.makedirs(d)
    try:
        write_identity(store.io, d, vhost, name)
        # the directory's entry must survive a power loss before any record confirmed in it does
        store.io.fsync_dir(d)
        store.io.fsync_dir(store.msg_dir)
    except OSError:
        store.io.rmtree(d)
        raise
    slog = StreamLog(store, d)
    store.add_log(slog)
    return slog
