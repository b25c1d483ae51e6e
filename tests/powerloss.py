"""Power-loss checking: a broker on a :class:`storage.crashfs.CrashFS`, crash images
taken at random file operations, and recovery checked against what clients saw.

A *run* starts a real :class:`broker.server.Broker` in this process on an
in-memory file system and drives it with aio-pika over a real socket.  The
workload (each part can be turned off, see :class:`Workload`):

- classic durable queues ``q0``..``q2``: confirmed publishing (persistent and
  transient), basic.get + ack, queue deletes and redeclares of the same name,
  segment rolls (small segments) and idle segment drops;
- a quorum queue ``qq`` (no delivery limit): confirmed publishing, basic.get
  then ack, or nack with requeue (its delivery count goes up);
- a durable stream ``s`` with small segments and a small ``x-max-length-bytes``
  (retention drops old segments as it grows), read by a consumer from ``first``;
- metadata churn: durable and transient exchanges declared and deleted,
  exchange-to-queue and exchange-to-exchange bindings made and removed,
  queues ``m0``, ``m1`` declared and deleted, and confirmed publishes through
  those exchanges (each routed to the queues the client's model of the
  bindings says, one copy per queue).

Before each chosen file operation the file system's crash image is taken
together with the client's event log so far (an append-only list, so taking its
length is safe from the fsync thread).  Afterwards each image is recovered by a
new Broker and checked (:func:`check`):

- every confirmed message that must persist (persistent to a classic queue, any
  to the quorum queue or the stream) of a queue not being deleted is there
  exactly once (and nowhere else); in the stream, unless retention may have
  dropped it (see :func:`check`);
- no acked message comes back once a later publish has been confirmed (the
  group commit that confirms it also makes the ack durable);
- a quorum message's delivery count is at least what the client's last nack
  made it, once a later publish has been confirmed;
- nothing corrupt: each recovered message is one that was published (as
  persistent, for a classic queue), with its exact body, in its own queue;
- the stream reads from ``first`` in offset order, each record's stamped
  ``x-stream-offset`` is its offset, and an offset the consumer saw holding a
  message never holds another one, now or after the next append;
- no message of a deleted queue comes back into a queue of the same name
  declared after a later confirm;
- metadata: the definitions are saved (temporary file, fsync, rename, fsync of
  the directory) before the answer goes out, so every durable exchange, queue
  and binding whose Declare-Ok / Bind-Ok the client received is there, and
  every one whose Delete-Ok / Unbind-Ok it received is gone, whatever happened
  after; transient ones never come back.  Only a change still in flight at the
  crash may go either way.

With ``recrash`` (:func:`exercise`), power is also lost again at random file
operations of a recovery; each of those images is recovered and checked against
the same events.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import tempfile
from dataclasses import dataclass, field

import aio_pika

import broker.queues.stream as stream_queue
import storage.log as slog
from broker.message import Message
from broker.queues.quorum import QuorumQueue
from broker.queues.stream import StreamQueue
from broker.server import Broker
from storage.crashfs import CrashFS
from storage.stream_log import Cursor

# event kinds in the client's log
PUB, CONF, ACK, NACK, DEL, DEL_OK, SEEN, MSEND, MOK, ROUTE = (
    "pub", "conf", "ack", "nack", "del", "del_ok", "seen", "msend", "mok", "route"
)
ROUTED = "x"  # the first part of the id of a message published through the churned exchanges
CLASSIC = ("q0", "q1", "q2")
QUORUM = "qq"
STREAM = "s"
STREAM_SEGMENT = 2048  # bytes: a stream segment rolls every few records
STREAM_MAX_BYTES = 4 * STREAM_SEGMENT  # retention keeps about this much
RECORD_OVERHEAD = 200  # more than a stream record's bytes besides its body (head, offsets, names, header)
EXCHANGES = {"e0": ("direct", True), "e1": ("topic", True), "e2": ("fanout", False), "e3": ("fanout", True)}
AUX_QUEUES = ("m0", "m1")
_OFFSET_ENTRY = b"\x0fx-stream-offsetl"


def body_of(mid: str) -> bytes:
    """The one body message ``mid`` is published with (so corruption shows)."""
    pad = hashlib.sha256(mid.encode()).hexdigest()
    return f"{mid}|{pad * 2}".encode()


def mid_of(body: bytes) -> str:
    return body.split(b"|", 1)[0].decode()


@dataclass(frozen=True)
class Workload:
    """What a run does besides the classic queues."""

    quorum: bool = True
    stream: bool = True
    metadata: bool = True


@dataclass
class Image:
    fs: CrashFS
    events: int  # how many client events had happened when it was taken
    op: int
    what: str


@dataclass
class RunResult:
    images: list[Image] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    ops: int = 0


@dataclass
class Recovered:
    """What a broker recovered from a crash image."""

    # queue -> (body, persistent, delivery count) in order
    queues: dict[str, list[tuple[bytes, bool, int]]] = field(default_factory=dict)
    # stream -> (offset, header, body) from its first offset on
    streams: dict[str, list[tuple[int, bytes, bytes]]] = field(default_factory=dict)
    next_offsets: dict[str, int] = field(default_factory=dict)  # stream -> the offset its next append gets
    # ("exchange", name), ("queue", name), ("binding", source, destination, routing key)
    topology: set[tuple] = field(default_factory=set)


class _Topology:
    """The client's model of the metadata it changes, and the events it logs."""

    def __init__(self, events: list[tuple]) -> None:
        self.events = events
        self.exchanges: set[str] = set()
        self.queues: set[str] = set(AUX_QUEUES)
        self.bindings: set[tuple[str, str, str]] = set()  # (source, destination, routing key)
        self.gens = dict.fromkeys(AUX_QUEUES, 0)  # how often each queue was deleted

    def route(self, exchange: str, rk: str) -> list[tuple[str, int]]:
        """The queues (and their generations) a publish to ``exchange`` reaches: bindings
        match the routing key exactly (direct, and topic with one-word keys) or always
        (fanout), and exchange-to-exchange bindings route on with the same key."""
        out: set[str] = set()
        todo, done = [exchange], set()
        while todo:
            x = todo.pop()
            if x in done:
                continue
            done.add(x)
            for src, dst, key in self.bindings:
                if src != x or (EXCHANGES[x][0] != "fanout" and key != rk):
                    continue
                if dst in self.queues:
                    out.add(dst)
                else:
                    todo.append(dst)
        return sorted((q, self.gens[q]) for q in out)

    def _keys_gone_with(self, name: str) -> list[tuple]:
        return [("binding", *b) for b in self.bindings if name in (b[0], b[1])]

    async def step(self, ch: aio_pika.abc.AbstractChannel, rng: random.Random) -> None:
        r = rng.random()
        ev = self.events
        if r < 0.2:
            name = rng.choice(sorted(EXCHANGES))
            kind, durable = EXCHANGES[name]
            if name in self.exchanges:
                keys = [("exchange", name), *self._keys_gone_with(name)]
                ev += [(MSEND, k, False) for k in keys]
                await ch.exchange_delete(name)
                ev += [(MOK, k, False) for k in keys]
                self.exchanges.discard(name)
                self.bindings = {b for b in self.bindings if name not in (b[0], b[1])}
            else:
                ev.append((MSEND, ("exchange", name), True))
                await ch.declare_exchange(name, kind, durable=durable)
                ev.append((MOK, ("exchange", name), True))
                self.exchanges.add(name)
        elif r < 0.3:
            name = rng.choice(AUX_QUEUES)
            if name in self.queues:
                keys = [("queue", name), *self._keys_gone_with(name)]
                ev.append((DEL, name, self.gens[name]))
                ev += [(MSEND, k, False) for k in keys]
                await ch.queue_delete(name)
                ev.append((DEL_OK, name, self.gens[name]))
                ev += [(MOK, k, False) for k in keys]
                self.gens[name] += 1
                self.queues.discard(name)
                self.bindings = {b for b in self.bindings if name != b[1]}
            else:
                ev.append((MSEND, ("queue", name), True))
                await ch.declare_queue(name, durable=True)
                ev.append((MOK, ("queue", name), True))
                self.queues.add(name)
        else:
            sources = sorted(self.exchanges)
            if not sources:
                return
            if self.bindings and rng.random() < 0.3:
                b = rng.choice(sorted(self.bindings))
            else:
                src = rng.choice(sources)
                dests = sorted(self.queues | self.exchanges - {src})
                if not dests:
                    return
                b = (src, rng.choice(dests), rng.choice(("a", "b")))
            src, dst, rk = b
            key = ("binding", *b)
            bind = b not in self.bindings
            ev.append((MSEND, key, bind))
            if dst in self.queues:
                q = await ch.declare_queue(dst, passive=True)
                await (q.bind(src, rk) if bind else q.unbind(src, rk))
            else:
                x = await ch.get_exchange(dst, ensure=False)
                await (x.bind(src, rk) if bind else x.unbind(src, rk))
            ev.append((MOK, key, bind))
            if bind:
                self.bindings.add(b)
            else:
                self.bindings.discard(b)


