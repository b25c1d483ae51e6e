"""Power loss, simulated: what survives when every write not covered by an fsync is lost.

The store runs on :class:`storage.crashfs.CrashFS`; a crash keeps only what an
fsync of the file (its bytes) or of its directory (its name) made durable.  The
randomized test drives a real broker over a real socket and crashes it at
random file operations (tests/powerloss.py: classic and quorum queues, a stream with
retention, exchange/binding/queue churn); the others pin each bug it found.
``benchmarks/power_loss.py`` runs the randomized one at a larger size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

import pytest

from powerloss import exercise
from storage.crashfs import CrashFS
from storage.store import LogStore

DATA = "/data"


@pytest.fixture(autouse=True)
def _quiet_recovery(caplog):
    # thousands of recoveries each log what they cut and moved: keep the output readable
    caplog.set_level(logging.CRITICAL)


def durable_root() -> CrashFS:
    fs = CrashFS()
    fs.makedirs(DATA)
    fs.fsync_dir("/")
    fs.fsync_dir(DATA)
    return fs


def recovered_bodies(fs: CrashFS, queue: str = "q") -> list[bytes]:
    store = LogStore(DATA, fs)
    store.open()
    try:
        qlog = store.queue_log("/", queue)
        refs, _upto, _problems = qlog.recover()
        return [qlog.read(r)[4] for r in refs]
    finally:
        store.close()


async def confirmed_append(store: LogStore, qlog, body: bytes) -> int:
    """Append a persistent record, wait for the group commit that covers it; its ref."""
    ref = qlog.append(True, b"\x00", b"\x01q", b"", body)
    epoch = store.want_sync()
    done = asyncio.get_running_loop().create_future()

    class Waiter:
        def synced(self, e: int) -> bool:
            if e >= epoch and not done.done():
                done.set_result(None)
            return not done.done()

        def sync_failed(self, e: int, exc: Exception) -> bool:
            if not done.done():
                done.set_exception(exc)
            return False

    store.sync_waiters.add(Waiter())
    await done
    return ref


def new_store(fs: CrashFS) -> LogStore:
    store = LogStore(DATA, fs)
    store.open()
    store.attach(asyncio.get_running_loop())
    return store


def test_crashfs_keeps_only_what_was_synced():
    fs = durable_root()
    fd = fs.open(f"{DATA}/a", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    fs.write_all(fd, b"one")
    fs.fdatasync(fd)
    fs.write_all(fd, b"two")
    assert not fs.crash().exists(f"{DATA}/a"), "a new name needs its directory fsync'd"
    fs.fsync_dir(DATA)
    assert fs.crash().read_file(f"{DATA}/a") == b"one"
    fs.fdatasync(fd)
    fs.unlink(f"{DATA}/a")
    assert fs.crash().read_file(f"{DATA}/a") == b"onetwo", "an unlink is undone until the directory is synced"
    fs.fsync_dir(DATA)
    assert not fs.crash().exists(f"{DATA}/a")
    # with a random generator, a crash may also keep a prefix of unsynced appends
    fd = fs.open(f"{DATA}/b", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    fs.fsync_dir(DATA)
    fs.write_all(fd, b"0123456789")
    kept = {fs.crash(random.Random(i)).read_file(f"{DATA}/b") for i in range(40)}
    assert b"" in kept and len(kept) > 2
    assert all(b"0123456789".startswith(k) for k in kept)


async def test_a_new_queue_directory_survives_power_loss():
    """Found by the power-loss test: a queue's directory was created but its entry in
    queues/ never fsync'd, so a power loss lost every confirmed message of a new queue."""
    fs = durable_root()
    store = new_store(fs)
    qlog = store.queue_log("/", "q")
    await confirmed_append(store, qlog, b"confirmed")
    image = fs.crash()
    store.close()
    assert recovered_bodies(image) == [b"confirmed"]



async def test_acks_are_durable_once_a_later_publish_is_confirmed():
    """Found by the power-loss test: ack files were never fsync'd, and a segment
    deleted because all of it was acked was not removed durably, so after a power
    loss acked messages came back even though later publishes had been confirmed."""
    import storage.log as slog

    fs = durable_root()
    store = new_store(fs)
    qlog = store.queue_log("/", "q")
    saved = slog.SEGMENT_SIZE
    slog.SEGMENT_SIZE = 200  # two records per segment
    try:
        a = await confirmed_append(store, qlog, b"a" * 60)
        b = await confirmed_append(store, qlog, b"b" * 60)
        await confirmed_append(store, qlog, b"c" * 60)  # rolls to a second segment
        first_seg = a >> 32
        assert len(qlog.segments) == 2 and b >> 32 == first_seg
        qlog.settle(a)  # an ack written to the first segment's ack file
        await confirmed_append(store, qlog, b"d" * 60)
        assert recovered_bodies(fs.crash()) == [b"b" * 60, b"c" * 60, b"d" * 60]
        qlog.settle(b)  # the first segment is all settled: deleted
        assert first_seg not in qlog.segments
        await confirmed_append(store, qlog, b"e" * 60)
        assert recovered_bodies(fs.crash()) == [b"c" * 60, b"d" * 60, b"e" * 60]
    finally:
        slog.SEGMENT_SIZE = saved
        store.close()


