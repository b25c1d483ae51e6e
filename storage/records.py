"""The on-disk format of a queue log, and reading it without changing anything.

A record is ``length:u32 crc32:u32 type:u8 payload``; ``length`` counts the type
byte and the payload, and the CRC covers the same bytes.  A message record's
payload is ``flags:u8 [deadline:u64] exchange:shortstr routing_key:shortstr
header_len:u32 header body`` (flags bit 0: persistent, bit 1: a deadline
follows, bit 2: marked by the queue that wrote it, so that recovery finds such
records without reading them again; a quorum queue marks its high-priority
messages).  A message is named by its *ref* ``segment << 32 | offset``
(:func:`ref_of`, :func:`segment_end`): refs grow with the append order, so they
double as a queue's sequence numbers.  An acks record's payload is the offsets
(u32 each) of earlier records in the same segment that were settled: a queue
settles the records of the segment it is writing this way, so that one fsync
covers its publishes and its acks.  Records of older segments are settled in
the segment's ack file ``NNNNNNNN.ack`` (offsets, u32 each).  For queues that count
deliveries (quorum queues), a returns file ``NNNNNNNN.ret`` with the offset of a
record each time it went back to its queue; ``queue.json`` names the queue a
directory was made for.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from array import array
from collections.abc import Iterator

from .fileio import OS, FileIO

REC_MSG = 1
REC_ACKS = 2
REC_MSG_BYTE = bytes((REC_MSG,))
REC_ACKS_BYTE = bytes((REC_ACKS,))
REC_HEAD = struct.Struct(">IIB")  # length, crc, type
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
MAX_RECORD = 256 * 1024 * 1024
# the most a message record takes beyond its header and body (deadline, exchange and routing key)
RECORD_OVERHEAD_MAX = REC_HEAD.size + 1 + 8 + 256 + 256 + U32.size
IDENTITY_FILE = "queue.json"
LOST_FOUND = "lost+found"


def ref_of(segment: int, offset: int) -> int:
    """The ref of the record at ``offset`` in segment ``segment``."""
    return (segment << 32) | offset


def segment_of(ref: int) -> int:
    """The segment number a ref points into."""
    return ref >> 32


def offset_of(ref: int) -> int:
    """The byte offset a ref points to within its segment."""
    return ref & 0xFFFFFFFF


def segment_end(ref: int) -> int:
    """The first ref past the segment ``ref`` points into."""
    return ((ref >> 32) + 1) << 32


def encode_message(
    persistent: bool, ex_raw: bytes, rk_raw: bytes, header: bytes, body: bytes, deadline: int = 0, marked: bool = False
) -> list:
    """The parts of one message record (for ``b''.join``).  ``deadline`` is the
    absolute expiry time in ms since the epoch (0: none)."""
    flags = (1 if persistent else 0) | (2 if deadline else 0) | (4 if marked else 0)
    head_and_meta = b"".join(
        (
            bytes((flags,)),
            U64.pack(deadline) if deadline else b"",
            ex_raw,
            rk_raw,
            U32.pack(len(header)),
            header,
        )
    )
    crc = zlib.crc32(body, zlib.crc32(head_and_meta, zlib.crc32(b"\x01")))
    length = 1 + len(head_and_meta) + len(body)
    return [REC_HEAD.pack(length, crc, REC_MSG), head_and_meta, body]


def record_size(ex_raw: bytes, rk_raw: bytes, header: bytes, body: bytes) -> int:
    """Bytes one message record takes in a segment (counting a deadline)."""
    return REC_HEAD.size + 1 + 8 + len(ex_raw) + len(rk_raw) + U32.size + len(header) + len(body)


def decode_message_full(payload: bytes | memoryview) -> tuple[bool, int, bytes, bytes, bytes, bytes]:
    """(persistent, deadline, ex_raw, rk_raw, header, body) of a message record payload."""
    p = payload
    flags = p[0]
    o = 1
    deadline = 0
    if flags & 2:
        deadline = U64.unpack_from(p, 1)[0]
        o = 9
    return (bool(flags & 1), deadline, *decode_routed(p, o))


def decode_routed(p: bytes | memoryview, o: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(ex_raw, rk_raw, header, body) of the part every message record ends with, from ``o``:
    ``exchange:shortstr routing_key:shortstr header_len:u32 header body`` (a stream's records too)."""
    el = p[o]
    ex_raw = bytes(p[o : o + 1 + el])
    o += 1 + el
    rl = p[o]
    rk_raw = bytes(p[o : o + 1 + rl])
    o += 1 + rl
    hl = U32.unpack_from(p, o)[0]
    o += 4
    return ex_raw, rk_raw, bytes(p[o : o + hl]), bytes(p[o + hl :])


