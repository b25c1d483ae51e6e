"""The stream: an append-only log that every consumer reads from its own offset.

Theory of operation
-------------------
A published message is appended to the stream's log (:mod:`storage.stream_log`)
at the next offset, with an ``x-stream-offset`` header (long) put into its
properties there and then, so a delivery re-sends the stored bytes unchanged.
Every message waits for the fsync before its publisher confirm (``PUSH_SYNC``),
whatever its delivery mode: a stream keeps everything.

Reading never removes.  Each consumer has a :class:`StreamReader`: a cursor into
the log, placed by its ``x-stream-offset`` argument when it subscribes, and a
small buffer of records read from the file but not yet delivered.  A consumer
takes messages while it has credit (prefetch; acks only give credit back, a nack
or reject with or without requeue does too and nothing is redelivered, as in
RabbitMQ).  :meth:`StreamQueue.dispatch` delivers at most
:data:`DISPATCH_BUDGET` messages per call (shared by its consumers) and reads the file in
batches of :data:`READ_BATCH` records, then yields the loop (``call_soon``) if
there is more, so a consumer far behind never holds the loop for long.  An ack
gives credit to one reader only, so the dispatch that follows acks feeds just the
readers they credited (with 16 readers, a full pass per ack would cost more than
the deliveries).

Where a consumer starts (``x-stream-offset``): ``first`` is the oldest message
kept; ``last`` is the newest message already in the stream (it is delivered, then
everything after it; RabbitMQ starts at the last *chunk*, a batch of messages,
we have no chunks); ``next`` (the default) is the next message published; a
number is that offset (clamped to what is kept); a timestamp or an interval
(``1h``: that long ago) is the first message appended at or after that time.

Filtering (``x-stream-filter``): the publisher's ``x-stream-filter-value`` header
is stored with each record and compared exactly, per message (RabbitMQ filters per
chunk with a Bloom filter, so its consumers may also see other messages and must
filter again; ours see only what matches).

Peeking (:meth:`StreamQueue.peek_records`, the management API's message browser)
reads from an offset spec like a consumer's, without a consumer: the segment spans
are taken on the loop and read in a worker thread (:mod:`storage.stream_peek`),
bounded in records and payload bytes; nothing about the stream changes.

Retention (``x-max-length-bytes``, ``x-max-age``, ``x-stream-max-segment-size-bytes``,
as arguments or policy keys, read from :attr:`Queue.effective`) drops whole
segments from the head when a segment rolls, when the settings change, and every
:data:`RETENTION_EVERY` seconds while ``x-max-age`` is set.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol import errors, fields
from protocol.errors import ChannelError, ConnectionError
from storage.store import LogStore
from storage.stream_log import DEFAULT_SEGMENT_BYTES, Cursor, StreamLog, StreamRecord, open_stream_log
from storage.stream_peek import PeekedRecord, read_plan

from ..message import Message
from .arguments import int_arg, str_arg
from .base import PUSH_REJECTED, PUSH_SYNC, Queue, QueueHost, Recovered, Subscriber
from .stream_args import (
    MAX_FILTER_VALUE_BYTES,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    FilterSpec,
    OffsetSpec,
    check_consume,
    check_stream_declare,
    interval_ms,
    parse_filter,
    parse_offset,
)

DISPATCH_BUDGET = 2048  # deliveries per dispatch call, shared by the consumers (at least 64 each)
READ_BATCH = 256  # records read from the file at a time
READ_BYTES = 512 * 1024
SCAN_BUDGET = 16 * READ_BATCH  # records a filtering reader may skip per dispatch call
RETENTION_EVERY = 5.0  # seconds between x-max-age checks
_FILTER_KEY = "x-stream-filter-value"
_LONG = struct.Struct(">q")


def now_ms() -> int:
    return int(time.time() * 1000)


_HEADERS_FLAG = 0x2000  # the headers property's bit in the property flags
_OFFSET_ENTRY = b"\x0fx-stream-offset" + b"l"  # key and type of the entry stamped into headers
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def stamp_header(header: bytes, offset: int) -> tuple[bytes, bytes]:
    """``header`` with the ``x-stream-offset`` header (long) set to ``offset``, and the
    publisher's ``x-stream-filter-value`` (b"" if none).  Properties are spliced at the
    byte level; the common cases (no headers, or headers without any ``x-stream-`` entry)
    take a short path that decodes nothing."""
    if b"x-stream-" not in header and len(header) >= 14:
        flags = _U16.unpack_from(header, 12)[0]
        if not flags & 0x0001:  # no continuation flag word
            off = 14
            if flags & 0x8000:  # content_type
                off += 1 + header[off]
            if flags & 0x4000:  # content_encoding
                off += 1 + header[off]
            entry = _OFFSET_ENTRY + _LONG.pack(offset)
            if not flags & _HEADERS_FLAG:
                return (b"".join((header[:12], _U16.pack(flags | _HEADERS_FLAG), header[14:off],
                                  _U32.pack(len(entry)), entry, header[off:])), b"")
            n = _U32.unpack_from(header, off)[0]
            end = off + 4 + n
            return b"".join((header[:off], _U32.pack(n + len(entry)), header[off + 4 : end], entry, header[end:])), b""
    return _stamp_slow(header, offset)


def _stamp_slow(header: bytes, offset: int) -> tuple[bytes, bytes]:
    """:func:`stamp_header` for headers that already carry ``x-stream-`` entries."""
    prefix, props = fields.split_properties(header)
    entries = fields.table_entries(props["headers"]) if "headers" in props else []
    filter_value = b""
    kept = []
    for k, raw in entries:
        if k == "x-stream-offset":
            continue
        if k == _FILTER_KEY and raw[:1] == b"S":
            filter_value = raw[5:][:MAX_FILTER_VALUE_BYTES]
        kept.append((k, raw))
    kept.append(("x-stream-offset", b"l" + _LONG.pack(offset)))
    props["headers"] = fields.encode_table_entries(kept)
    return fields.join_properties(prefix, props), filter_value


@dataclass(frozen=True)
class StreamPeek:
    """What a peek found: the offset it started at, the records, and the offset to
    continue from (just past the last record, or ``start`` if there was none)."""

    start: int
    records: list[PeekedRecord]
    next_offset: int


PEEK_RETRIES = 3  # plans taken again when retention removed a segment before it was read


class StreamReader:
    """One consumer's place in the stream and what it has read but not yet delivered."""

    __slots__ = ("consumer", "cursor", "filter", "pending", "live")

    def __init__(self, consumer: Subscriber, cursor: Cursor, filter_spec: FilterSpec | None) -> None:
        self.consumer = consumer
        self.cursor = cursor
        self.filter = filter_spec
        self.pending: deque[StreamRecord] = deque()
        self.live = True  # False once its consumer is gone


