"""Peeking at a stream log in-process (storage/stream_peek.py): a plan taken from an offset or a
time reads the same records as a cursor, across segments and from any index point; bodies are
cut to the budget; retention between plan and read is reported; records appended after the plan
are not read."""

from __future__ import annotations

import os

import pytest

from storage.store import LogStore
from storage.stream_log import INDEX_EVERY, StreamLog, open_stream_log
from storage.stream_peek import read_plan


@pytest.fixture
def store(tmp_path):
    s = LogStore(str(tmp_path / "data"))
    s.open()
    yield s
    s.close()


def fill(s: StreamLog, n: int, body: bytes = b"", header: bytes = b"h") -> None:
    """Append ``n`` records, record k with timestamp 1000 + k."""
    for _ in range(n):
        off = s.next_offset
        s.append(1_000 + off, b"", b"\x00", b"\x01k", header, body or b"m%d" % off)
    s.sync()


def test_a_plan_from_any_offset_reads_the_records_across_segments(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 3000)
    assert len(s.segments) > 5
    for offset in (0, 1, INDEX_EVERY - 1, INDEX_EVERY, 1234, 2950):
        recs = read_plan(s.peek_plan(offset, 100), 100, 1 << 20, None)
        want = list(range(offset, min(offset + 100, 3000)))
        assert [r.offset for r in recs] == want
        assert [r.body for r in recs] == [b"m%d" % i for i in want]
        assert all(r.timestamp_ms == 1000 + r.offset and r.header == b"h" and r.rk_raw == b"\x01k" for r in recs)
    assert s.peek_plan(3000, 10).spans == () and s.peek_plan(5000, 10).spans == ()


def test_a_plan_from_a_time_skips_older_records(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 3000)
    for ts, first in ((0, 0), (1000, 0), (1000 + 700, 700), (1000 + 2999, 2999)):
        recs = read_plan(s.peek_plan_since(ts, 5), 5, 1 << 20, None)
        assert [r.offset for r in recs] == list(range(first, min(first + 5, 3000)))
    assert s.peek_plan_since(1000 + 3000, 5).spans == ()


def test_bodies_are_cut_to_the_budget_and_the_cut(store):
    s = open_stream_log(store, "/", "s")
    fill(s, 3, body=b"x" * 10_000, header=b"H" * 6000)  # a header longer than the first read
    recs = read_plan(s.peek_plan(0, 3), 3, 15_000, None)
    assert [len(r.body) for r in recs] == [10_000, 5_000, 0]
    assert all(r.body_size == 10_000 and r.header == b"H" * 6000 for r in recs)
    assert [len(r.body) for r in read_plan(s.peek_plan(0, 3), 3, 15_000, 7)] == [7, 7, 7]


def test_retention_before_the_read_is_reported_and_later_appends_are_not_read(store):
    s = open_stream_log(store, "/", "s")
    s.max_segment_bytes = 8192
    fill(s, 1000)
    plan = s.peek_plan(0, 100)
    fill(s, 10)  # appended after the plan: not in it
    assert [r.offset for r in read_plan(s.peek_plan(995, 100), 100, 1 << 20, None)] == list(range(995, 1010))
    os.unlink(plan.spans[0].path)  # as retention would
    with pytest.raises(FileNotFoundError):
        read_plan(plan, 100, 1 << 20, None)
    tail = s.peek_plan(990, 100)
    fill(s, 5)
    assert [r.offset for r in read_plan(tail, 100, 1 << 20, None)] == list(range(990, 1010))