def decode_message(payload: bytes | memoryview) -> tuple[bool, bytes, bytes, bytes, bytes]:
    """(persistent, ex_raw, rk_raw, header, body) of a message record payload."""
    persistent, _d, ex_raw, rk_raw, header, body = decode_message_full(payload)
    return persistent, ex_raw, rk_raw, header, body



def encode_acks(offsets: bytes) -> bytes:
    """An acks record settling ``offsets`` (packed u32s) of the segment it is written to."""
    crc = zlib.crc32(offsets, zlib.crc32(REC_ACKS_BYTE))
    return REC_HEAD.pack(1 + len(offsets), crc, REC_ACKS) + offsets


def _read_offsets(io: FileIO, path: str) -> array:
    """The u32 offsets of an ack or returns file (empty if there is none)."""
    try:
        raw = io.read_file(path)
    except FileNotFoundError:
        return array("I")
    return _unpack_offsets(raw)


def read_acks(io: FileIO, path: str) -> set[int]:
    return set(_read_offsets(io, path))


def read_returns(io: FileIO, path: str) -> dict[int, int]:
    """How often each record of a segment went back to its queue: offset -> count."""
    counts: dict[int, int] = {}
    for off in _read_offsets(io, path):
        counts[off] = counts.get(off, 0) + 1
    return counts


def scan_segment(
    data: bytes, sid: int, acked: set[int], marked: list[int] | None = None
) -> tuple[int, list[int], list[str], int]:
    """Walk the records of one segment: (valid end, live persistent refs, problems,
    body bytes of the live records); the live refs of marked records are added to ``marked``.
    A record is live unless its offset is in ``acked`` (the ack file) or in an acks
    record of the segment itself.

    A record whose length or CRC is wrong is not the end of the segment if a valid
    record follows somewhere after it: the scan resynchronises on the next offset
    where a record with a valid CRC starts (:func:`_resync`), reports the bytes it
    skipped, and goes on.  Only when no valid record follows is the rest a torn or
    corrupt tail, and the valid end is where it starts."""
    off = 0
    n = len(data)
    candidates: list[tuple[int, int]] = []  # (offset, body bytes) of persistent message records
    inline_acks: set[int] = set()
    bad: list[str] = []
    unpack = REC_HEAD.unpack_from
    crc32 = zlib.crc32
    mv = memoryview(data)
    while off + 9 <= n:
        length, crc, rtype = unpack(data, off)
        end = off + 8 + length
        if length < 1 or length > MAX_RECORD or end > n or crc32(mv[off + 8 : end]) != crc:
            nxt = _resync(data, off + 1)
            if nxt < 0:
                break  # nothing valid follows: the tail
            bad.append(f"corrupt record at byte {off} skipped ({nxt - off} bytes)")
            off = nxt
            continue
        if rtype == REC_MSG and data[off + 9] & 1:
            # body bytes, for x-max-length-bytes accounting
            o = off + 10 + (8 if data[off + 9] & 2 else 0)
            o += 1 + data[o]
            o += 1 + data[o]
            hl = U32.unpack_from(data, o)[0]
            candidates.append((off, end - (o + 4 + hl)))
        elif rtype == REC_ACKS:
            inline_acks.update(_unpack_offsets(mv[off + 9 : end]))
        off = end
    base = sid << 32
    live: list[int] = []
    live_bytes = 0
    for roff, nbytes in candidates:
        if roff in acked or roff in inline_acks:
            continue
        live.append(base | roff)
        live_bytes += nbytes
        if marked is not None and data[roff + 9] & 4:
            marked.append(base | roff)
    return off, live, bad, live_bytes


