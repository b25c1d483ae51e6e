"""Durability against real broker processes: restart, kill -9, damaged logs, disk use.

Every test runs its own broker (``fresh_broker``) on its own data directory and
talks to it with pika.  RabbitMQ is the reference: durable things and
persistent messages on durable queues survive a restart, nothing else does;
a publisher confirm means the message survives a crash.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from conftest import ROOT

TIMEOUT = 15.0
PERSISTENT = pika.BasicProperties(delivery_mode=2)


# -- helpers --------------------------------------------------------------------


def connect(b, **kw) -> pika.BlockingConnection:
    kw.setdefault("heartbeat", 0)
    kw.setdefault("blocked_connection_timeout", 30)
    kw.setdefault("connection_attempts", 1)
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, **kw))


def restart(b, kill: bool = False) -> None:
    """Stop (SIGTERM, or SIGKILL) and start again on the same data dir and port."""
    port = b.port
    if kill:
        b.kill9()
    else:
        rc = b.stop()
        assert rc == 0, f"broker exited with {rc} on SIGTERM"
    b.start(port=port)


def close_quietly(conn) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass


def queue_files(b) -> list[Path]:
    root = Path(b.data_dir) / "queues"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def queue_bytes(b) -> int:
    total = 0
    for p in queue_files(b):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def seg_files(b) -> list[Path]:
    return sorted((Path(b.data_dir) / "queues").glob("*/*.seg"))


def get_all(ch, queue: str, limit: int = 10**6) -> list:
    """basic_get (auto-ack) until empty: [(method, properties, body)]."""
    out = []
    while len(out) < limit:
        m, p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            break
        out.append((m, p, body))
    return out


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def exists(b, kind: str, name: str) -> bool:
    """Passive declare on a throwaway connection (a 404 closes the channel)."""
    conn = connect(b)
    try:
        ch = conn.channel()
        try:
            if kind == "queue":
                ch.queue_declare(name, passive=True)
            else:
                ch.exchange_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return False
    finally:
        close_quietly(conn)


def redeclare_fails(b, fn) -> int | None:
    """Run fn(channel); return the channel close code, None if it succeeded."""
    conn = connect(b)
    try:
        ch = conn.channel()
        try:
            fn(ch)
            return None
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code
    finally:
        close_quietly(conn)


def new_log(b, since: int) -> str:
    return b.log_text()[since:]


def log_size(b) -> int:
    return len(b.log_text())


def wait_for(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def publish_confirmed(b, queue: str, bodies, props=PERSISTENT, durable: bool = True) -> None:
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare(queue, durable=durable)
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, props)
    conn.close()


# -- what a restart keeps, and what it drops -------------------------------------------


RICH_HEADERS = {
    "s": "text ü",
    "i": 42,
    "neg": -7,
    "big": 2**40,
    "t": True,
    "f": False,
    "nested": {"a": 1, "b": "two", "c": {"d": [1, "x"]}},
    "list": [1, 2, "three", {"k": "v"}],
    "void": None,
    "ts": datetime.datetime(2024, 5, 6, 7, 8, 9),
}


def rich_props(i: int) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/x-test",
        content_encoding="identity",
        headers=dict(RICH_HEADERS, n=i),
        delivery_mode=2,
        priority=i % 10,
        correlation_id=f"corr-{i}",
        reply_to=f"reply-{i}",
        message_id=f"mid-{i}",
        timestamp=1_700_000_000 + i,
        type="test.type",
        user_id="guest",
        app_id="storage-tests",
    )


PROP_FIELDS = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
)


def props_dict(p: pika.BasicProperties) -> dict:
    return {f: getattr(p, f) for f in PROP_FIELDS}


def as_received(p: pika.BasicProperties) -> dict:
    """What a client decodes from ``p`` sent unchanged (pika's own round trip,
    e.g. a naive timestamp comes back in UTC)."""
    q = pika.BasicProperties()
    q.decode(b"".join(p.encode()))
    return props_dict(q)


def rich_body(i: int) -> bytes:
    if i == 0:
        return b""
    if i == 1:
        return bytes(range(256)) * 1200  # > frame_max: several body frames
    return f"body {i} ".encode() + bytes((i * 7 + j) % 256 for j in range(i * 13))


def declare_topology(ch) -> None:
    # durable exchanges of every type, with arguments
    ch.exchange_declare("d.direct", "direct", durable=True, arguments={"alternate-exchange": "d.fanout"})
    ch.exchange_declare("d.fanout", "fanout", durable=True, arguments={"x-custom": "yes"})
    ch.exchange_declare("d.topic", "topic", durable=True)
    ch.exchange_declare("d.headers", "headers", durable=True)
    ch.exchange_declare("d.internal", "topic", durable=True, internal=True)
    ch.exchange_declare("d.autodel", "fanout", durable=True, auto_delete=True)
    # things that must not survive
    ch.exchange_declare("t.direct", "direct", durable=False)
    # durable queues with arguments
    ch.queue_declare("dq.direct", durable=True, arguments={"x-message-ttl": 600000, "x-queue-mode": "lazy"})
    ch.queue_declare("dq.fanout", durable=True, arguments={"x-dead-letter-exchange": "d.direct",
                                                            "x-dead-letter-routing-key": "dead",
                                                            "x-max-length": 100000})
    ch.queue_declare("dq.topic", durable=True)
    ch.queue_declare("dq.headers", durable=True)
    ch.queue_declare("dq.e2e", durable=True)
    ch.queue_declare("dq.amq", durable=True)
    ch.queue_declare("tq", durable=False)
    # bindings between durable things
    ch.queue_bind("dq.direct", "d.direct", "rk1")
    ch.queue_bind("dq.fanout", "d.fanout", "")
    ch.queue_bind("dq.topic", "d.topic", "a.*.c")
    ch.queue_bind("dq.topic", "d.topic", "x.#")
    ch.queue_bind("dq.headers", "d.headers", "", arguments={"x-match": "all", "h1": "v1", "h2": 2})
    ch.queue_bind("dq.amq", "amq.direct", "amqkey")
    # exchange-to-exchange: d.direct --e2e--> d.internal --#--> dq.e2e
    ch.exchange_bind("d.internal", "d.direct", "e2e")
    ch.queue_bind("dq.e2e", "d.internal", "#")
    ch.queue_bind("dq.e2e", "d.autodel", "")
    # bindings to non-durable things (must not survive)
    ch.queue_bind("tq", "d.direct", "rk-transient")
    ch.exchange_bind("t.direct", "d.direct", "to-transient")


ROUTES = [
    # (exchange, routing key, headers, the durable queue it must reach)
    ("d.direct", "rk1", None, "dq.direct"),
    ("d.fanout", "anything", None, "dq.fanout"),
    ("d.topic", "a.b.c", None, "dq.topic"),
    ("d.topic", "x.y.z", None, "dq.topic"),
    ("d.headers", "", {"h1": "v1", "h2": 2}, "dq.headers"),
    ("amq.direct", "amqkey", None, "dq.amq"),
    ("d.direct", "e2e", None, "dq.e2e"),
    ("d.autodel", "", None, "dq.e2e"),
]
DURABLE_QUEUES = ["dq.direct", "dq.fanout", "dq.topic", "dq.headers", "dq.e2e", "dq.amq"]


def check_routes(ch) -> None:
    """Each route reaches exactly its queue (and nothing else)."""
    for q in DURABLE_QUEUES:
        ch.queue_purge(q)
    for i, (x, rk, headers, _q) in enumerate(ROUTES):
        ch.basic_publish(x, rk, f"route-{i}".encode(), pika.BasicProperties(headers=headers))
    got = {q: [b for _m, _p, b in get_all(ch, q)] for q in DURABLE_QUEUES}
    want: dict[str, list[bytes]] = {q: [] for q in DURABLE_QUEUES}
    for i, (_x, _rk, _h, q) in enumerate(ROUTES):
        want[q].append(f"route-{i}".encode())
    assert got == want


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "kill9"])
def test_restart_keeps_durable_topology(fresh_broker, kill):
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    declare_topology(ch)
    # an exclusive durable queue dies with its connection and the broker
    ch.queue_declare("excl", durable=True, exclusive=True)
    check_routes(ch)  # the topology works before the restart
    conn.close()

    restart(b, kill=kill)

    for x in ("d.direct", "d.fanout", "d.topic", "d.headers", "d.internal", "d.autodel"):
        assert exists(b, "exchange", x), x
    for q in DURABLE_QUEUES:
        assert exists(b, "queue", q), q
    assert not exists(b, "exchange", "t.direct")
    assert not exists(b, "queue", "tq")
    assert not exists(b, "queue", "excl")

    conn = connect(b)
    ch = conn.channel()
    # redeclaring with the same type, flags and arguments is accepted
    ch.exchange_declare("d.direct", "direct", durable=True, arguments={"alternate-exchange": "d.fanout"})
    ch.exchange_declare("d.fanout", "fanout", durable=True, arguments={"x-custom": "yes"})
    ch.exchange_declare("d.topic", "topic", durable=True)
    ch.exchange_declare("d.headers", "headers", durable=True)
    ch.exchange_declare("d.internal", "topic", durable=True, internal=True)
    ch.exchange_declare("d.autodel", "fanout", durable=True, auto_delete=True)
    ch.queue_declare("dq.direct", durable=True, arguments={"x-message-ttl": 600000, "x-queue-mode": "lazy"})
    ch.queue_declare("dq.fanout", durable=True, arguments={"x-dead-letter-exchange": "d.direct",
                                                            "x-dead-letter-routing-key": "dead",
                                                            "x-max-length": 100000})
    # bindings survived (and only those between durable things)
    check_routes(ch)
    conn.close()

    # the types, flags and arguments were kept: a different one is refused (406)
    for fn in (
        lambda c: c.exchange_declare("d.direct", "fanout", durable=True,
                                     arguments={"alternate-exchange": "d.fanout"}),
        lambda c: c.exchange_declare("d.topic", "direct", durable=True),
        lambda c: c.exchange_declare("d.headers", "topic", durable=True),
        lambda c: c.exchange_declare("d.direct", "direct", durable=True, arguments={"alternate-exchange": "zz"}),
        lambda c: c.exchange_declare("d.internal", "topic", durable=True, internal=False),
        lambda c: c.exchange_declare("d.autodel", "fanout", durable=True, auto_delete=False),
        lambda c: c.exchange_declare("d.topic", "topic", durable=False),
        lambda c: c.queue_declare("dq.direct", durable=True, arguments={"x-message-ttl": 1000,
                                                                        "x-queue-mode": "lazy"}),
        lambda c: c.queue_declare("dq.fanout", durable=True, arguments={"x-dead-letter-exchange": "d.direct",
                                                                        "x-dead-letter-routing-key": "dead",
                                                                        "x-max-length": 5}),
        lambda c: c.queue_declare("dq.topic", durable=False),
    ):
        assert redeclare_fails(b, fn) == 406
    # the internal flag is enforced after the restart
    assert redeclare_fails(b, lambda c: c.basic_publish("d.internal", "x", b"x") or c.queue_declare(
        "dq.topic", passive=True)) == 403


def test_restart_unbind_and_delete_are_remembered(fresh_broker):
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    declare_topology(ch)
    ch.queue_unbind("dq.topic", "d.topic", "x.#")
    ch.exchange_unbind("d.internal", "d.direct", "e2e")
    ch.queue_delete("dq.amq")
    ch.exchange_delete("d.headers")
    conn.close()
    restart(b)
    assert not exists(b, "queue", "dq.amq")
    assert not exists(b, "exchange", "d.headers")
    conn = connect(b)
    ch = conn.channel()
    ch.basic_publish("d.topic", "x.y", b"unbound")
    ch.basic_publish("d.topic", "a.b.c", b"bound")
    ch.basic_publish("d.direct", "e2e", b"unbound-e2e")
    assert [bd for _m, _p, bd in get_all(ch, "dq.topic")] == [b"bound"]
    assert get_all(ch, "dq.e2e") == []
    conn.close()


TYPED_ARGS = {
    "str": "text ü",
    "bytes": b"\x00raw\xffbytes",  # pika sends bytes as a byte array ('x')
    "bytes-utf8": b"plain",
    "int": 7,
    "long": 2**40,
    "bool": True,
    "decimal": __import__("decimal").Decimal("1.25"),
    "timestamp": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
    "table": {"a": 1, "b": "two"},
    "array": [1, "two", True],
}


@pytest.mark.parametrize("kind", list(TYPED_ARGS))
def test_restart_keeps_binding_arguments_of_every_type(fresh_broker, kind):
    """Headers bindings match on their arguments' values: after a restart they
    must match the same messages, and unbinding with the same arguments works."""
    b = fresh_broker
    v = TYPED_ARGS[kind]
    args = {"x-match": "all", "k": v}
    conn = connect(b)
    ch = conn.channel()
    ch.exchange_declare("hx", "headers", durable=True)
    ch.queue_declare("hq", durable=True)
    ch.queue_bind("hq", "hx", "", arguments=args)
    ch.queue_declare("after", durable=True)  # declared after the binding: must be saved too

    def routed() -> list:
        ch.basic_publish("hx", "", b"match", pika.BasicProperties(headers={"k": v}))
        ch.basic_publish("hx", "", b"no match", pika.BasicProperties(headers={"k": "other"}))
        return [bd for _m, _p, bd in get_all(ch, "hq")]

    assert routed() == [b"match"]  # before the restart
    conn.close()
    restart(b)
    assert exists(b, "queue", "after")
    conn = connect(b)
    ch = conn.channel()
    assert routed() == [b"match"]  # the same after it
    ch.queue_unbind("hq", "hx", "", arguments=args)
    assert routed() == []
    conn.close()


def test_restart_keeps_persistent_messages_byte_exact_in_order(fresh_broker):
    b = fresh_broker
    n = 30
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.queue_declare("transient-q", durable=False)
    ch.exchange_declare("fan", "fanout", durable=True)
    ch.queue_bind("durable-q", "fan")
    ch.queue_bind("transient-q", "fan")
    ch.confirm_delivery()
    sent = []
    for i in range(n):
        p, body = rich_props(i), rich_body(i)
        ch.basic_publish("fan", "", body, p)  # to both queues
        sent.append((as_received(p), body))
        # transient messages in between, on the durable queue (must be dropped)
        ch.basic_publish("", "durable-q", f"transient {i}".encode(), pika.BasicProperties(delivery_mode=1))
        ch.basic_publish("", "durable-q", f"no mode {i}".encode(), pika.BasicProperties(content_type="x"))
    assert count(ch, "durable-q") == 3 * n
    assert count(ch, "transient-q") == n
    conn.close()

    restart(b)

    conn = connect(b)
    ch = conn.channel()
    got = get_all(ch, "durable-q")
    assert [bd for _m, _p, bd in got] == [bd for _p, bd in sent]
    for (m, p, _bd), (want_p, _want_b) in zip(got, sent):
        assert props_dict(p) == want_p
        assert m.exchange == "fan" and m.routing_key == ""
        assert m.redelivered is False
    assert not exists(b, "queue", "transient-q")
    conn.close()


def test_restart_persistent_message_on_nondurable_queue_is_lost(fresh_broker):
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("nd", durable=False)
    ch.confirm_delivery()
    ch.basic_publish("", "nd", b"persistent but the queue is not", PERSISTENT)
    conn.close()
    restart(b)
    conn = connect(b)
    ch = conn.channel()
    # RabbitMQ: the queue is gone; declare it again and it is empty
    ch.queue_declare("nd", durable=False)
    assert get_all(ch, "nd") == []
    conn.close()


def test_restart_messages_after_partial_ack(fresh_broker):
    b = fresh_broker
    publish_confirmed(b, "pa", [f"m{i}".encode() for i in range(20)])
    conn = connect(b)
    ch = conn.channel()
    tags = []
    for i in range(8):
        m, _p, body = ch.basic_get("pa")
        assert body == f"m{i}".encode()
        tags.append(m.delivery_tag)
    for i, tag in enumerate(tags):
        if i % 2 == 0:
            ch.basic_ack(tag)
        else:
            ch.basic_nack(tag, requeue=(i % 4 == 1))  # 1, 5 requeued; 3, 7 dropped
    ch.queue_declare("pa", passive=True)  # a round trip: the acks were processed
    conn.close()
    restart(b)
    conn = connect(b)
    ch = conn.channel()
    got = get_all(ch, "pa")
    assert [bd for _m, _p, bd in got] == [f"m{i}".encode() for i in [1, 5] + list(range(8, 20))]
    assert [m.redelivered for m, _p, _b in got] == [True, True] + [False] * 12
    conn.close()


# -- unacked messages at a stop or a crash ------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "kill9"])
def test_unacked_come_back_redelivered(fresh_broker, kill):
    b = fresh_broker
    publish_confirmed(b, "ua", [f"u{i}".encode() for i in range(10)])
    conn = connect(b)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=4)
    got = []
    ch.basic_consume("ua", lambda c, m, p, body: got.append(body))
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 4 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [f"u{i}".encode() for i in range(4)]
    # also one basic.get'ed message left unacked
    m, _p, body = ch.basic_get("ua")
    assert body == b"u4"
    time.sleep(0.3)  # let the broker write what it wrote
    restart(b, kill=kill)
    close_quietly(conn)

    conn = connect(b)
    ch = conn.channel()
    back = get_all(ch, "ua")
    assert [bd for _m, _p, bd in back] == [f"u{i}".encode() for i in range(10)]
    assert [m.redelivered for m, _p, _b in back] == [True] * 5 + [False] * 5
    conn.close()


# -- kill -9 while publishing with confirms and acking ------------------------------------


class Publisher(threading.Thread):
    """Publishes numbered persistent messages with confirms; reconnects after a crash."""

    def __init__(self, b, queue: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.b, self.queue, self.stop_ev = b, queue, stop
        self.confirmed: set[int] = set()
        self.attempted = 0
        self.errors: list[str] = []
        self.reconnects = 0

    def run(self) -> None:
        n = 0
        conn = None
        while not self.stop_ev.is_set():
            try:
                if conn is None or not conn.is_open:
                    conn = connect(self.b)
                    ch = conn.channel()
                    ch.confirm_delivery()
                    self.reconnects += 1
                n += 1
                self.attempted = n
                ch.basic_publish("", self.queue, str(n).encode(), PERSISTENT)
                self.confirmed.add(n)  # returned normally: the broker confirmed it
            except (pika.exceptions.AMQPError, OSError) as e:
                if not isinstance(e, (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
                                      pika.exceptions.StreamLostError, pika.exceptions.ChannelWrongStateError,
                                      pika.exceptions.ChannelClosed, OSError)):
                    self.errors.append(repr(e))
                close_quietly(conn)
                conn = None
                time.sleep(0.05)
        close_quietly(conn)


class Acker(threading.Thread):
    """basic.get's messages and acks two in three; records when each ack call returned."""

    def __init__(self, b, queue: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.b, self.queue, self.stop_ev = b, queue, stop
        self.acked: dict[int, tuple[float, float]] = {}  # n -> (got at, ack returned at)
        self.got: dict[int, float] = {}
        self.gets: dict[int, list[tuple[float, bool]]] = {}  # n -> [(got at, redelivered)]

    def run(self) -> None:
        conn = None
        while not self.stop_ev.is_set():
            try:
                if conn is None or not conn.is_open:
                    conn = connect(self.b)
                    ch = conn.channel()
                m, _p, body = ch.basic_get(self.queue)
                if m is None:
                    time.sleep(0.01)
                    continue
                n = int(body)
                got_at = time.monotonic()
                self.got[n] = got_at
                self.gets.setdefault(n, []).append((got_at, bool(m.redelivered)))
                if n % 3:
                    time.sleep(random.random() * 0.003)
                    ch.basic_ack(m.delivery_tag)
                    self.acked[n] = (got_at, time.monotonic())
            except (pika.exceptions.AMQPError, OSError):
                close_quietly(conn)
                conn = None
                time.sleep(0.05)
        if conn is not None and conn.is_open:
            ch.queue_declare(self.queue, passive=True)  # a round trip: every ack was processed
        close_quietly(conn)


@pytest.mark.slow
def test_kill9_loop_confirmed_kept_acked_gone(fresh_broker):
    b = fresh_broker
    conn = connect(b)
    conn.channel().queue_declare("crash", durable=True)
    conn.close()
    stop = threading.Event()
    pub = Publisher(b, "crash", stop)
    acker = Acker(b, "crash", stop)
    pub.start()
    acker.start()
    kills: list[float] = []
    rnd = random.Random()
    t_end = time.monotonic() + 90
    try:
        for _ in range(4):
            time.sleep(rnd.uniform(0.3, 1.5))
            kills.append(time.monotonic())
            restart(b, kill=True)
            assert time.monotonic() < t_end, "restarts take too long"
        time.sleep(1.0)  # run a while after the last restart
    finally:
        stop.set()
        pub.join(15)
        acker.join(15)
    assert not pub.is_alive() and not acker.is_alive()
    assert pub.errors == []
    assert pub.reconnects >= 4, "the publisher did not reconnect after the crashes"
    assert len(pub.confirmed) > 20, f"too few publishes confirmed ({len(pub.confirmed)})"
    assert len(acker.acked) > 5, "the consumer acked too little"

    conn = connect(b)
    ch = conn.channel()
    drained = [(int(bd), m.redelivered) for m, _p, bd in get_all(ch, "crash")]
    conn.close()
    numbers = [n for n, _r in drained]
    redelivered = dict(drained)
    print(f"kill loop: {pub.attempted} attempted, {len(pub.confirmed)} confirmed, {len(acker.acked)} acked, "
          f"{len(numbers)} left ({sum(r for _n, r in drained)} redelivered)")

    assert len(numbers) == len(set(numbers)), "a message is in the queue twice"
    assert numbers == sorted(numbers), "the queue lost its order"
    assert set(numbers) <= set(range(1, pub.attempted + 1))

    # nothing confirmed is lost: it is either still there or was acked
    lost = pub.confirmed - set(numbers) - set(acker.acked)
    assert not lost, f"{len(lost)} confirmed messages lost: {sorted(lost)[:20]}"

    # an ack that completed well before a kill is not undone by it
    window = 0.25
    for n, (got_at, acked_at) in acker.acked.items():
        if n not in redelivered:
            continue
        later_kills = [k for k in kills if k > got_at]  # the broker that delivered it died here
        if not later_kills or later_kills[0] - acked_at > window:
            raise AssertionError(
                f"message {n} acked at {acked_at:.3f} came back "
                f"(kills at {[round(k, 3) for k in kills]}, got at {got_at:.3f})"
            )
        assert redelivered[n] is True, f"message {n} was delivered and acked but came back with redelivered=False"
    # a message delivered before a crash and got again after it is flagged redelivered
    for n, gets in acker.gets.items():
        for j, (at, flag) in enumerate(gets):
            if any(g < k - window and k < at for g, _f in gets[:j] for k in kills):
                assert flag is True, f"message {n} delivered again after a crash with redelivered=False"
    # a message delivered before a crash and not acked comes back redelivered
    for n, got_at in acker.got.items():
        if n in redelivered and n not in acker.acked and any(got_at < k - window for k in kills):
            assert redelivered[n] is True, f"unacked message {n} came back with redelivered=False"


# -- damaged segment files ---------------------------------------------------------------


def _fill_and_stop(b, n: int = 10, queue: str = "dmg") -> list[bytes]:
    bodies = [f"damage-{i:03d}-".encode() + bytes(range(100)) for i in range(n)]
    publish_confirmed(b, queue, bodies)
    assert b.stop() == 0
    return bodies


def _last_seg(b) -> Path:
    segs = seg_files(b)
    assert segs, "no segment file written"
    return segs[-1]


def _start_and_drain(b, queue: str = "dmg") -> tuple[str, list[bytes]]:
    mark = log_size(b)
    b.start(port=b.port)
    conn = connect(b)
    ch = conn.channel()
    got = [bd for _m, _p, bd in get_all(ch, queue)]
    conn.close()
    return new_log(b, mark), got


ERROR_TAIL = re.compile(r"ERROR.*(tail|torn|corrupt)", re.I)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_tail_is_cut(fresh_broker, damage):
    b = fresh_broker
    bodies = _fill_and_stop(b)
    seg = _last_seg(b)
    size = seg.stat().st_size
    if damage == "truncate":
        os.truncate(seg, size - 7)
    else:
        with open(seg, "r+b") as f:
            f.seek(size - 12)
            f.write(b"\xde\xad\xbe\xef\x00\x11")
    log, got = _start_and_drain(b)
    assert ERROR_TAIL.search(log), log[-2000:]
    assert got == bodies[:-1]
    # the cut log takes new messages, and they survive another restart
    publish_confirmed(b, "dmg", [b"after-1", b"after-2"])
    restart(b)
    conn = connect(b)
    got = [bd for _m, _p, bd in get_all(conn.channel(), "dmg")]
    conn.close()
    assert got == [b"after-1", b"after-2"]


def test_corrupt_middle_record_is_skipped(fresh_broker):
    b = fresh_broker
    bodies = _fill_and_stop(b)
    seg = _last_seg(b)
    data = seg.read_bytes()
    pos = data.index(b"damage-004-")
    assert data.count(b"damage-004-") == 1
    with open(seg, "r+b") as f:
        f.seek(pos + 20)
        f.write(b"\xff\xfe\xfd")
    log, got = _start_and_drain(b)
    assert re.search(r"ERROR.*corrupt", log), log[-2000:]
    assert got == bodies[:4] + bodies[5:]


# -- disk space ---------------------------------------------------------------------------


def publish_fast(b, queue: str, n: int, size: int = 1024) -> None:
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    pad = b"x" * (size - 8)
    for i in range(n):
        ch.basic_publish("", queue, b"%08d" % i + pad, PERSISTENT)
    # a round trip after the publishes: they have all been routed
    wait_for(lambda: count(ch, queue) == n, TIMEOUT, f"{n} messages in {queue}")
    conn.close()


@pytest.mark.slow
def test_delete_queue_frees_disk(fresh_broker):
    b = fresh_broker
    n = 100_000
    publish_fast(b, "big", n)
    used = queue_bytes(b)
    assert used >= n * 1024, f"only {used} bytes on disk for {n} KiB messages"
    conn = connect(b)
    ch = conn.channel()
    assert ch.queue_delete("big").method.message_count == n
    conn.close()
    wait_for(lambda: queue_bytes(b) < 64 * 1024, 5, "the queue's files to go")
    # and it does not come back
    restart(b)
    assert not exists(b, "queue", "big")
    assert queue_bytes(b) < 64 * 1024


@pytest.mark.slow
def test_purge_frees_disk(fresh_broker):
    b = fresh_broker
    n = 20_000
    publish_fast(b, "purged", n)
    assert queue_bytes(b) >= n * 1024
    conn = connect(b)
    ch = conn.channel()
    assert ch.queue_purge("purged").method.message_count == n
    conn.close()
    wait_for(lambda: queue_bytes(b) < 64 * 1024, 8, "the purged queue's files to go")
    restart(b)
    conn = connect(b)
    assert count(conn.channel(), "purged") == 0
    conn.close()


@pytest.mark.slow
def test_drain_frees_segments(fresh_broker):
    b = fresh_broker
    n = 50_000
    publish_fast(b, "drain", n)
    assert queue_bytes(b) >= n * 1024
    conn = connect(b)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    seen = []

    def on_msg(c, m, p, body):
        seen.append(int(body[:8]))
        if len(seen) % 100 == 0 or len(seen) == n:
            c.basic_ack(m.delivery_tag, multiple=True)

    ch.basic_consume("drain", on_msg)
    deadline = time.monotonic() + 60
    while len(seen) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert seen == list(range(n))
    ch.queue_declare("drain", passive=True)  # the acks were processed
    wait_for(lambda: queue_bytes(b) < 64 * 1024, 8, "the drained queue's segments to go")
    conn.close()
    restart(b)
    conn = connect(b)
    assert count(conn.channel(), "drain") == 0
    conn.close()


# -- the data directory lock ----------------------------------------------------------------


def test_second_broker_on_same_data_dir_refused(fresh_broker):
    b = fresh_broker
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(b.data_dir),
         "--management-port", "0", "--metrics-port", "0"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=30,
    )
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "in use by another broker" in out, out
    assert str(Path(b.data_dir).resolve()) in out or str(b.data_dir) in out, out
    # the first broker is unaffected
    publish_confirmed(b, "still-here", [b"ok"])
    restart(b)
    conn = connect(b)
    assert [bd for _m, _p, bd in get_all(conn.channel(), "still-here")] == [b"ok"]
    conn.close()


