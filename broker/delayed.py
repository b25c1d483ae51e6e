"""The delayed-message exchange (the ``x-delayed-message`` type of RabbitMQ's plugin).

Theory of operation
-------------------
A :class:`DelayedExchange` routes like its ``x-delayed-type`` (direct, fanout,
topic or headers: an exchange of that type inside it keeps the bindings).  A
message published to it with an ``x-delay`` header of 1 ms to 2^32-1 ms is not
routed then: :meth:`DelayedMessages.hold` keeps it until it is due, and it is
routed at that time through :meth:`VHost.publish <broker.vhost.VHost.publish>`
like any publish (``release=True``).  Without ``x-delay``, or with a value that
is not a positive integer in that range, the message is routed at once, as the
plugin does.

Held messages are kept on disk, not in memory (:mod:`storage.delay_log`): each
exchange's messages go to time buckets of append-only logs, and memory holds
16 bytes a message (due time and ref).  A persistent message to a durable
exchange is confirmed once its record is fsync'd (the store's group commit) and
survives a restart; transient ones, or those of a transient exchange, do not.
Without a data directory messages are kept in memory.

The scheduler (:class:`DelayedMessages`, one per vhost) keeps a heap of the
start times of the buckets not loaded yet, and a heap of *runs*: a loaded
bucket's records in due order, or one record added to an already loaded bucket.
A bucket one second wide is loaded (its records sorted by due time) just before
it starts; a wider one is first split, :data:`SPLIT_CHUNK` records per loop turn
from :data:`SPLIT_AHEAD_MS` before it starts, into one group per second, each
loaded like a narrow bucket, so that a million messages due in the same hour
never hold the loop.  One timer wakes up at the next due time (or load), delivers
what is due (at most :data:`BATCH` per loop turn) and re-arms.  A delivered record is
settled once whatever it was routed to has it safely: at once, or after the
fsync of the queues' records when it went to a durable queue as persistent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
import time
from array import array
from collections.abc import Collection
from typing import Any, Protocol

from protocol import errors, fields, framing
from protocol.errors import ChannelError
from storage.delay_log import SECOND, DelayBucket, DelayLog, bucket_width, existing_exchange_dirs
from storage.interfaces import StorageError
from storage.records import RECORD_OVERHEAD_MAX
from storage.store import LogStore

from .exchange import EXCHANGE_TYPES, Exchange, HeadersExchange
from .logsafe import printable
from .message import Message
from .publishing import PublishOutcome, check_properties
from .queues.base import PUSH_OK, PUSH_REJECTED, PUSH_SYNC
from .services import Services

log = logging.getLogger("broker.delayed")

TYPE_NAME = "x-delayed-message"
MAX_DELAY = 2**32 - 1  # ms, the plugin's limit (Erlang's longest timer)
BATCH = 2000  # deliveries per loop turn
LOOKAHEAD_MS = 200  # a one-second bucket (or group) is loaded this long before it starts
SPLIT_AHEAD_MS = 10_000  # a wider bucket is split into seconds this long before it starts
SPLIT_CHUNK = 20_000  # records split per loop turn


def remove_orphans(store: LogStore, claimed: set[str]) -> None:
    """At start: delayed messages of exchanges that no longer exist (transient ones) go."""
    for directory, (vhost, exchange) in existing_exchange_dirs(store).items():
        if directory in claimed:
            continue
        log.warning("recovery: delayed messages of exchange '%s' in vhost '%s' dropped: the exchange does "
                    "not exist", printable(exchange or "?"), printable(vhost or "?"))
        store.io.rmtree(directory)


# the integer field types of AMQP tables, as struct formats
_INT_FIELDS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i", b"i": ">I", b"l": ">q", b"L": ">Q"}


def delay_of(msg: Message) -> int | None:
    """The message's ``x-delay`` (ms) if it asks for a delay, else None (route now).
    Read from the header bytes (no decoding of the other properties)."""
    h = msg.header
    if not framing.property_flags(h) & framing.FLAG_HEADERS or b"\x07x-delay" not in h:
        return None
    _prefix, props = fields.split_properties(h)
    for key, raw in fields.table_entries(props["headers"]):
        if key == "x-delay":
            fmt = _INT_FIELDS.get(raw[:1])
            if fmt is None:
                return None
            v = struct.unpack_from(fmt, raw, 1)[0]
            return v if 0 < v <= MAX_DELAY else None
    return None


class DelayedExchange(Exchange):
    """An exchange that holds messages until their ``x-delay`` is over, then routes them
    as its ``x-delayed-type``."""

    type_name = TYPE_NAME
    delays = True

    def __init__(self, vhost: Any, name: str, durable: bool = False, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None) -> None:
        super().__init__(vhost, name, durable, auto_delete, internal, arguments)
        dtype = self.arguments.get("x-delayed-type")
        if isinstance(dtype, bytes):
            dtype = dtype.decode("utf-8", "replace")
        if dtype == TYPE_NAME:
            raise ChannelError(errors.PRECONDITION_FAILED,
                               "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'")
        if not isinstance(dtype, str):
            raise ChannelError(errors.PRECONDITION_FAILED,
                               "Invalid argument, 'x-delayed-type' must be an existing exchange type")
        cls = EXCHANGE_TYPES.get(dtype)
        if cls is None:
            raise ChannelError(errors.PRECONDITION_FAILED, f"unknown exchange type '{dtype}'")
        self.routing = cls(vhost, name, durable, auto_delete, internal, arguments)
        self.waiting = 0  # messages held

    @property
    def routes_headers(self) -> bool:
        return isinstance(self.routing, HeadersExchange)

    def _index_add(self, b: Any) -> None:
        self.routing._index_add(b)

    def _index_remove(self, b: Any) -> None:
        self.routing._index_remove(b)

    def match(self, routing_key: str, msg: Message | None) -> Collection[Any]:
        return self.routing.match(routing_key, msg)

    def info(self) -> dict:
        return {"messages_delayed": self.waiting}


# the plugin's type, known wherever exchange types are (declare, the overview's list)
EXCHANGE_TYPES[TYPE_NAME] = DelayedExchange


class DelayHost(Protocol):
    """What the scheduler needs of its vhost."""

    name: str
    services: Services | None
    exchanges: dict[str, Exchange]

    def publish(self, exchange: Exchange, msg: Message, mandatory: bool = False, skip: Any = None,
                from_client: bool = True, release: bool = False) -> PublishOutcome: ...


class _Run:
    """Records of one bucket in due order (``order`` indexes its arrays), or one record."""

    __slots__ = ("held", "bucket", "order", "pos", "ref", "due")

    def __init__(self, held: "_Held", bucket: DelayBucket, order: array | None, ref: int = 0, due: int = 0):
        self.held = held
        self.bucket = bucket
        self.order = order
        self.pos = 0
        self.ref = ref
        self.due = due

    def current(self) -> tuple[int, int]:
        """(due, ref) of the next record."""
        if self.order is None:
            return self.due, self.ref
        i = self.order[self.pos]
        return self.bucket.dues[i], self.bucket.refs[i]

    def advance(self) -> bool:
        """Move to the next record; False when none is left."""
        if self.order is None:
            return False
        self.pos += 1
        return self.pos < len(self.order)


class _Held:
    """One delayed exchange's held messages: on disk (``log``) or in memory."""

    __slots__ = ("exchange", "log", "memory", "buckets")

    def __init__(self, exchange: DelayedExchange, dlog: DelayLog | None) -> None:
        self.exchange = exchange
        self.log = dlog
        self.memory: dict[int, Message] = {}  # without a data dir: ref -> message
        self.buckets: dict[str, DelayBucket] = dlog.buckets if dlog is not None else {}


