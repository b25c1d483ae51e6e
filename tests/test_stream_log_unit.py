"""The stream log and the stream's argument parsing, in-process: stable offsets across
segments, the sparse index, retention, recovery (index files, torn tails), seeking by time;
and the x-stream-offset stamp against a full decode."""

from __future__ import annotations

import datetime
import os

import pytest
from pamqp import commands as C

from broker.queues.stream import _stamp_slow, stamp_header
from broker.queues.stream_args import interval_ms, parse_filter, parse_offset
from protocol import framing
from protocol.errors import ChannelError
from storage.store import LogStore
from storage.stream_log import INDEX_EVERY, Cursor, StreamLog, open_stream_log


@pytest.fixture
def store(tmp_path):
    s = LogStore(str(tmp_path / "data"))
    s.open()
    yield s
    s.close()


def fill(s: StreamLog, n: int, start_ts: int = 1_000, body: bytes = b"") -> None:
    for _i in range(n):
        off = s.next_offset
        s.append(start_ts + off, b"", b"\x00", b"\x01k", b"h", body or b"m%d" % off)
    s.sync()


def read_all(s: StreamLog, offset: int, batch: int = 100) -> list:
    cur = Cursor(offset)
    out = []
    while True:
        recs = s.read(cur, batch, 1 << 20)
        if not recs:
            return out
        out += recs


def reopen(store: LogStore, tmp_path) -> tuple[LogStore, StreamLog, list[str]]:
    """Close the store and recover the stream from its files: (store, log, problems)."""
    store.close()
    st = LogStore(str(tmp_path / "data"))
    st.open()
    s = open_stream_log(st, "/", "s")
    return st, s, s.recover()


def test_offsets_are_contiguous_across_segments_and_reads_seek(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 3000)
    assert len(s.segments) > 5
    recs = read_all(s, 0)
    assert [r[0] for r in recs] == list(range(3000))
    assert recs[1234][6] == b"m1234"
    # from the middle of an index step, and across a segment boundary
    cur = Cursor(INDEX_EVERY + 7)
    assert [r[0] for r in s.read(cur, 3, 1 << 20)] == [INDEX_EVERY + 7, INDEX_EVERY + 8, INDEX_EVERY + 9]
    boundary = s.segments[2].first
    cur = Cursor(boundary - 1)
    assert [r[0] for r in s.read(cur, 2, 1 << 20)] == [boundary - 1, boundary]
    assert s.read(Cursor(3000), 10, 1 << 20) == []


def test_memory_is_a_sparse_index_not_a_record_per_message(store):
    s = open_stream_log(store, "/", "s")
    fill(s, 20_000)
    seg = s.segments[0]
    assert seg.count == 20_000
    assert len(seg.positions) == len(seg.stamps) == -(-20_000 // INDEX_EVERY)  # 40 entries for 20k records


def test_reads_see_only_what_is_durable(store):
    s = open_stream_log(store, "/", "s")
    s.append(1, b"", b"\x00", b"\x00", b"h", b"a")
    assert s.read(Cursor(0), 10, 1 << 20) == []  # buffered, not yet in the file
    store.flush()
    assert s.read(Cursor(0), 10, 1 << 20) == []  # in the file, not yet fsync'd
    s.sync()
    assert [r[6] for r in s.read(Cursor(0), 10, 1 << 20)] == [b"a"]


def test_retention_by_bytes_and_age_drops_head_segments_only(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 2000, body=b"x" * 50)
    cur = Cursor(0)
    s.read(cur, 10, 1 << 20)  # a reader at the head
    nseg = len(s.segments)
    s.max_bytes = 30_000
    assert s.apply_retention(0) > 0
    assert s.size_bytes <= 30_000 + 8192 and len(s.segments) < nseg
    first = s.first_offset
    assert first > 0 and s.messages == 2000 - first
    assert not os.path.exists(os.path.join(s.dir, f"{0:020d}.seg"))
    assert s.read(cur, 1, 1 << 20)[0][0] == first  # the reader moves on to the oldest kept
    # age: everything is older than the limit, yet the segment being written stays
    s.max_bytes = None
    s.max_age_ms = 1
    s.apply_retention(10**12)
    assert len(s.segments) == 1 and s.segments[0] is s.wseg


def test_recovery_uses_index_files_and_offsets_go_on(store, tmp_path):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 1500)
    idx = sorted(n for n in os.listdir(s.dir) if n.endswith(".idx"))
    assert len(idx) == len(s.segments) - 1  # every closed segment has one
    st, s2, problems = reopen(store, tmp_path)
    try:
        assert problems == []
        assert (s2.first_offset, s2.next_offset) == (0, 1500)
        assert [r[0] for r in read_all(s2, 0)] == list(range(1500))
        fill(s2, 10)
        assert [r[0] for r in read_all(s2, 1495)] == list(range(1495, 1510))
    finally:
        st.close()


