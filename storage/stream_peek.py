"""Reading a few records of a stream off the event loop, for a look without a consumer.

Theory of operation
-------------------
A :class:`~storage.stream_log.StreamLog` belongs to the event loop: its segment
table changes as records are appended and retention drops segments, and its
readers share its file descriptors.  A peek must not stall the loop on a big
stream, so it is done in two steps:

1. On the loop, :meth:`StreamLog.peek_plan` (or :meth:`StreamLog.peek_plan_since`
   for a time) takes a :class:`PeekPlan`: the offset asked for and, for the
   segment holding it and the ones after it (at most one per record wanted), the
   file path, the byte position to start at (the sparse index point at or before
   that offset, or before that time) and the byte limit written so far.  That is
   a few numbers per segment, copied, so nothing the plan holds changes afterwards.
2. In a worker thread, :func:`read_plan` opens those files with descriptors of
   its own and reads records in order: records before the offset (or older than
   the time) are skipped by their length, only their heads read (which hold the
   offset and the timestamp), and of each wanted record only the metadata, the
   header and the first ``body_budget`` bytes of the body are read.  It stops at
   ``max_records`` or at the end of the plan; if retention removed the first
   segment in the meantime, the caller takes a new plan.

So a peek costs at most ``INDEX_EVERY`` record heads to seek, ``max_records``
records' metadata, and the payload bytes it returns, whatever the size of the
stream or of its messages.  Checksums are not verified here: recovery does that.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .fileio import OS, FileIO
from .records import REC_HEAD

# record head (length, crc, type) then the offset and timestamp of a stream record
_META = struct.Struct(">QQ")
_HEAD_AND_META = REC_HEAD.size + _META.size
_FIRST_READ = 4096  # bytes read first from each wanted record (metadata, header, start of the body)


@dataclass(frozen=True)
class SegmentSpan:
    """Where to read in one segment file: from byte ``start`` up to byte ``limit``."""

    path: str
    start: int
    limit: int


@dataclass(frozen=True)
class PeekPlan:
    """The records from ``offset`` on (appended at or after ``since_ms``), as the
    segment files held them when planned."""

    offset: int
    spans: tuple[SegmentSpan, ...]
    since_ms: int = 0


@dataclass(frozen=True)
class PeekedRecord:
    """One record as a peek shows it: ``body`` holds the first bytes of a body of
    ``body_size`` bytes."""

    offset: int
    timestamp_ms: int
    ex_raw: bytes
    rk_raw: bytes
    header: bytes
    body: bytes
    body_size: int


def read_plan(
    plan: PeekPlan, max_records: int, body_budget: int, body_cut: int | None, io: FileIO = OS
) -> list[PeekedRecord]:
    """Up to ``max_records`` records from ``plan.offset`` on (run in a worker thread).
    Bodies are cut to ``body_cut`` bytes each (no cut if None) and to ``body_budget``
    bytes in all; a record past the budget comes with an empty body.  FileNotFoundError
    if the first segment is gone (retention removed it after the plan was taken)."""
    out: list[PeekedRecord] = []
    since = plan.since_ms  # once a record is taken, every later one is (clocks may step back)
    for n, span in enumerate(plan.spans):
        try:
            fd = io.open(span.path, os.O_RDONLY)
        except FileNotFoundError:
            if n == 0:
                raise  # retention dropped it since the plan: the caller plans again
            break  # a later one cannot go before the first: the stream was deleted meanwhile
        try:
            pos = span.start
            while pos + _HEAD_AND_META <= span.limit and len(out) < max_records:
                head = io.pread(fd, _HEAD_AND_META, pos)
                if len(head) < _HEAD_AND_META:
                    break
                length = REC_HEAD.unpack_from(head, 0)[0]
                end = pos + 8 + length
                if end > span.limit:
                    break
                offset, ts = _META.unpack_from(head, REC_HEAD.size)
                if offset >= plan.offset and ts >= since:
                    since = 0
                    want = body_budget if body_cut is None else min(body_cut, body_budget)
                    out.append(_read_record(io, fd, pos, end, max(want, 0)))
                    body_budget -= len(out[-1].body)
                pos = end
        finally:
            io.close(fd)
        if len(out) >= max_records:
            break
    return out


def _read_record(io: FileIO, fd: int, pos: int, end: int, body_wanted: int) -> PeekedRecord:
    """The record at byte ``pos`` (ending at ``end``) with at most ``body_wanted`` bytes of body."""
    data = io.pread(fd, min(end - pos, _FIRST_READ + body_wanted), pos)
    p = REC_HEAD.size
    offset, ts = _META.unpack_from(data, p)
    o = p + _META.size
    o += 1 + data[o]  # the filter value
    ex_raw = bytes(data[o : o + 1 + data[o]])
    o += 1 + data[o]
    rk_raw = bytes(data[o : o + 1 + data[o]])
    o += 1 + data[o]
    hl = int.from_bytes(data[o : o + 4], "big")
    o += 4
    body_at = o + hl
    if body_at + min(body_wanted, end - pos - body_at) > len(data):  # a big header, or more body than read
        data = io.pread(fd, min(end - pos, body_at + body_wanted), pos)
    body_size = end - pos - body_at
    return PeekedRecord(offset, ts, ex_raw, rk_raw, bytes(data[o:body_at]),
                        bytes(data[body_at : body_at + min(body_wanted, body_size)]), body_size)