class _Split:
    """A wide bucket being cut into one group of record indexes per second."""

    __slots__ = ("held", "bucket", "pos", "groups")

    def __init__(self, held: _Held, bucket: DelayBucket) -> None:
        self.held = held
        self.bucket = bucket
        self.pos = 0
        self.groups: dict[int, array] = {}


def _act_at(bucket: DelayBucket) -> int:
    """When (ms since the epoch) a bucket not loaded yet needs the scheduler."""
    return bucket.start - (SPLIT_AHEAD_MS if bucket.width > SECOND else LOOKAHEAD_MS)


class DelayedMessages:
    """The held messages of one vhost's delayed exchanges, and the timer that releases them."""

    def __init__(self, host: DelayHost) -> None:
        self.host = host
        self.held: dict[str, _Held] = {}  # exchange name -> its messages
        # buckets (group None) and per-second groups of split buckets not loaded, by when to act
        self.starts: list[tuple[int, int, _Held, DelayBucket, array | None]] = []
        self.splits: list[_Split] = []
        self.runs: list[tuple[int, int, _Run]] = []  # loaded records, by due time
        self.seq = itertools.count()
        self.timer: Any = None
        self.timer_at = 0
        self.waiting_sync: list[tuple[int, _Held, DelayBucket, int]] = []  # settles after an fsync
        self.memory_refs = itertools.count(1)

    # -- exchanges -------------------------------------------------------------------
    def attach(self, x: DelayedExchange) -> list[str]:
        """A delayed exchange was declared (or recovered): recover its held messages."""
        services = self.host.services
        store = services.store if services is not None else None
        dlog = DelayLog(store, self.host.name, x.name) if store is not None else None
        held = self.held[x.name] = _Held(x, dlog)
        problems = dlog.recover() if dlog is not None else []
        for b in held.buckets.values():
            x.waiting += b.live
            heapq.heappush(self.starts, (_act_at(b), next(self.seq), held, b, None))
        if held.buckets:
            self._arm()
        return problems

    def detach(self, x: DelayedExchange) -> None:
        """The exchange is deleted: its held messages go with it."""
        held = self.held.pop(x.name, None)
        if held is None or held.exchange is not x:
            return
        if held.log is not None:
            held.log.destroy()
        held.buckets.clear()
        held.memory.clear()
        x.waiting = 0

    def drop_all(self) -> None:
        """The vhost is deleted: every held message goes."""
        for held in list(self.held.values()):
            self.detach(held.exchange)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for held in self.held.values():
            if held.log is not None:
                held.log.close()

    # -- holding -----------------------------------------------------------------------
    def hold(self, x: DelayedExchange, msg: Message) -> PublishOutcome | None:
        """Keep ``msg`` until its ``x-delay`` is over; None if it has none (route it now)."""
        delay = delay_of(msg)
        if delay is None:
            return None
        return self.hold_until(x, msg, int(time.time() * 1000) + delay, delay)

    def hold_until(self, x: DelayedExchange, msg: Message, due: int, delay: int) -> PublishOutcome:
        """Keep ``msg`` until ``due`` (ms since the epoch) in the bucket a ``delay`` chooses."""
        held = self.held[x.name]
        status = PUSH_OK
        if held.log is None:
            width = bucket_width(delay)
            start = due - due % width
            bucket = held.buckets.get(f"{width}-{start}")
            if bucket is None:
                bucket = held.buckets[f"{width}-{start}"] = DelayBucket(f"{width}-{start}", start, width, None)
            ref = next(self.memory_refs)
            held.memory[ref] = msg
            bucket.live += 1
        else:
            services = self.host.services
            assert services is not None and services.store is not None
            size = len(msg.body) + len(msg.header) + RECORD_OVERHEAD_MAX
            if services.store.appended_bytes + size > services.monitor.disk_mark \
                    and not services.monitor.admit_disk_write(size):
                return PublishOutcome(True, (), False, PUSH_REJECTED)
            persistent = x.durable and framing.delivery_mode(msg.header) == 2
            try:
                bucket = held.log.bucket_for(due, delay)
                ref = held.log.append(bucket, due, persistent, msg.ex_raw, msg.rk_raw, msg.header, msg.body)
            except OSError as exc:
                log.error("cannot keep a delayed message of exchange '%s': %s", x.name, exc)
                return PublishOutcome(True, (), False, PUSH_REJECTED)
            if persistent:
                status = PUSH_SYNC
        x.waiting += 1
        if bucket.loaded:
            heapq.heappush(self.runs, (due, next(self.seq), _Run(held, bucket, None, ref, due)))
        else:
            if not bucket.dues:
                heapq.heappush(self.starts, (_act_at(bucket), next(self.seq), held, bucket, None))
            bucket.dues.append(due)
            bucket.refs.append(ref)
        self._arm()
        return PublishOutcome(True, (), False, status)

    # -- the timer ---------------------------------------------------------------------
    def _next_wake(self) -> int | None:
        """When (ms since the epoch) there is work next."""
        if self.splits:
            return 0
        at = None
        if self.runs:
            at = self.runs[0][0]
        if self.starts:
            s = self.starts[0][0]
            at = s if at is None else min(at, s)
        return at

    def _arm(self) -> None:
        at = self._next_wake()
        if at is None:
            return
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        services = self.host.services
        loop = services.loop if services is not None else None
        if loop is None:
            return
        self.timer_at = at
        self.timer = loop.call_at(loop.time() + max(0.0, (at - time.time() * 1000) / 1000), self._tick)

    def _tick(self) -> None:
        self.timer = None
        now = int(time.time() * 1000)
        starts = self.starts
        while starts and starts[0][0] <= now:
            _s, _n, held, bucket, group = heapq.heappop(starts)
            if group is not None:
                self._load_group(held, bucket, group)
            elif bucket.width > SECOND:
                self.splits.append(_Split(held, bucket))
            else:
                self._load(held, bucket)
        if self.splits:
            self._split_step()
        runs = self.runs
        n = 0
        while runs and runs[0][0] <= now and n < BATCH:
            due, _n, run = runs[0]
            ref = run.current()[1]
            if run.advance():
                heapq.heapreplace(runs, (run.current()[0], next(self.seq), run))
            else:
                heapq.heappop(runs)
            self._release(run.held, run.bucket, ref)
            n += 1
        if self.splits or (n >= BATCH and runs and runs[0][0] <= now):
            services = self.host.services
            if services is not None and services.loop is not None:
                self.timer_at = now
                self.timer = services.loop.call_soon(self._tick)
                return
        self._arm()

    def _split_step(self) -> None:
        """Cut the next chunk of the first bucket being split; when done, queue its groups."""
        sp = self.splits[0]
        bucket = sp.bucket
        if sp.held.buckets.get(bucket.key) is not bucket or self.held.get(sp.held.exchange.name) is not sp.held:
            self.splits.pop(0)  # deleted meanwhile
            return
        dues, groups = bucket.dues, sp.groups
        end = min(len(dues), sp.pos + SPLIT_CHUNK)
        for i in range(sp.pos, end):
            sec = dues[i] // SECOND
            g = groups.get(sec)
            if g is None:
                g = groups[sec] = array("I")
            g.append(i)
        sp.pos = end
        if end < len(dues):
            return
        bucket.loaded = True  # from now on, records added to it are single runs
        self.splits.pop(0)
        for sec, group in groups.items():
            heapq.heappush(self.starts, (sec * SECOND - LOOKAHEAD_MS, next(self.seq), sp.held, bucket, group))

    def _load_group(self, held: _Held, bucket: DelayBucket, group: array) -> None:
        """One second of a split bucket: its records join the runs, in due order."""
        if held.buckets.get(bucket.key) is not bucket or self.held.get(held.exchange.name) is not held:
            return
        dues = bucket.dues
        run = _Run(held, bucket, array("I", sorted(group, key=dues.__getitem__)))
        heapq.heappush(self.runs, (run.current()[0], next(self.seq), run))

    def _load(self, held: _Held, bucket: DelayBucket) -> None:
        """A bucket's time is near: its records join the runs, in due order."""
        if bucket.loaded or held.buckets.get(bucket.key) is not bucket:
            return
        bucket.loaded = True
        dues = bucket.dues
        if not dues:
            return
        order = array("I", sorted(range(len(dues)), key=dues.__getitem__))
        run = _Run(held, bucket, order)
        heapq.heappush(self.runs, (run.current()[0], next(self.seq), run))

    # -- releasing -----------------------------------------------------------------------
    def _release(self, held: _Held, bucket: DelayBucket, ref: int) -> None:
        """Route one due record through the vhost's publish path, then settle it."""
        x = held.exchange
        if self.held.get(x.name) is not held:
            return  # the exchange was deleted
        msg = self._message(held, bucket, ref)
        status = PUSH_OK
        if msg is not None:
            out = self.host.publish(x, msg, from_client=False, release=True)
            status = out.status
        x.waiting -= 1
        services = self.host.services
        store = services.store if services is not None else None
        if status == PUSH_SYNC and store is not None:
            # settled once the queues' copies are on disk (see synced)
            self.waiting_sync.append((store.want_sync(), held, bucket, ref))
            store.sync_waiters.add(self)
        else:
            self._settle(held, bucket, ref)

    def _message(self, held: _Held, bucket: DelayBucket, ref: int) -> Message | None:
        x = held.exchange
        if held.log is None:
            return held.memory.pop(ref, None)
        try:
            _persistent, _due, ex_raw, rk_raw, header, body = bucket.read(ref)
        except (OSError, StorageError) as exc:
            log.error("delayed message of exchange '%s' cannot be read: %s; dropped", x.name, exc)
            return None
        msg = Message(x.name, rk_raw[1:].decode("utf-8", "replace"), ex_raw, rk_raw, header, body)
        try:  # per-message TTL counts from now, as with the plugin; CC routing keys
            check_properties(msg, msg.properties.user_id or "", None)
        except ChannelError:
            pass
        return msg

    def _settle(self, held: _Held, bucket: DelayBucket, ref: int) -> None:
        if bucket.settle(ref) and bucket.loaded:
            held.buckets.pop(bucket.key, None)
            if held.log is not None:
                held.log.drop_bucket(bucket)

    # -- the store's SyncWaiter -------------------------------------------------------
    def synced(self, epoch: int) -> bool:
        keep = []
        for item in self.waiting_sync:
            if item[0] <= epoch:
                self._settle(item[1], item[2], item[3])
            else:
                keep.append(item)
        self.waiting_sync = keep
        return bool(keep)

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        # the queues lost their copies: keep the records (they go out again after a restart)
        self.waiting_sync = [item for item in self.waiting_sync if item[0] > epoch]
        return bool(self.waiting_sync)
