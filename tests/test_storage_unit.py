"""The segment log (storage.log) driven directly: no broker, no network.

Each test works in its own temporary data directory with real files; the only
knob turned is ``SEGMENT_SIZE`` (configuration) to get several segments from
few records.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

import storage.log as slog
from storage.log import (
    REC_ACKS,
    REC_HEAD,
    REC_MSG,
    DataDirLocked,
    LogStore,
    decode_message,
    encode_message,
)
from storage.records import read_live_records

EX = b"\x00"  # shortstr ''
RK = b"\x01k"  # shortstr 'k'


def hdr(i: int) -> bytes:
    """A content header-ish blob (the log stores it opaquely)."""
    return b"\x00\x3c\x00\x00" + struct.pack(">Q", i) + b"\x90\x00" + b"\x0atext/plain"


def body(i: int, size: int = 0) -> bytes:
    b = f"message-{i:05d}|".encode()
    return b + bytes((i + j) % 256 for j in range(size))


def seg_files(qdir: str, ext: str = ".seg") -> list[str]:
    return sorted(os.path.join(qdir, n) for n in os.listdir(qdir) if n.endswith(ext))


@pytest.fixture
def stores(tmp_path):
    """open_store() -> an opened LogStore on tmp_path; all closed at the end."""
    made: list[LogStore] = []

    def open_store() -> LogStore:
        s = LogStore(str(tmp_path))
        s.open()
        made.append(s)
        return s

    yield open_store
    for s in made:
        try:
            s.close()
        except Exception:
            pass


def reopen(stores, prev: LogStore | None, vhost: str = "/", name: str = "q"):
    """Close ``prev`` (like a clean stop), open a new store, recover the queue."""
    if prev is not None:
        prev.close()
    s = stores()
    qlog = s.queue_log(vhost, name)
    refs, upto, problems = qlog.recover()
    return s, qlog, list(refs), upto, problems


def contents(qlog, refs) -> list[tuple]:
    return [qlog.read(r) for r in refs]


# -- record format ----------------------------------------------------------------


def test_encode_decode_round_trip():
    header = hdr(7) + bytes(range(256))
    b = bytes(range(256)) * 3 + b"\x00\xff"
    for persistent in (True, False):
        raw = b"".join(encode_message(persistent, b"\x04amq.", b"\x03a.b", header, b))
        length, crc, rtype = REC_HEAD.unpack_from(raw, 0)
        assert rtype == REC_MSG
        assert length == len(raw) - 8  # length counts the type byte and the payload
        assert zlib.crc32(raw[8:]) == crc  # the CRC covers the same bytes
        assert decode_message(raw[9:]) == (persistent, b"\x04amq.", b"\x03a.b", header, b)
    # empty everything
    raw = b"".join(encode_message(True, b"\x00", b"\x00", b"", b""))
    assert decode_message(memoryview(raw)[9:]) == (True, b"\x00", b"\x00", b"", b"")


# -- append / flush / recover ---------------------------------------------------------


def test_append_recover_in_order_with_content(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 50)) for i in range(20)]
    assert refs == sorted(refs) and len(set(refs)) == 20
    # a record can be read back before and after the flush
    assert q.read(refs[3]) == (True, EX, RK, hdr(3), body(3, 50))
    q.flush()
    assert q.read(refs[19]) == (True, EX, RK, hdr(19), body(19, 50))
    s2, q2, got, upto, problems = reopen(stores, s)
    assert problems == []
    assert upto == 0
    assert got == refs
    assert contents(q2, got) == [(True, EX, RK, hdr(i), body(i, 50)) for i in range(20)]
    # appending after recovery goes after the recovered records
    r = q2.append(True, EX, RK, hdr(99), body(99))
    assert r > got[-1]
    _s3, q3, got3, _u, problems = reopen(stores, s2)
    assert problems == []
    assert got3 == got + [r]
    assert q3.read(r) == (True, EX, RK, hdr(99), body(99))


def test_queues_are_separate(stores):
    s = stores()
    a = s.queue_log("/", "q")
    b = s.queue_log("other", "q")
    c = s.queue_log("/", "q2")
    assert len({a.dir, b.dir, c.dir}) == 3
    assert s.queue_log("/", "q") is a
    ra = a.append(True, EX, RK, hdr(1), b"A")
    rb = b.append(True, EX, RK, hdr(2), b"B")
    s.close()
    s2 = stores()
    qa, qb, qc = s2.queue_log("/", "q"), s2.queue_log("other", "q"), s2.queue_log("/", "q2")
    la, lb, lc = qa.recover()[0], qb.recover()[0], qc.recover()[0]
    assert [qa.read(r)[4] for r in la] == [b"A"]
    assert [qb.read(r)[4] for r in lb] == [b"B"]
    assert list(lc) == []
    assert list(la) == [ra] and list(lb) == [rb]


def test_acked_records_not_recovered(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(10)]
    q.flush()
    for i in (0, 3, 4, 9):
        q.settle(refs[i])
    s2, q2, got, _u, problems = reopen(stores, s)
    assert problems == []
    keep = [i for i in range(10) if i not in (0, 3, 4, 9)]
    assert got == [refs[i] for i in keep]
    assert [q2.read(r)[4] for r in got] == [body(i) for i in keep]
    # settling after a recovery is remembered too
    q2.settle(got[0])
    _s3, _q3, got3, _u, _p = reopen(stores, s2)
    assert got3 == got[1:]


def test_settle_before_flush_is_not_recovered(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(3)]
    q.settle(refs[1])  # acked before anything was written
    _s2, _q2, got, _u, _p = reopen(stores, s)
    assert got == [refs[0], refs[2]]


def test_write_segment_acks_go_into_the_segment(stores):
    """Acks of the segment being written are an acks record in it (one fsync covers both),
    and recovery honours them even if the store was never closed."""
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(6)]
    q.flush()
    q.settle(refs[1])
    q.settle(refs[4])
    later = q.append(True, EX, RK, hdr(6), body(6))
    q.flush()
    (path,) = seg_files(q.dir)
    assert seg_files(q.dir, ".ack") == []
    with open(path, "rb") as f:
        data = f.read()
    types = [t for _off, t, _p in slog.scan_records(data)]
    assert types == [REC_MSG] * 6 + [REC_MSG, REC_ACKS]  # the later record, then the acks
    assert s.sync_fds == {q.wseg.fd}
    # as after a kill: nothing closed, the files read as they were written
    live = [rec[5] for rec in read_live_records(q.dir)]
    assert live == [body(i) for i in (0, 2, 3, 5, 6)]
    _s2, _q2, got, _u, problems = reopen(stores, s)
    assert problems == []
    assert got == [r for r in refs if r not in (refs[1], refs[4])] + [later]


def test_older_segment_acks_go_to_its_ack_file(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(12)]
    q.flush()
    in_first = [r for r in refs if r >> 32 == 1]
    q.settle(in_first[0])
    q.flush()
    first = os.path.join(q.dir, "00000001.seg")
    assert os.path.getsize(first[:-4] + ".ack") == 4
    _s2, _q2, got, _u, problems = reopen(stores, s)
    assert problems == [] and got == refs[1:]


def test_acks_record_found_after_a_corrupt_record(stores):
    """Resynchronising after damage finds an acks record too, so a settled message
    behind a corrupt one does not come back."""
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 100)) for i in range(3)]
    q.flush()
    q.settle(refs[0])
    s.close()
    (path,) = seg_files(q.dir)
    with open(path, "r+b") as f:  # damage the last message record, just before the acks record
        pos = (refs[2] & 0xFFFFFFFF) + 30
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    _s2, _q2, got, _u, problems = reopen(stores, None)
    assert got == [refs[1]]
    assert len(problems) == 1 and "corrupt" in problems[0], problems


def test_scratch_store_counts_into_the_main_store(tmp_path):
    """The disk alarm's estimate watches one count: records paged to a scratch store add to it."""
    main = LogStore(str(tmp_path / "data"))
    scratch = LogStore(str(tmp_path / "data" / "scratch"), account=main)
    main.open()
    scratch.open()
    try:
        main.queue_log("/", "durable").append(True, EX, RK, hdr(1), b"x" * 100)
        counted = main.appended_bytes
        scratch.queue_log("/", "paged").append(False, EX, RK, hdr(2), b"y" * 1000)
        assert main.appended_bytes > counted + 1000
    finally:
        scratch.close()
        main.close()