async def run_workload(
    seed: int, data_dir: str, crash_every: float, steps: int = 60, work: Workload = Workload()
) -> RunResult:
    """One broker run on a CrashFS; ``crash_every`` is the chance that a crash image is
    taken before any one file operation."""
    rng = random.Random(seed)
    crash_rng = random.Random(seed * 7 + 1)
    fs = CrashFS()
    fs.makedirs(data_dir)
    parts = data_dir.strip("/").split("/")
    for i in range(len(parts) + 1):  # the data directory itself exists durably already
        fs.fsync_dir("/" + "/".join(parts[:i]))
    res = RunResult()
    events = res.events

    def before_op(n: int, what: str, path: str) -> None:
        if crash_rng.random() < crash_every:
            res.images.append(Image(fs.crash(crash_rng), len(events), n, f"{what} {path}"))

    broker = Broker(host="127.0.0.1", port=0, data_dir=data_dir, file_io=fs, heartbeat=0, disk_free_limit=0)
    await broker.start()
    fs.before_op = before_op
    try:
        conn = await aio_pika.connect(host="127.0.0.1", port=broker.port, login="guest", password="guest")
        ch = await conn.channel(publisher_confirms=True)
        sch = await conn.channel()
        await sch.set_qos(prefetch_count=50)

        async def on_stream(m: aio_pika.abc.AbstractIncomingMessage) -> None:
            events.append((SEEN, int(m.headers["x-stream-offset"]), mid_of(m.body)))  # type: ignore[arg-type]
            await m.ack()

        async def declare(name: str) -> aio_pika.abc.AbstractQueue:
            if name == QUORUM:
                return await ch.declare_queue(name, durable=True, arguments={
                    "x-queue-type": "quorum", "x-delivery-limit": -1})
            if name == STREAM:
                await ch.declare_queue(name, durable=True, arguments={
                    "x-queue-type": "stream", "x-stream-max-segment-size-bytes": STREAM_SEGMENT,
                    "x-max-length-bytes": STREAM_MAX_BYTES})
                sq = await sch.declare_queue(STREAM, passive=True)  # its consumer reads from first
                await sq.consume(on_stream, arguments={"x-stream-offset": "first"})
                return sq
            return await ch.declare_queue(name, durable=True)

        names = list(CLASSIC) + [QUORUM] * work.quorum + [STREAM] * work.stream
        queues = {n: await declare(n) for n in names}
        topo = _Topology(events)
        mch = None
        if work.metadata:
            mch = await conn.channel()
            for n in AUX_QUEUES:
                await mch.declare_queue(n, durable=True)
        for n in names + list(topo.queues if work.metadata else ()):
            events.append((MOK, ("queue", n), True))
        gens = dict.fromkeys(names, 0)
        counter = 0
        for _step in range(steps):
            r = rng.random()
            name = rng.choice(names)
            if r < 0.15 and mch is not None:
                for _ in range(rng.randint(1, 4)):
                    await topo.step(mch, rng)
            elif r < 0.55:
                k = rng.randint(1, 12)
                sends = []
                via = None
                if mch is not None and topo.exchanges and rng.random() < 0.3:
                    via = await ch.get_exchange(rng.choice(sorted(topo.exchanges)), ensure=False)
                for _ in range(k):
                    counter += 1
                    persistent = rng.random() < 0.85
                    msg_kw = dict(delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent
                                  else aio_pika.DeliveryMode.NOT_PERSISTENT)
                    if via is not None:
                        mid = f"{ROUTED}.0.{counter}"
                        rk = rng.choice(("a", "b"))
                        events.append((ROUTE, mid, topo.route(via.name, rk)))
                        events.append((PUB, mid, persistent))
                        sends.append((mid, via.publish(aio_pika.Message(body_of(mid), **msg_kw), routing_key=rk)))
                        continue
                    mid = f"{name}.{gens[name]}.{counter}"
                    events.append((PUB, mid, persistent))
                    sends.append((mid, ch.default_exchange.publish(
                        aio_pika.Message(body_of(mid), **msg_kw), routing_key=name)))
                for mid, coro in sends:
                    await coro
                    events.append((CONF, mid))
            elif r < 0.85 and name != STREAM:
                for _ in range(rng.randint(1, 10)):
                    got = await queues[name].get(no_ack=False, fail=False)
                    if got is None:
                        break
                    mid = mid_of(got.body)
                    if name == QUORUM and rng.random() < 0.4:
                        count = int(got.headers.get("x-delivery-count", 0))  # type: ignore[arg-type]
                        events.append((NACK, mid, count + 1))
                        await got.nack(requeue=True)
                    else:
                        events.append((ACK, mid))
                        await got.ack()
            elif r < 0.92 or (name == STREAM and rng.random() < 0.8):  # a stream lives long enough to retain
                assert broker.store is not None
                broker.store.housekeep(idle=0.0)  # roll and drop settled write segments now
            else:  # delete the queue, and declare it again
                events.append((DEL, name, gens[name]))
                events.append((MSEND, ("queue", name), False))
                await ch.queue_delete(name)
                events.append((DEL_OK, name, gens[name]))
                events.append((MOK, ("queue", name), False))
                gens[name] += 1
                events.append((MSEND, ("queue", name), True))
                queues[name] = await declare(name)
                events.append((MOK, ("queue", name), True))
        await conn.close()
    finally:
        fs.before_op = None
        res.ops = fs.ops
        await broker.stop()
    return res