def _unpack_offsets(raw: bytes | memoryview) -> array:
    """Packed big-endian u32 offsets (a trailing partial one is ignored)."""
    a = array("I")
    a.frombytes(raw[: len(raw) // 4 * 4])
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        a.byteswap()
    return a


def _resync(data: bytes, start: int) -> int:
    """The first offset at or after ``start`` where a whole record (a message or an
    acks record) with a valid CRC starts, or -1.  Candidates are found by their type
    byte, so the scan costs one ``find`` per candidate rather than Python work per byte."""
    n = len(data)
    mv = memoryview(data)
    found = -1
    for type_byte in (REC_MSG_BYTE, REC_ACKS_BYTE):
        pos = start + 8
        limit = n if found < 0 else found + 8
        while True:
            pos = data.find(type_byte, pos, limit)
            if pos < 0:
                break
            off = pos - 8
            length, crc, _t = REC_HEAD.unpack_from(data, off)
            end = off + 8 + length
            if 1 <= length <= MAX_RECORD and end <= n and zlib.crc32(mv[off + 8 : end]) == crc:
                found = off
                break
            pos += 1
    return found


def scan_records(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """Every intact record of one segment's bytes: (offset, type, payload), read without
    changing anything; a damaged record is skipped (see :func:`scan_segment`) and a torn tail
    ends the walk."""
    off = 0
    n = len(data)
    mv = memoryview(data)
    while off + 9 <= n:
        length, crc, rtype = REC_HEAD.unpack_from(data, off)
        end = off + 8 + length
        if length < 1 or length > MAX_RECORD or end > n or zlib.crc32(mv[off + 8 : end]) != crc:
            nxt = _resync(data, off + 1)
            if nxt < 0:
                return
            off = nxt
            continue
        yield off, rtype, mv[off + 9 : end]
        off = end


def write_identity(io: FileIO, directory: str, vhost: str, name: str, sync: bool = True) -> None:
    """Name the queue a log directory belongs to (directories are named by a
    hash), so that data found without metadata can still be identified.  With
    ``sync`` False the caller has the file synced (a store's next group commit)."""
    path = os.path.join(directory, IDENTITY_FILE)
    if io.exists(path):
        return
    raw = json.dumps({"vhost": vhost, "queue": name}, ensure_ascii=False).encode("utf-8")
    fd = io.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        io.write_all(fd, raw)
        if sync:
            io.fdatasync(fd)
    finally:
        io.close(fd)


def read_identity(directory: str, io: FileIO = OS) -> tuple[str | None, str | None]:
    """(vhost, queue name) a log directory was made for, or (None, None)."""
    try:
        d = json.loads(io.read_file(os.path.join(directory, IDENTITY_FILE)))
        return str(d["vhost"]), str(d["queue"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def read_live_records(
    directory: str, io: FileIO = OS
) -> Iterator[tuple[bool, int, bytes, bytes, bytes, bytes]]:
    """The unsettled persistent messages of a log directory, in order, read without
    changing anything: (persistent, deadline, ex_raw, rk_raw, header, body)."""
    names = sorted(n for n in io.listdir(directory) if n.endswith(".seg"))
    for name in names:
        path = os.path.join(directory, name)
        data = io.read_file(path)
        sid = int(name[:-4])
        _end, live, _bad, _nbytes = scan_segment(data, sid, read_acks(io, path[:-4] + ".ack"))
        for ref in live:
            off = ref & 0xFFFFFFFF
            length = REC_HEAD.unpack_from(data, off)[0]
            yield decode_message_full(memoryview(data)[off + 9 : off + 8 + length])