def test_transient_records_not_recovered(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(i % 2 == 0, EX, RK, hdr(i), body(i)) for i in range(10)]
    q.flush()
    # transient records are on disk (to keep memory flat) ...
    assert q.read(refs[1]) == (False, EX, RK, hdr(1), body(1))
    # ... but are dropped at recovery
    _s2, q2, got, _u, problems = reopen(stores, s)
    assert problems == []
    assert got == [refs[i] for i in range(0, 10, 2)]
    assert [q2.read(r)[0] for r in got] == [True] * 5


def test_delivered_watermark_recovered(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(5)]
    q.mark_delivered(refs[2])
    q.mark_delivered(refs[1])  # the watermark only grows
    _s2, _q2, got, upto, _p = reopen(stores, s)
    assert got == refs
    assert upto == refs[2]
    assert [r <= upto for r in got] == [True, True, True, False, False]


# -- segments -----------------------------------------------------------------------


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(slog, "SEGMENT_SIZE", 4096)
    return 4096


def test_segment_rollover(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(20)]
    q.flush()
    files = seg_files(q.dir)
    assert len(files) >= 5, files
    for f in files:
        assert os.path.getsize(f) <= small_segments
    # refs are segment << 32 | offset, growing with the append order
    sids = [r >> 32 for r in refs]
    assert sids == sorted(sids) and sids[0] == 1 and sids[-1] == len(files)
    assert refs[0] & 0xFFFFFFFF == 0
    assert refs == sorted(refs)
    # a record bigger than a segment still goes in (alone)
    big = q.append(True, EX, RK, hdr(100), body(100, 3 * small_segments))
    assert q.read(big)[4] == body(100, 3 * small_segments)
    s2, q2, got, _u, problems = reopen(stores, s)
    assert problems == []
    assert got == refs + [big]
    assert [q2.read(r)[4] for r in got] == [body(i, 1000) for i in range(20)] + [body(100, 3 * small_segments)]
    # new records after a recovery do not overwrite anything
    more = [q2.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(200, 210)]
    _s3, q3, got3, _u, problems = reopen(stores, s2)
    assert problems == []
    assert got3 == got + more
    assert [q3.read(r)[4] for r in more] == [body(i, 1000) for i in range(200, 210)]