# -- confirms and transactions ---------------------------------------------------------------


def test_confirms_and_tx_commit_for_persistent_messages(fresh_broker):
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("conf", durable=True)
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", "conf", f"c{i}".encode(), PERSISTENT)  # raises unless acked
    ch2 = conn.channel()
    ch2.tx_select()
    for i in range(10):
        ch2.basic_publish("", "conf", f"t{i}".encode(), PERSISTENT)
    assert count(ch, "conf") == 50  # not yet committed
    ch2.tx_commit()
    assert count(ch, "conf") == 60
    # a rolled back publish never lands
    ch2.basic_publish("", "conf", b"rolled back", PERSISTENT)
    ch2.tx_rollback()
    conn.close()
    # confirmed and committed means on disk: a crash keeps them
    restart(b, kill=True)
    conn = connect(b)
    got = [bd for _m, _p, bd in get_all(conn.channel(), "conf")]
    conn.close()
    assert got == [f"c{i}".encode() for i in range(50)] + [f"t{i}".encode() for i in range(10)]


def test_confirms_mixed_transient_and_persistent(fresh_broker):
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("mixed", durable=True)
    ch.queue_declare("mixed-nd", durable=False)
    ch.confirm_delivery()
    for i in range(30):
        q = "mixed" if i % 3 else "mixed-nd"
        mode = 2 if i % 2 else 1
        ch.basic_publish("", q, f"x{i}".encode(), pika.BasicProperties(delivery_mode=mode))
    assert count(ch, "mixed") == 20
    conn.close()


