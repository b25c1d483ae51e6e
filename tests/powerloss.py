"""Power-loss checking: a broker on a :class:`storage.crashfs.CrashFS`, crash images
taken at random file operations, and recovery checked against what clients saw.

A *run* starts a real :class:`broker.server.Broker` in this process on an
in-memory file system and drives it with aio-pika over a real socket: confirmed
publishing (persistent and transient), basic.get + ack, queue declares and
deletes (then the same name again), segment rolls (small segments) and idle
segment drops.  Before each chosen file operation the file system's crash image
is taken together with the client's event log so far (an append-only list, so
taking its length is safe from the fsync thread).  Afterwards each image is
recovered by a new Broker and checked:

- every confirmed persistent message of a queue not being deleted is there
  exactly once (and nowhere else);
- no acked message comes back once a later publish has been confirmed (the
  group commit that confirms it also makes the ack durable);
- nothing corrupt: each recovered message is one that was published as
  persistent, with its exact body, in its own queue;
- no message of a deleted queue comes back into a queue of the same name
  declared after a later confirm.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
from dataclasses import dataclass, field

import aio_pika

import storage.log as slog
from broker.message import Message
from broker.server import Broker
from storage.crashfs import CrashFS

# event kinds in the client's log
PUB, CONF, ACK, DEL, DEL_OK = "pub", "conf", "ack", "del", "del_ok"


def body_of(mid: str) -> bytes:
    """The one body message ``mid`` is published with (so corruption shows)."""
    pad = hashlib.sha256(mid.encode()).hexdigest()
    return f"{mid}|{pad * 2}".encode()


def mid_of(body: bytes) -> str:
    return body.split(b"|", 1)[0].decode()


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


async def run_workload(seed: int, data_dir: str, crash_every: float, steps: int = 60) -> RunResult:
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
        names = [f"q{i}" for i in range(3)]
        gens = dict.fromkeys(names, 0)
        queues = {n: await ch.declare_queue(n, durable=True) for n in names}
        counter = 0
        for _step in range(steps):
            r = rng.random()
            name = rng.choice(names)
            if r < 0.55:
                k = rng.randint(1, 12)
                sends = []
                for _ in range(k):
                    counter += 1
                    persistent = rng.random() < 0.85
                    mid = f"{name}.{gens[name]}.{counter}"
                    events.append((PUB, mid, persistent))
                    msg = aio_pika.Message(
                        body_of(mid),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
                    )
                    sends.append((mid, ch.default_exchange.publish(msg, routing_key=name)))
                for mid, coro in sends:
                    await coro
                    events.append((CONF, mid))
            elif r < 0.85:
                for _ in range(rng.randint(1, 10)):
                    got = await queues[name].get(no_ack=False, fail=False)
                    if got is None:
                        break
                    events.append((ACK, mid_of(got.body)))
                    await got.ack()
            elif r < 0.92:
                assert broker.store is not None
                broker.store.housekeep(idle=0.0)  # roll and drop settled write segments now
            else:
                events.append((DEL, name, gens[name]))
                await queues[name].delete(if_unused=False, if_empty=False)
                events.append((DEL_OK, name, gens[name]))
                gens[name] += 1
                queues[name] = await ch.declare_queue(name, durable=True)
        await conn.close()
    finally:
        fs.before_op = None
        res.ops = fs.ops
        await broker.stop()
    return res


def recover(image: CrashFS, data_dir: str) -> dict[str, list[tuple[bytes, bool]]]:
    """Recover a crash image with a new broker: each queue's (body, persistent) in order."""
    b = Broker(host="127.0.0.1", port=0, data_dir=data_dir, file_io=image, disk_free_limit=0)
    assert b.store is not None
    b.store.open()
    try:
        b.recover()
        out: dict[str, list[tuple[bytes, bool]]] = {}
        for vh in b.vhosts.values():
            for q in vh.queues.values():
                got = []
                for e in q.messages:  # type: ignore[attr-defined]
                    m = e if isinstance(e, Message) else q._load(e)  # type: ignore[attr-defined]
                    persistent = True if m.ref is None else q.log.read(m.ref)[0]  # type: ignore[attr-defined]
                    got.append((m.body, persistent))
                out[q.name] = got
        return out
    finally:
        b.store.close()