def test_settled_segments_are_deleted(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(20)]
    q.flush()
    first = seg_files(q.dir)[0]
    in_first = [r for r in refs if r >> 32 == 1]
    assert 1 < len(in_first) < 20
    for r in in_first[:-1]:
        q.settle(r)
    q.flush()
    assert os.path.exists(first)  # one record of it is still live
    q.settle(in_first[-1])
    q.flush()
    assert not os.path.exists(first)
    assert not os.path.exists(first[:-4] + ".ack")
    # everything settled: only the write segment is left ...
    for r in refs[len(in_first):]:
        q.settle(r)
    q.flush()
    assert len(seg_files(q.dir)) == 1
    # ... and a quiet queue's settled write segment goes at housekeeping
    s.housekeep(idle=0.0)
    assert seg_files(q.dir) == []
    assert seg_files(q.dir, ".ack") == []
    # the log still works afterwards
    r = q.append(True, EX, RK, hdr(1), b"after")
    _s2, q2, got, _u, problems = reopen(stores, s)
    assert problems == []
    assert got == [r] and q2.read(r)[4] == b"after"


def test_housekeep_keeps_busy_or_live_write_segment(stores):
    s = stores()
    q = s.queue_log("/", "q")
    r1 = q.append(True, EX, RK, hdr(1), b"a")
    r2 = q.append(True, EX, RK, hdr(2), b"b")
    q.flush()
    q.settle(r1)
    q.flush()
    s.housekeep(idle=0.0)  # r2 is live: the segment stays
    assert len(seg_files(q.dir)) == 1
    s.housekeep(idle=3600.0)
    q.settle(r2)
    q.flush()
    s.housekeep(idle=3600.0)  # settled but not quiet for long enough
    assert len(seg_files(q.dir)) == 1
    s.housekeep(idle=0.0)
    assert seg_files(q.dir) == []


def test_fully_acked_segments_dropped_at_recovery(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(12)]
    q.flush()
    s.close()
    # acks recorded in the segment's .ack file, as a crash would leave them
    # (settle() would have deleted the segment at once)
    first = os.path.join(q.dir, "00000001.seg")
    in_first = [r for r in refs if r >> 32 == 1]
    with open(first[:-4] + ".ack", "wb") as f:
        for r in in_first:
            f.write(struct.pack(">I", r & 0xFFFFFFFF))
    _s2, q2, got, _u, problems = reopen(stores, None)
    assert problems == []
    assert got == [r for r in refs if r >> 32 != 1]
    assert not os.path.exists(first)
    assert not os.path.exists(first[:-4] + ".ack")