# -- a big backlog across a restart ------------------------------------------------------------


@pytest.mark.slow
def test_large_queue_restarts_with_all_messages_in_order(fresh_broker):
    b = fresh_broker
    n = 20_000
    publish_fast(b, "backlog", n)
    restart(b)
    conn = connect(b)
    ch = conn.channel()
    assert count(ch, "backlog") == n
    ch.confirm_delivery()
    ch.basic_publish("", "backlog", b"after-restart", PERSISTENT)
    assert count(ch, "backlog") == n + 1
    ch.basic_qos(prefetch_count=1000)
    seen: list[bytes] = []

    def on_msg(c, m, p, body):
        seen.append(body[:8] if body != b"after-restart" else body)
        assert m.redelivered is False
        if len(seen) % 200 == 0 or len(seen) == n + 1:
            c.basic_ack(m.delivery_tag, multiple=True)

    ch.basic_consume("backlog", on_msg)
    deadline = time.monotonic() + 60
    while len(seen) < n + 1 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.close()
    assert len(seen) == n + 1
    assert seen[:n] == [b"%08d" % i for i in range(n)]
    assert seen[n] == b"after-restart"


# -- message TTL across a restart ----------------------------------------------------------------


def test_restart_keeps_expiration_deadlines(fresh_broker):
    """A per-message expiration is an absolute deadline: a restart neither resets
    nor forgets it (RabbitMQ keeps the expiry time with the message); an expired
    message is dropped when it reaches the head, never delivered."""
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("ttl", durable=True)
    ch.confirm_delivery()
    t0 = time.monotonic()
    for i, exp in enumerate(["2000", None, "600000", "2000", None, "600000"]):
        ch.basic_publish("", "ttl", f"e{i}".encode(), pika.BasicProperties(delivery_mode=2, expiration=exp))
    conn.close()
    time.sleep(1.2)
    restart(b)
    # past the original deadlines (t0 + 2 s), well before deadlines reset at the restart
    time.sleep(max(0.0, 2.6 - (time.monotonic() - t0)))
    conn = connect(b)
    got = get_all(conn.channel(), "ttl")
    conn.close()
    assert [bd for _m, _p, bd in got] == [b"e1", b"e2", b"e4", b"e5"]
    assert [p.expiration for _m, p, _b in got] == [None, "600000", None, "600000"]