def check(events: list[tuple], recovered: dict[str, list[tuple[bytes, bool]]]) -> list[str]:
    """What the recovered queues get wrong, given the client's events up to the crash."""
    problems: list[str] = []
    published: dict[str, bool] = {}
    pub_at: dict[str, int] = {}
    confirmed: set[str] = set()
    acked_at: dict[str, int] = {}
    deleting: set[tuple[str, int]] = set()
    deleted_at: dict[tuple[str, int], int] = {}
    last_durable = -1  # index of the latest publish whose confirm was seen
    for i, ev in enumerate(events):
        kind = ev[0]
        if kind == PUB:
            published[ev[1]] = ev[2]
            pub_at[ev[1]] = i
        elif kind == CONF:
            confirmed.add(ev[1])
            if published.get(ev[1]):
                last_durable = max(last_durable, pub_at[ev[1]])
        elif kind == ACK:
            acked_at[ev[1]] = i
        elif kind == DEL:
            deleting.add((ev[1], ev[2]))
        elif kind == DEL_OK:
            deleted_at[(ev[1], ev[2])] = i
    seen: dict[str, str] = {}
    for qname, msgs in recovered.items():
        for body, persistent in msgs:
            try:
                mid = mid_of(body)
            except (UnicodeDecodeError, IndexError):
                problems.append(f"{qname}: unreadable body {body[:40]!r}")
                continue
            if body != body_of(mid):
                problems.append(f"{qname}: corrupt body for {mid}")
                continue
            if mid not in published:
                problems.append(f"{qname}: {mid} was never published")
                continue
            if not published[mid] or not persistent:
                problems.append(f"{qname}: transient {mid} survived the restart")
            q, gen, _n = mid.split(".")
            if q != qname:
                problems.append(f"{mid} recovered into queue {qname}")
            if mid in seen:
                problems.append(f"{mid} recovered twice ({seen[mid]} and {qname})")
            seen[mid] = qname
            if mid in acked_at and acked_at[mid] < last_durable:
                problems.append(f"{qname}: {mid} was acked before a later confirm, yet came back")
            d = deleted_at.get((q, int(gen)))
            if d is not None and d < last_durable:
                problems.append(f"{qname}: {mid} of a deleted queue came back")
    for mid in sorted(confirmed):
        if not published[mid] or mid in acked_at:
            continue
        q, gen, _n = mid.split(".")
        if (q, int(gen)) in deleting:
            continue
        if mid not in seen:
            problems.append(f"confirmed persistent {mid} lost")
    return problems


@dataclass
class Report:
    runs: int = 0
    crash_points: int = 0
    ops: int = 0
    failures: list[str] = field(default_factory=list)


def exercise(seeds: range, crash_every: float, steps: int = 60, segment_size: int = 2048,
             max_failures: int = 20) -> Report:
    """Run the workload for each seed, recover every crash image and check it."""
    report = Report()
    saved = slog.SEGMENT_SIZE
    slog.SEGMENT_SIZE = segment_size
    try:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="powerloss-") as data_dir:  # real, empty: only its path is used
                res = asyncio.run(run_workload(seed, data_dir, crash_every, steps))
            report.runs += 1
            report.ops += res.ops
            for img in res.images:
                report.crash_points += 1
                try:
                    recovered = recover(img.fs, data_dir)
                except Exception as exc:  # noqa: BLE001 - a recovery that fails is a finding
                    problems = [f"recovery failed: {type(exc).__name__}: {exc}"]
                else:
                    problems = check(res.events[: img.events], recovered)
                if problems and len(report.failures) < max_failures:
                    report.failures.append(
                        f"seed {seed}, crash before op {img.op} ({img.what}): " + "; ".join(problems[:5])
                    )
    finally:
        slog.SEGMENT_SIZE = saved
    return report