def test_power_loss_at_random_points_quick():
    """Classic and quorum queues, a stream and metadata churn, crashed before a few hundred
    random file operations, and a few of the recoveries crashed again (the slow test below
    and benchmarks/power_loss.py do more)."""
    report = exercise(range(101, 104), crash_every=0.3, steps=50, recrash=0.03)
    assert report.crash_points > 800, report
    assert not report.failures, "\n".join(report.failures)


@pytest.mark.slow
def test_power_loss_at_random_points():
    """A real broker, crashed before more than 2,000 random file operations, recovered each time."""
    report = exercise(range(1, 7), crash_every=0.4, steps=70)
    assert report.crash_points > 2000, report
    assert not report.failures, "\n".join(report.failures)


async def test_delivery_counts_survive_power_loss():
    """Found by the power-loss test: recovery looked for a segment's returns file with
    ``os.path`` instead of the store's file layer, so on any other file layer the
    delivery counts of a quorum queue's messages were forgotten."""
    fs = durable_root()
    store = new_store(fs)
    qlog = store.queue_log("/", "q")
    try:
        ref = await confirmed_append(store, qlog, b"a")
        qlog.count_return(ref)
        qlog.count_return(ref)
        await confirmed_append(store, qlog, b"b")  # the group commit covers the returns file
        image = fs.crash()
    finally:
        store.close()
    store = LogStore(DATA, image)
    store.open()
    try:
        qlog = store.queue_log("/", "q")
        qlog.recover()
        assert qlog.recovered_returns == {ref: 2}
    finally:
        store.close()


async def test_stream_readers_get_only_durable_records():
    """Found by the power-loss test: a stream's readers were given records as soon as
    they were written, before the fsync; a power loss could then lose such a record
    and the next append gave its offset to another message."""
    from storage.stream_log import Cursor, open_stream_log

    fs = durable_root()
    store = new_store(fs)
    s = open_stream_log(store, "/", "s")
    try:
        s.append(1, b"", b"\x00", b"\x01s", b"h", b"first")
        s.flush()  # in the file, not yet durable
        assert s.read(Cursor(0), 10, 1 << 20) == [] and s.readable_end() == 0
        image = fs.crash()  # a power loss now loses it: nobody was given offset 0
        done = asyncio.get_running_loop().create_future()
        s.on_readable = lambda: done.done() or done.set_result(None)
        await asyncio.wait_for(done, 5)
        assert [r[6] for r in s.read(Cursor(0), 10, 1 << 20)] == [b"first"]
    finally:
        store.close()
    store = LogStore(DATA, image)
    store.open()
    try:
        lost = open_stream_log(store, "/", "s")
        lost.recover()
        assert lost.next_offset == 0
    finally:
        store.close()


async def test_a_failed_stream_fsync_is_never_read_and_readers_move_on():
    """An fsync of a stream segment that fails: its publishers are nacked, the records it
    covered are never given to readers (they may be gone after a power loss), the next
    records go to a new segment, and a reader moves past the one given up."""
    import errno

    from storage.stream_log import Cursor, open_stream_log

    fs = durable_root()
    store = new_store(fs)
    s = open_stream_log(store, "/", "s")
    readable = asyncio.Event()
    s.on_readable = readable.set
    try:
        s.append(1, b"", b"\x00", b"\x01s", b"h", b"kept")
        s.flush()
        await asyncio.wait_for(readable.wait(), 5)
        first_seg = s.wseg
        fs.fail = lambda n, what, path: OSError(errno.EIO, "I/O error", path) if what == "fsync" else None
        s.append(2, b"", b"\x00", b"\x01s", b"h", b"unsynced")
        s.flush()
        while s.mark.pending:  # the group commit fails
            await asyncio.sleep(0.01)
        fs.fail = None
        assert store.write_errors >= 1 and s.wseg is None and first_seg is not None and first_seg.given_up
        readable.clear()
        s.append(3, b"", b"\x00", b"\x01s", b"h", b"after")
        s.flush()
        await asyncio.wait_for(readable.wait(), 5)
        got = [(r[0], r[6]) for r in s.read(Cursor(0), 10, 1 << 20)]
        assert got == [(0, b"kept"), (2, b"after")]
    finally:
        store.close()