def test_recovery_cuts_a_torn_tail_and_ignores_a_bad_index(store, tmp_path):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 600)
    last = s.segments[-1].path
    first_idx = s.segments[0].path[:-4] + ".idx"
    with open(last, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a half-written record
    with open(first_idx, "r+b") as f:
        f.write(b"XXXXXXXX")  # a damaged index file: the segment is scanned instead
    st, s2, problems = reopen(store, tmp_path)
    try:
        assert any("torn or corrupt tail" in p for p in problems)
        assert [r[0] for r in read_all(s2, 0)] == list(range(600))
    finally:
        st.close()


def test_offset_at_time(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 3000, start_ts=10_000)  # record i at 10_000 + i ms
    assert s.offset_at_time(0) == 0
    assert s.offset_at_time(10_000 + 1777) == 1777
    assert s.offset_at_time(10**9) == 3000


def test_stamp_header_short_path_equals_the_full_splice():
    cases = [
        C.Basic.Properties(),
        C.Basic.Properties(content_type="text/plain", content_encoding="gzip"),
        C.Basic.Properties(content_type="a", headers={"a": 1, "b": "x"}, delivery_mode=2, priority=3,
                           timestamp=datetime.datetime(2020, 1, 1), app_id="z"),
        C.Basic.Properties(headers={"x-stream-filter-value": "red", "k": [1, 2]}, correlation_id="c"),
        C.Basic.Properties(headers={"x-stream-offset": 5}),
    ]
    for props in cases:
        h = framing.content_header_payload(10, props)
        stamped, fv = stamp_header(h, 2**40 + 3)
        assert (stamped, fv) == _stamp_slow(h, 2**40 + 3)
        decoded = framing.decode_properties(stamped)
        assert decoded.headers["x-stream-offset"] == 2**40 + 3
        assert decoded.content_type == props.content_type and decoded.priority == props.priority
        assert fv == (b"red" if props.headers and "x-stream-filter-value" in props.headers else b"")


def test_interval_and_offset_and_filter_parsing():
    assert interval_ms("1h") == 3_600_000 and interval_ms("7D") == 7 * 86_400_000 and interval_ms("1Y")
    for bad in ("0h", "1.5h", "h", "", "1x", "1 h", "-1h"):
        assert interval_ms(bad) is None
    what = "queue 'q' in vhost '/'"
    assert parse_offset({}, what) == ("next", 0)
    assert parse_offset({"x-stream-offset": "first"}, what) == ("first", 0)
    assert parse_offset({"x-stream-offset": 42}, what) == ("offset", 42)
    ts = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert parse_offset({"x-stream-offset": ts}, what) == ("time", int(ts.timestamp()) * 1000)
    with pytest.raises(ChannelError):
        parse_offset({"x-stream-offset": True}, what)
    assert parse_filter({}, what) is None
    f = parse_filter({"x-stream-filter": ["a", "b"], "x-stream-match-unfiltered": True}, what)
    assert f is not None and f.matches(b"a") and f.matches(b"") and not f.matches(b"c")
    with pytest.raises(ChannelError):
        parse_filter({"x-stream-filter": ["v"] * 1000}, what)


def test_a_follower_can_stream_the_log_from_an_offset(store, tmp_path):
    """read_raw hands out records byte for byte from any offset; written into a fresh
    segment named by that offset, they recover into the same stream from there on."""
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 1200)
    cur = Cursor(700)
    chunks = []
    while chunk := s.read_raw(cur, 4096):
        chunks.append(chunk)
    follower_dir = tmp_path / "follower"
    follower_dir.mkdir()
    (follower_dir / f"{700:020d}.seg").write_bytes(b"".join(chunks))
    f = StreamLog(store, str(follower_dir))
    assert f.recover() == []
    assert (f.first_offset, f.next_offset) == (700, 1200)
    assert read_all(f, 0) == read_all(s, 700)


def test_a_failed_write_gives_its_offsets_back(store):
    """A batch that cannot be written is forgotten (its publishers are nacked through the
    store) and the next records take its offsets: no gap, no record at two offsets."""
    s = open_stream_log(store, "/", "s")
    fill(s, 10)
    seg = s.wseg
    assert seg is not None
    good_fd = seg.fd
    seg.fd = os.open(seg.path, os.O_RDONLY)  # writes to it fail with EBADF
    s.append(1, b"", b"\x00", b"\x00", b"h", b"lost")
    s.flush()
    os.close(seg.fd)
    seg.fd = good_fd
    assert s.next_offset == 10 and store.write_errors == 1
    fill(s, 2)
    assert [(r[0], r[6]) for r in read_all(s, 8)] == [(8, b"m8"), (9, b"m9"), (10, b"m10"), (11, b"m11")]


def test_a_clean_stop_leaves_every_segment_indexed(store, tmp_path):
    s = open_stream_log(store, "/", "s")
    fill(s, 700)  # one segment, still being written
    st, s2, problems = reopen(store, tmp_path)
    try:
        assert problems == [] and os.path.exists(s.segments[0].path[:-4] + ".idx")
        assert (s2.first_offset, s2.next_offset) == (0, 700) and len(s2.segments[0].positions) == 2
    finally:
        st.close()
