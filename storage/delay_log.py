"""Delayed messages on disk: one exchange's messages in time buckets of append-only logs.

Theory of operation
-------------------
A delayed exchange owns a directory (named by a hash of vhost and exchange, with
an identity file naming them).  A message is appended to the *bucket* that its due
time falls in: a subdirectory ``WIDTH-START`` (milliseconds) holding a
:class:`~storage.log.QueueLog`, so records, acks, segment files, group-commit
fsync and recovery are those of a queue log (the record's ``deadline`` field
holds the due time).  The width grows with the delay, so that the number of
buckets stays small however far ahead messages are scheduled: 1 s for delays
under a minute, 1 min under an hour, 1 h under a day, 1 day beyond.

In memory a bucket keeps only two compact arrays, the due times and the refs of
its records (16 bytes a message); bodies stay on disk and are read when due
(:meth:`DelayBucket.read`).  A delivered record is settled like an acked queue
message (its offset appended to the segment's ack file); a bucket whose records
are all settled is removed with its directory.

Recovery (:meth:`DelayLog.recover`) recovers each bucket's queue log (CRC checks,
torn tails cut, acked and transient records dropped) and reads the due time of
each live record from its segment.
"""

from __future__ import annotations

import os
from array import array

from .log import QueueLog
from .records import U64, read_identity, write_identity
from .store import LogStore

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
DELAYED_DIR = "delayed"


def bucket_width(delay_ms: int) -> int:
    """The width of the buckets a message delayed by ``delay_ms`` goes to."""
    if delay_ms < MINUTE:
        return SECOND
    if delay_ms < HOUR:
        return MINUTE
    if delay_ms < DAY:
        return HOUR
    return DAY


class DelayBucket:
    """The records of one exchange due within one time window."""

    __slots__ = ("key", "start", "width", "qlog", "dues", "refs", "live", "loaded")

    def __init__(self, key: str, start: int, width: int, qlog: QueueLog | None) -> None:
        self.key = key
        self.start = start  # ms since the epoch
        self.width = width  # ms
        self.qlog = qlog
        self.dues = array("q")  # due time of each record, in append order (ms since the epoch)
        self.refs = array("Q")  # its ref in qlog
        self.live = 0  # records not settled yet
        self.loaded = False  # handed to the scheduler (its arrays are no longer appended to)

    def read(self, ref: int) -> tuple[bool, int, bytes, bytes, bytes, bytes]:
        """(persistent, due, ex_raw, rk_raw, header, body) of one record."""
        assert self.qlog is not None
        return self.qlog.read_full(ref)

    def settle(self, ref: int) -> bool:
        """A record was delivered (or dropped); True when the bucket is now empty."""
        self.live -= 1
        if self.qlog is not None:
            self.qlog.settle(ref)
        return self.live <= 0


class DelayLog:
    """The buckets of one delayed exchange under a data directory."""

    def __init__(self, store: LogStore, vhost: str, exchange: str) -> None:
        self.store = store
        self.dir = exchange_dir(store, vhost, exchange)
        self.vhost = vhost
        self.exchange = exchange
        self.buckets: dict[str, DelayBucket] = {}
        io = store.io
        root = os.path.join(store.data_dir, DELAYED_DIR)
        io.makedirs(self.dir)
        write_identity(io, self.dir, vhost, exchange)
        # the directories' entries (and the identity file's) before any record confirmed in them
        for d in (self.dir, root, store.data_dir):
            io.fsync_dir(d)

    def bucket_for(self, due: int, delay: int) -> DelayBucket:
        """The bucket a record due at ``due`` (delayed by ``delay``) is appended to."""
        width = bucket_width(delay)
        start = due - due % width
        key = f"{width}-{start}"
        b = self.buckets.get(key)
        if b is None:
            path = os.path.join(self.dir, key)
            self.store.io.makedirs(path)
            self.store.new_files.add(self.dir)  # the new directory's entry, at the next fsync
            b = self.buckets[key] = DelayBucket(key, start, width, QueueLog(self.store, path))
        return b

    def append(self, bucket: DelayBucket, due: int, persistent: bool, ex_raw: bytes, rk_raw: bytes,
               header: bytes, body: bytes) -> int:
        """Buffer a record in ``bucket``; return its ref."""
        assert bucket.qlog is not None
        ref = bucket.qlog.append(persistent, ex_raw, rk_raw, header, body, due)
        bucket.live += 1
        return ref

    def drop_bucket(self, bucket: DelayBucket) -> None:
        """Every record of ``bucket`` is settled: remove its files."""
        self.buckets.pop(bucket.key, None)
        if bucket.qlog is not None:
            self.store.dirty_logs.discard(bucket.qlog)
            bucket.qlog.destroy()

    def destroy(self) -> None:
        """The exchange is deleted: remove every file of it."""
        for b in list(self.buckets.values()):
            self.drop_bucket(b)
        self.store.io.rmtree(self.dir)

    def close(self) -> None:
        for b in self.buckets.values():
            if b.qlog is not None:
                b.qlog.close()

    def recover(self) -> list[str]:
        """Rebuild the buckets from disk (live persistent records only); return problems found."""
        problems: list[str] = []
        io = self.store.io
        for name in sorted(io.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if not io.isdir(path):
                continue
            try:
                width, start = (int(x) for x in name.split("-"))
            except ValueError:
                problems.append(f"{path}: not a delay bucket; left alone")
                continue
            qlog = QueueLog(self.store, path)
            refs, _watermark, bad = qlog.recover()
            problems += bad
            if not refs:
                qlog.destroy()
                continue
            b = DelayBucket(name, start, width, qlog)
            b.refs = refs
            b.dues = _due_times(qlog, refs)
            b.live = len(refs)
            self.buckets[name] = b
        return problems


def exchange_dir(store: LogStore, vhost: str, exchange: str) -> str:
    """Where the delayed messages of an exchange are kept (a hash of vhost and name)."""
    return os.path.join(store.data_dir, DELAYED_DIR, store.queue_dir(vhost, exchange).rsplit(os.sep, 1)[-1])


def existing_exchange_dirs(store: LogStore) -> dict[str, tuple[str | None, str | None]]:
    """Every delayed-exchange directory of a data directory, with the (vhost, exchange) it names."""
    root = os.path.join(store.data_dir, DELAYED_DIR)
    try:
        names = store.io.listdir(root)
    except FileNotFoundError:
        return {}
    return {os.path.join(root, n): read_identity(os.path.join(root, n), store.io) for n in names}


def _due_times(qlog: QueueLog, refs: array) -> array:
    """The due time of each recovered record (read from its segment, one read per segment)."""
    out = array("q")
    data = b""
    current = -1
    for ref in refs:
        sid, off = ref >> 32, ref & 0xFFFFFFFF
        if sid != current:
            data = qlog.io.read_file(qlog.segments[sid].path)
            current = sid
        out.append(U64.unpack_from(data, off + 10)[0])  # length, crc, type, flags, then the deadline
    return out