def test_destroy_removes_everything(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    for i in range(20):
        q.append(True, EX, RK, hdr(i), body(i, 1000))
    q.flush()
    d = q.dir
    assert s.disk_usage() > 20 * 1000
    s.drop_queue_log(q)
    assert not os.path.exists(d)
    assert s.disk_usage() == 0
    _s2, _q2, got, _u, _p = reopen(stores, s)
    assert got == []


def test_recovered_segments_are_not_appended_to(stores):
    s = stores()
    q = s.queue_log("/", "q")
    old = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(3)]
    s2, q2, got, _u, _p = reopen(stores, s)
    assert got == old
    sizes = {f: os.path.getsize(f) for f in seg_files(q2.dir)}
    new = q2.append(True, EX, RK, hdr(9), b"new")
    q2.flush()
    assert new >> 32 > old[-1] >> 32  # a new segment
    for f, size in sizes.items():
        assert os.path.getsize(f) == size
    _s3, q3, got3, _u, _p = reopen(stores, s2)
    assert got3 == old + [new]


def test_stale_ack_past_a_cut_tail_does_not_hide_a_new_record(stores):
    """An ack of a record that is then lost from the segment (the ack file reached
    the disk, the record did not) must not match a record written later."""
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 100)) for i in range(3)]
    q.flush()
    q.settle(refs[2])
    s.close()
    (path,) = seg_files(q.dir)
    os.truncate(path, refs[2] & 0xFFFFFFFF)  # the acked record never made it
    s2, q2, got, _u, _p = reopen(stores, None)
    assert got == refs[:2]
    new = [q2.append(True, EX, RK, hdr(i), body(i, 100)) for i in range(10, 13)]
    _s3, q3, got3, _u, _p = reopen(stores, s2)
    assert got3 == refs[:2] + new
    assert [q3.read(r)[4] for r in new] == [body(i, 100) for i in range(10, 13)]


def test_settled_write_segment_removed_at_close(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(3)]
    q.flush()
    for r in refs:
        q.settle(r)
    s.close()
    assert seg_files(q.dir) == [] and seg_files(q.dir, ".ack") == []


def test_recovery_drops_fully_acked_last_segment(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i)) for i in range(3)]
    q.flush()
    s.close()
    (path,) = seg_files(q.dir)
    with open(path[:-4] + ".ack", "wb") as f:
        for r in refs:
            f.write(struct.pack(">I", r & 0xFFFFFFFF))
    _s2, q2, got, _u, problems = reopen(stores, None)
    assert got == [] and problems == []
    assert seg_files(q2.dir) == [] and seg_files(q2.dir, ".ack") == []


# -- durable metadata ------------------------------------------------------------------


def test_meta_round_trip_field_types(tmp_path):
    """Arguments as a client's table decodes them (pamqp: 'x' byte arrays come as
    bytearray) survive a save and a load."""
    import datetime
    import decimal

    from storage import meta

    args = {
        "s": "text ü",
        "bytes": b"\x00\xff raw",
        "bytearray": bytearray(b"\x00\xff raw"),
        "bytearray-utf8": bytearray(b"plain"),
        "int": 7,
        "long": 2**40,
        "float": 1.5,
        "bool": True,
        "none": None,
        "decimal": decimal.Decimal("1.25"),
        "ts": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        "table": {"a": [1, {"b": b"\xfe"}]},
    }
    defs = {
        "vhosts": [{"name": "/"}],
        "exchanges": [],
        "queues": [{"name": "q", "vhost": "/", "durable": True, "auto_delete": False, "arguments": args}],
        "bindings": [{"source": "x", "vhost": "/", "destination": "q", "destination_type": "queue",
                      "routing_key": "", "arguments": args}],
    }
    meta.save(str(tmp_path), defs)
    back = meta.load(str(tmp_path))
    for where in (back["queues"][0]["arguments"], back["bindings"][0]["arguments"]):
        for k, v in args.items():
            w = where[k]
            if isinstance(v, (bytes, bytearray)):  # a byte array stays one (bytes or bytearray)
                assert isinstance(w, (bytes, bytearray)) and bytes(w) == bytes(v), (k, v, w)
            else:
                assert w == v and type(w) is type(v), (k, v, w)
    assert not os.path.exists(os.path.join(str(tmp_path), meta.FILENAME + ".tmp"))
    assert meta.load(str(tmp_path / "nowhere")) == {}