class StreamQueue(Queue):
    """RabbitMQ's stream queue type over AMQP 0-9-1 (see the module doc)."""

    type_name = "stream"

    def __init__(
        self,
        vhost: QueueHost,
        name: str,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
        owner: Any = None,
    ) -> None:
        what = f"queue '{name}' in vhost '{vhost.name}'"
        check_stream_declare(what, durable, exclusive, auto_delete, arguments or {})
        super().__init__(vhost, name, durable, exclusive, auto_delete, arguments, owner)
        self.what = what
        self.stream: StreamLog | None = None
        self.readers: dict[Subscriber, StreamReader] = {}
        # readers given credit back by acks since the last dispatch: only they can take more
        self._credited: set[StreamReader] = set()
        self._resume: asyncio.Handle | None = None
        self._retention_timer: asyncio.TimerHandle | None = None
        self.configure()

    # -- settings ------------------------------------------------------------------------
    def configure(self) -> None:
        """Retention and segment size from the arguments merged with policies."""
        a = self.effective
        self.max_bytes = int_arg(a, "x-max-length-bytes")
        age = str_arg(a, "x-max-age")
        self.max_age_ms = interval_ms(age) if isinstance(age, str) else None
        seg = int_arg(a, "x-stream-max-segment-size-bytes")
        self.segment_bytes = DEFAULT_SEGMENT_BYTES if seg is None else min(max(seg, MIN_SEGMENT_SIZE), MAX_SEGMENT_SIZE)
        s = self.stream
        if s is not None:
            s.max_bytes, s.max_age_ms, s.max_segment_bytes = self.max_bytes, self.max_age_ms, self.segment_bytes

    def policies_applied(self) -> None:
        if self.deleted or self.stream is None:
            return
        self.stream.apply_retention(now_ms())
        self._arm_retention()

    def start(self) -> None:
        self._arm_retention()

    def _arm_retention(self) -> None:
        loop = self.vhost.loop
        if self._retention_timer is not None:
            self._retention_timer.cancel()
            self._retention_timer = None
        if loop is not None and self.max_age_ms is not None and not self.deleted:
            self._retention_timer = loop.call_later(RETENTION_EVERY, self._retention_due)

    def _retention_due(self) -> None:
        self._retention_timer = None
        if self.stream is not None and not self.deleted:
            self.stream.apply_retention(now_ms())
            self._arm_retention()

    # -- the store ---------------------------------------------------------------------------
    def open_store(self, store: LogStore) -> None:
        s = open_stream_log(store, self.vhost.name, self.name)
        s.on_readable = self._readable
        self.stream = s
        self.configure()

    @property
    def store_log(self) -> Any:
        return self.stream

    def recover(self) -> Recovered | None:
        if self.stream is None:
            return None
        problems = self.stream.recover()
        self.stream.apply_retention(now_ms())
        return Recovered(self.stream.messages, 0, problems)

    # -- messages in -------------------------------------------------------------------------
    def push(self, msg: Message, persistent: bool = False) -> int:
        """Append at the next offset; the confirm waits for the fsync (PUSH_SYNC)."""
        s = self.stream
        if s is None:
            return PUSH_REJECTED  # a stream needs the broker's data directory
        self.published += 1
        header, filter_value = stamp_header(msg.header, s.next_offset)
        try:
            s.append(now_ms(), filter_value, msg.ex_raw, msg.rk_raw, header, msg.body)
        except OSError as exc:
            s.store.append_failed(s, exc)
            return PUSH_REJECTED
        return PUSH_SYNC

    def _readable(self) -> None:
        """New records are durable: every reader may go on."""
        if self.consumers:
            self._credited.clear()
            self._feed_all(None)

    # -- consumers ------------------------------------------------------------------------------
    def check_consume(self, no_ack: bool, prefetch: int, global_prefetch: int, arguments: dict) -> None:
        parse_offset(arguments, self.what)
        parse_filter(arguments, self.what)
        check_consume(self.what, no_ack, prefetch, global_prefetch, arguments)

    def _start_offset(self, spec: OffsetSpec) -> int:
        s = self.stream
        assert s is not None
        kind, value = spec
        if kind == "first":
            return s.first_offset
        if kind == "last":
            return max(s.next_offset - 1, s.first_offset)
        if kind == "next":
            return s.next_offset
        if kind == "time":
            return s.offset_at_time(value)
        return min(max(value, s.first_offset), s.next_offset)

    def add_consumer(self, c: Subscriber) -> None:
        if self.stream is None:
            raise ChannelError(errors.INTERNAL_ERROR, f"{self.what} has no log")
        args = c.arguments or {}
        start = self._start_offset(parse_offset(args, self.what))
        self.readers[c] = StreamReader(c, Cursor(start), parse_filter(args, self.what))
        self.consumers.append(c)
        self.had_consumers = True
        self.last_used = time.monotonic()
        if c.exclusive:
            self.exclusive_consumer = c

    def remove_consumer(self, c: Subscriber) -> None:
        r = self.readers.pop(c, None)
        if r is None:
            return
        r.live = False
        self._credited.discard(r)
        self.consumers.remove(c)
        if self.exclusive_consumer is c:
            self.exclusive_consumer = None

    def dispatch(self) -> None:
        """Deliver to consumers with credit, each from its own place in the log.  Right after
        acks (the common call) only the readers those acks gave credit to are fed; any other
        call (new records, a new consumer, a socket that drained) feeds every reader."""
        if self._credited:
            targets = list(self._credited)
            self._credited.clear()
            self._feed_all(targets)
        else:
            self._feed_all(None)

    def _feed_all(self, targets: list[StreamReader] | None) -> None:
        """Feed ``targets`` (every reader if None); come back next loop turn if a reader
        stopped on its budget."""
        s = self.stream
        if s is None or not self.consumers or self.deleted:
            return
        if targets is None:
            targets = [self.readers[c] for c in self.consumers]
        budget = max(64, DISPATCH_BUDGET // len(self.consumers))
        more = False
        for r in targets:
            if r.live and self._feed(s, r.consumer, r, budget):
                more = True
        if more and self._resume is None and self.vhost.loop is not None:
            self._resume = self.vhost.loop.call_soon(self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        self._feed_all(None)

    def _feed(self, s: StreamLog, c: Subscriber, r: StreamReader, budget: int) -> bool:
        """Deliver up to ``budget`` messages to one consumer; True if it stopped on its
        budget with more to read."""
        scanned = 0
        pending = r.pending
        while c.can_take():
            if not pending:
                if budget <= 0 or scanned >= SCAN_BUDGET:
                    return True
                recs = s.read(r.cursor, READ_BATCH, READ_BYTES)
                if not recs:
                    return False
                scanned += len(recs)
                f = r.filter
                pending.extend(recs if f is None else (x for x in recs if f.matches(x[2])))
                continue
            if not r.live:
                return False  # cancelled by a delivery (its channel closed)
            c.deliver(self, self._message(pending.popleft(), r))
            budget -= 1
        return False

    def _message(self, rec: StreamRecord, reader: StreamReader) -> Message:
        offset, _ts, _f, ex_raw, rk_raw, header, body = rec
        m = Message(ex_raw[1:].decode("utf-8", "replace"), rk_raw[1:].decode("utf-8", "replace"), ex_raw, rk_raw,
                    header, body)
        m.seq = offset
        m.ref = reader  # settling it gives credit back to this reader
        self.unacked += 1
        self.delivered += 1
        return m

    async def peek_records(
        self, spec: OffsetSpec, count: int, body_budget: int, body_cut: int | None
    ) -> StreamPeek:
        """Up to ``count`` records from where a consumer with ``x-stream-offset`` ``spec``
        would start, read in a worker thread; bodies cut to ``body_cut`` bytes each and
        ``body_budget`` bytes in all.  No consumer, no counter, no state changes."""
        for _ in range(PEEK_RETRIES):
            s = self.stream
            if s is None:
                return StreamPeek(0, [], 0)
            kind, value = spec
            plan = s.peek_plan_since(value, count) if kind == "time" else s.peek_plan(self._start_offset(spec), count)
            if not plan.spans:
                return StreamPeek(plan.offset, [], plan.offset)
            try:
                records = await asyncio.to_thread(read_plan, plan, count, body_budget, body_cut, s.io)
            except FileNotFoundError:
                continue  # retention removed its first segment between the plan and the read: plan again
            if records:
                return StreamPeek(records[0].offset, records, records[-1].offset + 1)
            end = plan.offset if kind != "time" or self.stream is None else self.stream.readable_end()
            return StreamPeek(end, [], end)
        return StreamPeek(0, [], 0)

    def get(self) -> Message | None:
        raise ConnectionError(errors.NOT_IMPLEMENTED, f"basic.get not supported by stream queues {self.what}", 60, 70)

    # -- settling: credit only ---------------------------------------------------------------------
    def settle(self, msg: Message) -> None:
        self.unacked -= 1
        self.acked += 1
        self._credit(msg)

    def requeue(self, msgs: Iterable[Message]) -> None:
        """Nothing goes back: a stream's messages stay where they are (RabbitMQ)."""
        for m in msgs:
            self.unacked -= 1
            self._credit(m)

    def reject(self, msg: Message) -> None:
        self.unacked -= 1
        self._credit(msg)

    def _credit(self, msg: Message) -> None:
        r = msg.ref
        if isinstance(r, StreamReader) and r.live:
            self._credited.add(r)

    # -- the stream as a whole ----------------------------------------------------------------------
    @property
    def ready(self) -> int:
        return self.stream.messages if self.stream is not None else 0

    def purge(self) -> int:
        raise ConnectionError(
            errors.NOT_IMPLEMENTED, f"queue.purge not supported by stream queues {self.what}", 50, 30
        )

    def delete(self) -> int:
        self.deleted = True
        for h in (self._resume, self._retention_timer):
            if h is not None:
                h.cancel()
        self._resume = self._retention_timer = None
        n = self.ready
        s, self.stream = self.stream, None
        self.readers.clear()
        self._credited.clear()
        if s is not None:
            s.store.drop_queue_log(s)
        return n

    def describe(self) -> dict:
        d = super().describe()
        s = self.stream
        d["type"] = self.type_name
        if s is not None:
            self.bytes_ready = s.size_bytes
            last = s.next_offset - 1 if s.messages else None
            d.update(
                first_offset=s.first_offset if s.messages else None,
                last_offset=last,
                committed_offset=last,
                segments=len(s.segments),
                message_bytes=s.size_bytes,
                messages_ready=s.messages,
                messages=s.messages,
            )
        return d
