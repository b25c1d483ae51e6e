"""The on-disk format of a queue log, and reading it without changing anything.

A record is ``length:u32 crc32:u32 type:u8 payload``; ``length`` counts the type
byte and the payload, and the CRC covers the same bytes.  A message record's
payload is ``flags:u8 [deadline:u64] exchange:shortstr routing_key:shortstr
header_len:u32 header body`` (flags bit 0: persistent, bit 1: a deadline
follows, bit 2: marked by the queue that wrote it, so that recovery finds such
records without reading them again; a quorum queue marks its high-priority
messages).  A message is named by its *ref* ``segment << 32 | offset``
(:func:`ref_of`, :func:`segment_end`): refs grow with the append order, so they
double as a queue's sequence numbers.  Each segment ``NNNNNNNN.seg`` has an ack
file ``NNNNNNNN.ack`` of settled offsets (u32 each) and, for queues that count
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

from .files import open_private, write_all

REC_MSG = 1
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
    el = p[o]
    ex_raw = bytes(p[o : o + 1 + el])
    o += 1 + el
    rl = p[o]
    rk_raw = bytes(p[o : o + 1 + rl])
    o += 1 + rl
    hl = U32.unpack_from(p, o)[0]
    o += 4
    header = bytes(p[o : o + hl])
    body = bytes(p[o + hl :])
    return bool(flags & 1), deadline, ex_raw, rk_raw, header, body


def decode_message(payload: bytes | memoryview) -> tuple[bool, bytes, bytes, bytes, bytes]:
    """(persistent, ex_raw, rk_raw, header, body) of a message record payload."""
    persistent, _d, ex_raw, rk_raw, header, body = decode_message_full(payload)
    return persistent, ex_raw, rk_raw, header, body



def _read_offsets(path: str) -> array:
    """The u32 offsets of an ack or returns file (empty if there is none)."""
    a = array("I")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return a
    n = len(raw) // 4
    a.frombytes(raw[: n * 4])
    if a.itemsize == 4 and struct.pack("=I", 1) != struct.pack(">I", 1):
        a.byteswap()
    return a


def read_acks(path: str) -> set[int]:
    return set(_read_offsets(path))


def read_returns(path: str) -> dict[int, int]:
    """How often each record of a segment went back to its queue: offset -> count."""
    counts: dict[int, int] = {}
    for off in _read_offsets(path):
        counts[off] = counts.get(off, 0) + 1
    return counts


def scan_segment(
    data: bytes, sid: int, acked: set[int], marked: list[int] | None = None
) -> tuple[int, list[int], list[str], int]:
    """Walk the records of one segment: (valid end, live persistent refs, problems,
    body bytes of the live records); the live refs of marked records are added to ``marked``."""
    off = 0
    n = len(data)
    live: list[int] = []
    live_bytes = 0
    bad: list[str] = []
    unpack = REC_HEAD.unpack_from
    crc32 = zlib.crc32
    base = sid << 32
    mv = memoryview(data)
    while off + 9 <= n:
        length, crc, rtype = unpack(data, off)
        end = off + 8 + length
        if length < 1 or length > MAX_RECORD or end > n:
            break
        if crc32(mv[off + 8 : end]) != crc:
            # a bad record followed by a good one is skipped; otherwise it is the tail
            if _next_record_ok(data, end):
                bad.append(f"corrupt record at byte {off} skipped")
                off = end
                continue
            break
        if rtype == REC_MSG and off not in acked and data[off + 9] & 1:
            live.append(base | off)
            if marked is not None and data[off + 9] & 4:
                marked.append(base | off)
            # body bytes, for x-max-length-bytes accounting
            o = off + 10 + (8 if data[off + 9] & 2 else 0)
            o += 1 + data[o]
            o += 1 + data[o]
            hl = U32.unpack_from(data, o)[0]
            live_bytes += end - (o + 4 + hl)
        off = end
    return off, live, bad, live_bytes


def scan_records(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """Every intact record of one segment's bytes: (offset, type, payload), read without
    changing anything; a corrupt record is skipped and a torn tail ends the walk."""
    off = 0
    n = len(data)
    mv = memoryview(data)
    while off + 9 <= n:
        length, crc, rtype = REC_HEAD.unpack_from(data, off)
        end = off + 8 + length
        if length < 1 or length > MAX_RECORD or end > n:
            return
        if zlib.crc32(mv[off + 8 : end]) == crc:
            yield off, rtype, mv[off + 9 : end]
        elif not _next_record_ok(data, end):
            return
        off = end


def _next_record_ok(data: bytes, off: int) -> bool:
    if off + 9 > len(data):
        return False
    length, crc, _t = REC_HEAD.unpack_from(data, off)
    end = off + 8 + length
    if length < 1 or end > len(data):
        return False
    return zlib.crc32(memoryview(data)[off + 8 : end]) == crc



def write_identity(directory: str, vhost: str, name: str) -> None:
    """Name the queue a log directory belongs to (directories are named by a
    hash), so that data found without metadata can still be identified."""
    path = os.path.join(directory, IDENTITY_FILE)
    if os.path.exists(path):
        return
    raw = json.dumps({"vhost": vhost, "queue": name}, ensure_ascii=False).encode("utf-8")
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_identity(directory: str) -> tuple[str | None, str | None]:
    """(vhost, queue name) a log directory was made for, or (None, None)."""
    try:
        with open(os.path.join(directory, IDENTITY_FILE), "rb") as f:
            d = json.loads(f.read())
        return str(d["vhost"]), str(d["queue"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def read_live_records(directory: str) -> Iterator[tuple[bool, int, bytes, bytes, bytes, bytes]]:
    """The unsettled persistent messages of a log directory, in order, read without
    changing anything: (persistent, deadline, ex_raw, rk_raw, header, body)."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".seg"))
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        sid = int(name[:-4])
        _end, live, _bad, _nbytes = scan_segment(data, sid, read_acks(path[:-4] + ".ack"))
        for ref in live:
            off = ref & 0xFFFFFFFF
            length = REC_HEAD.unpack_from(data, off)[0]
            yield decode_message_full(memoryview(data)[off + 9 : off + 8 + length])