def recover(image: CrashFS, data_dir: str) -> Recovered:
    """Recover a crash image with a new broker: what its queues, streams and definitions hold."""
    b = Broker(host="127.0.0.1", port=0, data_dir=data_dir, file_io=image, disk_free_limit=0)
    assert b.store is not None
    b.store.open()
    out = Recovered()
    try:
        b.recover()
        for vh in b.vhosts.values():
            for q in vh.queues.values():
                if isinstance(q, StreamQueue):
                    s = q.stream
                    assert s is not None
                    recs = s.read(Cursor(s.first_offset), 1 << 30, 1 << 40)
                    out.streams[q.name] = [(r[0], r[5], r[6]) for r in recs]
                    out.next_offsets[q.name] = s.next_offset
                    continue
                got = []
                returns = q.returns if isinstance(q, QuorumQueue) else {}
                for e in q.messages:  # type: ignore[attr-defined]
                    m = e if isinstance(e, Message) else q._load(e)  # type: ignore[attr-defined]
                    persistent = True if m.ref is None else q.log.read(m.ref)[0]  # type: ignore[attr-defined]
                    got.append((m.body, persistent, returns.get(m.seq, 0)))
                out.queues[q.name] = got
        defs = b.definitions()
        out.topology |= {("exchange", x["name"]) for x in defs["exchanges"]}
        out.topology |= {("queue", q["name"]) for q in defs["queues"]}
        out.topology |= {("binding", x["source"], x["destination"], x["routing_key"]) for x in defs["bindings"]}
        return out
    finally:
        b.store.close()