# -- damage -------------------------------------------------------------------------


def _three_records(stores):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 200)) for i in range(3)]
    s.close()
    (path,) = seg_files(q.dir)
    return path, refs


@pytest.mark.parametrize("cut", [1, 5, 9, 100])
def test_torn_tail_is_cut(stores, cut):
    path, refs = _three_records(stores)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - cut)
    s2, q2, got, _u, problems = reopen(stores, None)
    assert got == refs[:2]
    assert len(problems) == 1 and "tail" in problems[0], problems
    assert os.path.getsize(path) == refs[2] & 0xFFFFFFFF  # cut at the last whole record
    # a new record goes where the torn one was, and is recovered
    r = q2.append(True, EX, RK, hdr(7), b"new")
    _s3, q3, got3, _u, problems = reopen(stores, s2)
    assert problems == []
    assert got3 == refs[:2] + [r]
    assert [q3.read(x)[4] for x in got3] == [body(0, 200), body(1, 200), b"new"]


def test_corrupt_tail_is_cut(stores):
    path, refs = _three_records(stores)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size - 10)
        old = f.read(4)
        f.seek(size - 10)
        f.write(bytes(b ^ 0xFF for b in old))
    s2, q2, got, _u, problems = reopen(stores, None)
    assert got == refs[:2]
    assert len(problems) == 1 and "tail" in problems[0], problems
    assert os.path.getsize(path) == refs[2] & 0xFFFFFFFF
    assert [q2.read(x)[4] for x in got] == [body(0, 200), body(1, 200)]


def test_garbage_after_last_record_is_cut(stores):
    path, refs = _three_records(stores)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")
    _s2, _q2, got, _u, problems = reopen(stores, None)
    assert got == refs
    assert len(problems) == 1 and "tail" in problems[0], problems
    assert os.path.getsize(path) == size


@pytest.mark.parametrize("where", ["crc", "flags", "header", "body"])
def test_corrupt_middle_record_skipped(stores, where):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 200)) for i in range(5)]
    s.close()
    (path,) = seg_files(q.dir)
    off = refs[2] & 0xFFFFFFFF
    pos = {
        "crc": off + 5,
        "flags": off + 9,
        "header": off + 9 + 1 + len(EX) + len(RK) + 4 + 3,
        "body": (refs[3] & 0xFFFFFFFF) - 20,
    }[where]
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    s2, q2, got, _u, problems = reopen(stores, None)
    assert got == [refs[i] for i in (0, 1, 3, 4)]
    assert len(problems) == 1 and "corrupt" in problems[0], problems
    assert [q2.read(r)[4] for r in got] == [body(i, 200) for i in (0, 1, 3, 4)]
    # the file was not cut
    r = q2.append(True, EX, RK, hdr(9), b"after")
    _s3, _q3, got3, _u, _p = reopen(stores, s2)
    assert got3 == got + [r]


def test_corrupt_record_in_older_segment_skipped(stores, small_segments):
    s = stores()
    q = s.queue_log("/", "q")
    refs = [q.append(True, EX, RK, hdr(i), body(i, 1000)) for i in range(12)]
    s.close()
    in_first = [r for r in refs if r >> 32 == 1]
    assert len(in_first) >= 3
    victim = in_first[1]
    path = os.path.join(q.dir, "00000001.seg")
    with open(path, "r+b") as f:
        f.seek((victim & 0xFFFFFFFF) + 40)
        b = f.read(1)
        f.seek((victim & 0xFFFFFFFF) + 40)
        f.write(bytes([b[0] ^ 0x01]))
    _s2, q2, got, _u, problems = reopen(stores, None)
    assert got == [r for r in refs if r != victim]
    assert len(problems) == 1 and "corrupt" in problems[0], problems


# -- the data directory lock ----------------------------------------------------------


def test_data_dir_lock(tmp_path):
    a = LogStore(str(tmp_path))
    a.open()
    try:
        b = LogStore(str(tmp_path))
        with pytest.raises(DataDirLocked) as ei:
            b.open()
        b.close()
        assert str(tmp_path) in str(ei.value)
        assert "in use by another broker" in str(ei.value)
        assert str(os.getpid()) in str(ei.value)
    finally:
        a.close()
    # released at close
    c = LogStore(str(tmp_path))
    c.open()
    c.close()