def _durable_key(key: tuple) -> bool:
    """Whether the broker keeps this exchange, queue or binding across a restart."""
    def durable(name: str) -> bool:
        return EXCHANGES[name][1] if name in EXCHANGES else True

    if key[0] == "binding":
        return durable(key[1]) and durable(key[2])
    return durable(key[1])


def check(events: list[tuple], rec: Recovered) -> list[str]:
    """What the recovered broker gets wrong, given the client's events up to the crash."""
    problems: list[str] = []
    published: dict[str, bool] = {}
    pub_at: dict[str, int] = {}
    confirmed: set[str] = set()
    acked_at: dict[str, int] = {}
    nacked: dict[str, tuple[int, int]] = {}  # mid -> (event index, delivery count after it)
    deleting: set[tuple[str, int]] = set()
    deleted_at: dict[tuple[str, int], int] = {}
    seen_at: dict[tuple[int, int], str] = {}  # (generation, offset) -> the message the consumer saw there
    seen_offset: dict[str, int] = {}  # message -> the offset it was seen at
    stream_gen = 0  # the stream's generation: how often it was deleted
    routes: dict[str, list[tuple[str, int]]] = {}  # routed message -> the (queue, generation)s it went to
    stream_pubs: list[str] = []
    meta: dict[tuple, tuple[bool, bool]] = {}  # key -> (state acknowledged, a change in flight)
    last_durable = -1  # index of the latest publish whose confirm says it is on disk
    for i, ev in enumerate(events):
        kind = ev[0]
        if kind == PUB:
            published[ev[1]] = ev[2]
            pub_at[ev[1]] = i
            if ev[1].startswith(STREAM + "."):
                stream_pubs.append(ev[1])
        elif kind == CONF:
            confirmed.add(ev[1])
            # an unroutable message is confirmed at once: that says nothing about the disk
            if _must_persist(ev[1], published[ev[1]]) and routes.get(ev[1], True):
                last_durable = max(last_durable, pub_at[ev[1]])
        elif kind == ACK:
            acked_at[ev[1]] = i
        elif kind == NACK:
            nacked[ev[1]] = (i, ev[2])
        elif kind == ROUTE:
            routes[ev[1]] = ev[2]
        elif kind == DEL:
            deleting.add((ev[1], ev[2]))
        elif kind == DEL_OK:
            deleted_at[(ev[1], ev[2])] = i
            if ev[1] == STREAM:
                stream_gen = ev[2] + 1
        elif kind == SEEN:
            seen_at.setdefault((int(ev[2].split(".")[1]), ev[1]), ev[2])
            seen_offset.setdefault(ev[2], ev[1])
        elif kind == MSEND:
            meta[ev[1]] = (meta.get(ev[1], (False, False))[0], True)
        elif kind == MOK:
            meta[ev[1]] = (ev[2], False)
    seen: dict[str, str] = {}  # message -> the queue it was recovered in
    seen_routed: set[tuple[str, str]] = set()  # (routed message, queue)

    def recovered_mid(qname: str, body: bytes) -> str | None:
        try:
            mid = mid_of(body)
        except (UnicodeDecodeError, IndexError):
            problems.append(f"{qname}: unreadable body {body[:40]!r}")
            return None
        if body != body_of(mid):
            problems.append(f"{qname}: corrupt body for {mid}")
            return None
        if mid not in published:
            problems.append(f"{qname}: {mid} was never published")
            return None
        if mid.split(".")[0] == ROUTED:
            gens = [g for q, g in routes[mid] if q == qname]
            if not gens:
                problems.append(f"{mid} recovered into queue {qname}, not routed there")
            elif all(deleted_at.get((qname, g), last_durable) < last_durable for g in gens):
                problems.append(f"{qname}: {mid} of a deleted queue came back")
            if (mid, qname) in seen_routed:
                problems.append(f"{mid} recovered twice in {qname}")
            seen_routed.add((mid, qname))
            return mid
        if mid.split(".")[0] != qname:
            problems.append(f"{mid} recovered into queue {qname}")
        if mid in seen:
            problems.append(f"{mid} recovered twice ({seen[mid]} and {qname})")
        seen[mid] = qname
        return mid

    for qname, msgs in rec.queues.items():
        for body, persistent, count in msgs:
            mid = recovered_mid(qname, body)
            if mid is None:
                continue
            if not _must_persist(mid, published[mid]) or not persistent:
                problems.append(f"{qname}: transient {mid} survived the restart")
            if mid.split(".")[0] == ROUTED:
                continue
            q, gen, _n = mid.split(".")
            if mid in acked_at and acked_at[mid] < last_durable:
                problems.append(f"{qname}: {mid} was acked before a later confirm, yet came back")
            d = deleted_at.get((q, int(gen)))
            if d is not None and d < last_durable:
                problems.append(f"{qname}: {mid} of a deleted queue came back")
            n = nacked.get(mid)
            if n is not None and n[0] < last_durable and count < n[1]:
                problems.append(f"{qname}: {mid} came back with delivery count {count}, was {n[1]} before a "
                                "later confirm")
    for sname, recs in rec.streams.items():
        # the offsets the consumer saw in the stream declared last (when no delete or
        # declare of it was in flight) are never given out again
        state, in_flight = meta.get(("queue", sname), (False, True))
        seen_now = [o for g, o in seen_at if g == stream_gen]
        nxt = rec.next_offsets[sname]
        if state and not in_flight and seen_now and nxt <= max(seen_now):
            problems.append(f"{sname}: the next append would reuse offset {nxt}, which held "
                            f"{seen_at[(stream_gen, nxt)]} before the crash")
        prev = -1
        for offset, header, body in recs:
            if offset <= prev:
                problems.append(f"{sname}: offset {offset} read after {prev}")
            prev = offset
            if _OFFSET_ENTRY + struct.pack(">q", offset) not in header:
                problems.append(f"{sname}: the record at offset {offset} is not stamped with it")
            mid = recovered_mid(sname, body)
            if mid is None:
                continue
            gen = int(mid.split(".")[1])
            d = deleted_at.get((sname, gen))
            if d is not None and d < last_durable:
                problems.append(f"{sname}: {mid} of a deleted stream came back")
            if seen_at.get((gen, offset), mid) != mid:
                problems.append(f"{sname}: offset {offset} held {seen_at[(gen, offset)]} before the crash, now {mid}")
            if seen_offset.get(mid, offset) != offset:
                problems.append(f"{sname}: {mid} was at offset {seen_offset[mid]} before the crash, now at {offset}")
    # a stream keeps at least its newest STREAM_MAX_BYTES less one segment: a confirmed
    # message with no more than that published after it is never dropped by retention
    rmax = max((len(body_of(m)) for m in stream_pubs), default=0) + RECORD_OVERHEAD
    kept = max(0, (STREAM_MAX_BYTES - STREAM_SEGMENT) // rmax) if rmax else 0
    protected = set(stream_pubs[-kept:]) if kept else set()
    for mid in sorted(confirmed):
        if not _must_persist(mid, published[mid]) or mid in acked_at:
            continue
        if mid in routes:
            for qg in routes[mid]:
                if qg not in deleting and (mid, qg[0]) not in seen_routed:
                    problems.append(f"confirmed {mid} lost from {qg[0]}")
            continue
        q, gen, _n = mid.split(".")
        if (q, int(gen)) in deleting:
            continue
        if q == STREAM and mid not in protected:
            continue
        if mid not in seen:
            problems.append(f"confirmed {mid} lost")
    for key, (state, in_flight) in sorted(meta.items()):
        if in_flight:
            continue
        expected = state and _durable_key(key)
        if expected and key not in rec.topology:
            problems.append(f"{' '.join(key)}: acknowledged by the broker, lost")
        elif not expected and key in rec.topology:
            what = "transient" if state else "deleted"
            problems.append(f"{' '.join(key)}: {what}, yet recovered")
    return problems


def _must_persist(mid: str, persistent: bool) -> bool:
    """Whether a confirm of ``mid`` means it is on disk: quorum queues and streams keep
    every message, classic queues the persistent ones."""
    return persistent or mid.split(".")[0] in (QUORUM, STREAM)


class _Recrash:
    """Crash images taken during a recovery (a power loss while recovering from one)."""

    def __init__(self, chance: float, rng: random.Random) -> None:
        self.chance = chance
        self.rng = rng
        self.images: list[Image] = []

    def watch(self, fs: CrashFS) -> None:
        def before_op(n: int, what: str, path: str) -> None:
            if self.rng.random() < self.chance:
                self.images.append(Image(fs.crash(self.rng), 0, n, f"{what} {path}"))

        fs.before_op = before_op

    def take(self) -> list[Image]:
        out, self.images = self.images, []
        return out


@dataclass
class Report:
    runs: int = 0
    crash_points: int = 0
    ops: int = 0
    failures: list[str] = field(default_factory=list)


def exercise(seeds: range, crash_every: float, steps: int = 60, segment_size: int = 2048,
             max_failures: int = 20, work: Workload = Workload(), recrash: float = 0.0) -> Report:
    """Run the workload for each seed, recover every crash image and check it.  With
    ``recrash``, the chance per file operation of recovery (and of the stop after it)
    that power is lost again there: each such image is recovered and checked too."""
    report = Report()
    saved = slog.SEGMENT_SIZE, stream_queue.MIN_SEGMENT_SIZE
    slog.SEGMENT_SIZE = segment_size
    stream_queue.MIN_SEGMENT_SIZE = STREAM_SEGMENT  # a small stream segment, to roll and retain often
    try:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="powerloss-") as data_dir:  # real, empty: only its path is used
                res = asyncio.run(run_workload(seed, data_dir, crash_every, steps, work))
            report.runs += 1
            report.ops += res.ops
            again = _Recrash(recrash, random.Random(seed * 13 + 5))
            for img in res.images:
                if recrash:
                    again.watch(img.fs)
                todo = [(img.fs, f"crash before op {img.op} ({img.what})")]
                while todo:
                    fs, where = todo.pop()
                    report.crash_points += 1
                    try:
                        recovered = recover(fs, data_dir)
                    except Exception as exc:  # noqa: BLE001 - a recovery that fails is a finding
                        problems = [f"recovery failed: {type(exc).__name__}: {exc}"]
                    else:
                        problems = check(res.events[: img.events], recovered)
                    if problems and len(report.failures) < max_failures:
                        report.failures.append(f"seed {seed}, {where}: " + "; ".join(problems[:5]))
                    todo += [(a.fs, f"{where}, then again in recovery before op {a.op} ({a.what})")
                             for a in again.take()]
    finally:
        slog.SEGMENT_SIZE, stream_queue.MIN_SEGMENT_SIZE = saved
    return report
