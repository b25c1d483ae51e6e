"""kombu's own API against the broker (py-amqp transport): Connection, Exchange/Queue
objects of every type, Producer/Consumer, drain_events, SimpleQueue, ack/requeue/reject.

Runs against RabbitMQ too: ``TEST_BROKER_PORT=5672 pytest tests/test_kombu.py``.
"""

from __future__ import annotations

import socket
import time

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError
from kombu.simple import SimpleQueue

DEADLINE = 5.0


@pytest.fixture
def conn(broker):
    c = Connection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5, heartbeat=0)
    c.connect()
    yield c
    c.release()


@pytest.fixture
def tq(conn):
    """Make test queues: kombu's exclusive=True implies auto_delete, and a Consumer
    leaving would delete them, so use plain queues deleted at the end."""
    made: list[Queue] = []

    def make(name, exchange=None, **kw) -> Queue:
        q = Queue(name, exchange if exchange is not None else Exchange(""),
                  routing_key=kw.pop("routing_key", name if exchange is None else ""),
                  durable=False, auto_delete=False, **kw)
        made.append(q)
        return q

    yield make
    ch = conn.channel()
    for q in made:
        try:
            q(ch).delete()
        except Exception:
            ch = conn.channel()


def collect(conn, consumer_queues, n: int, no_ack: bool = True, accept=("json", "application/data", "text/plain"),
            **kw) -> list:
    """Consume until ``n`` messages arrived (each as (body/payload, message))."""
    got = []

    def on_message(body, message):
        got.append((body, message))
        if not no_ack:
            message.ack()

    with Consumer(conn, queues=consumer_queues, callbacks=[on_message], no_ack=no_ack, accept=list(accept), **kw):
        deadline = time.monotonic() + DEADLINE
        while len(got) < n:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} messages"
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
        # nothing more arrives
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            pass
    return got


def test_connection_basics(conn, broker):
    assert conn.connected
    assert conn.transport_cls == "amqp" or conn.transport.driver_type == "amqp"
    info = conn.info()
    assert info["hostname"] == "127.0.0.1" and info["port"] == broker.port
    ch = conn.channel()
    assert ch.is_open
    ch.close()
    conn.ensure_connection(max_retries=1)
    assert conn.connected


def test_connection_refused_raises_operational_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=2)
    with pytest.raises(OperationalError):
        c.ensure_connection(max_retries=1, interval_start=0, interval_step=0.1, timeout=3)
    c.release()


def test_direct_exchange_producer_consumer(conn, tq, uid):
    ex = Exchange(f"kombu-direct-{uid}", type="direct", auto_delete=True)
    q_black = tq(f"kombu-black-{uid}", ex, routing_key="black")
    q_green = tq(f"kombu-green-{uid}", ex, routing_key="green")
    producer = Producer(conn.channel(), exchange=ex)
    with Consumer(conn, queues=[q_black, q_green], no_ack=True):  # declares and binds
        pass
    for key in ("black", "green", "orange", "black"):
        producer.publish({"key": key}, routing_key=key, serializer="json")
    got = collect(conn, [q_black, q_green], 3, no_ack=False)
    by_queue = sorted((m.delivery_info["routing_key"], body["key"]) for body, m in got)
    assert by_queue == [("black", "black"), ("black", "black"), ("green", "green")]
    for _body, m in got:
        assert m.delivery_info["exchange"] == ex.name
        assert m.content_type == "application/json"
        assert m.acknowledged


def test_topic_exchange(conn, uid):
    ex = Exchange(f"kombu-topic-{uid}", type="topic", auto_delete=True)
    q1 = Queue(f"kombu-t1-{uid}", ex, routing_key="*.orange.*", exclusive=True)
    q2 = Queue(f"kombu-t2-{uid}", ex, routing_key="lazy.#", exclusive=True)
    ch = conn.channel()
    for q in (q1, q2):
        q(ch).declare()
    producer = conn.Producer(exchange=ex)
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
            "quick.brown.fox", "lazy", "orange", "quick.orange.male.rabbit"]
    for k in keys:
        producer.publish(k, routing_key=k, serializer="json")
    b1 = sorted(body for body, _m in collect(conn, [q1], 3))
    b2 = sorted(body for body, _m in collect(conn, [q2], 3))
    assert b1 == ["lazy.orange.elephant", "quick.orange.fox", "quick.orange.rabbit"]
    assert b2 == ["lazy", "lazy.brown.fox", "lazy.orange.elephant"]


def test_fanout_exchange(conn, uid):
    ex = Exchange(f"kombu-fanout-{uid}", type="fanout", auto_delete=True)
    qs = [Queue(f"kombu-f{i}-{uid}", ex, exclusive=True) for i in range(3)]
    ch = conn.channel()
    for q in qs:
        q(ch).declare()
    conn.Producer().publish({"n": 1}, exchange=ex, routing_key="ignored", serializer="json")
    for q in qs:
        (body, m), = collect(conn, [q], 1)
        assert body == {"n": 1}
        assert m.delivery_info["routing_key"] == "ignored"


def test_headers_exchange(conn, uid):
    ex = Exchange(f"kombu-headers-{uid}", type="headers", auto_delete=True)
    q_all = Queue(f"kombu-hall-{uid}", ex, exclusive=True, binding_arguments={"x-match": "all", "a": 1, "b": 2})
    q_any = Queue(f"kombu-hany-{uid}", ex, exclusive=True, binding_arguments={"x-match": "any", "a": 1, "b": 2})
    ch = conn.channel()
    q_all(ch).declare()
    q_any(ch).declare()
    p = conn.Producer(exchange=ex)
    p.publish("both", headers={"a": 1, "b": 2}, serializer="json")
    p.publish("only-a", headers={"a": 1}, serializer="json")
    p.publish("none", headers={"c": 3}, serializer="json")
    assert [b for b, _m in collect(conn, [q_all], 1)] == ["both"]
    assert sorted(b for b, _m in collect(conn, [q_any], 2)) == ["both", "only-a"]


def test_properties_and_headers_round_trip(conn, uid):
    q = Queue(f"kombu-props-{uid}", Exchange(""), routing_key=f"kombu-props-{uid}", exclusive=True)
    q(conn.channel()).declare()
    conn.Producer().publish(
        {"x": [1, 2, {"y": "z"}]}, routing_key=q.name, serializer="json",
        headers={"h1": "v", "h2": 7, "h3": True, "h4": [1, "two"]},
        priority=4, correlation_id="corr", reply_to="rq", expiration=60, delivery_mode=2,
        message_id="mid", type="kind", app_id="tests",
    )
    (body, m), = collect(conn, [q], 1)
    assert body == {"x": [1, 2, {"y": "z"}]}
    assert m.headers == {"h1": "v", "h2": 7, "h3": True, "h4": [1, "two"]}
    props = m.properties
    assert props["priority"] == 4 and props["correlation_id"] == "corr" and props["reply_to"] == "rq"
    assert props["expiration"] == "60000"  # kombu sends seconds * 1000 as a string
    assert props["delivery_mode"] == 2 and props["message_id"] == "mid" and props["type"] == "kind"
    assert props["app_id"] == "tests"
    assert m.content_type == "application/json" and m.content_encoding == "utf-8"
    assert m.delivery_info["redelivered"] is False


def test_raw_bytes_body(conn, uid):
    q = Queue(f"kombu-raw-{uid}", Exchange(""), routing_key=f"kombu-raw-{uid}", exclusive=True)
    q(conn.channel()).declare()
    payload = bytes(range(256)) * 40
    conn.Producer().publish(payload, routing_key=q.name, content_type="application/data", content_encoding="binary")
    (body, m), = collect(conn, [q], 1)
    assert body == payload and m.body == payload


def test_drain_events_timeout(conn, uid):
    q = Queue(f"kombu-idle-{uid}", Exchange(""), routing_key=f"kombu-idle-{uid}", exclusive=True)
    with Consumer(conn, queues=[q], callbacks=[lambda b, m: None], no_ack=True):
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 3


def test_ack_requeue_reject(conn, uid):
    name = f"kombu-arr-{uid}"
    ch = conn.channel()
    q = Queue(name, Exchange(""), routing_key=name, exclusive=True)(ch)
    q.declare()
    p = conn.Producer(ch)
    for n in ("ack", "requeue", "reject"):
        p.publish(n, routing_key=name, serializer="json")
    m = q.get(no_ack=False, accept=["json"])
    assert m.payload == "ack" and not m.delivery_info["redelivered"]
    m.ack()
    assert m.acknowledged
    m2 = q.get(no_ack=False, accept=["json"])
    assert m2.payload == "requeue"
    m2.requeue()
    m3 = q.get(no_ack=False, accept=["json"])
    assert m3.payload == "requeue" and m3.delivery_info["redelivered"] is True
    m3.ack()
    m4 = q.get(no_ack=False, accept=["json"])
    assert m4.payload == "reject"
    m4.reject()
    assert q.get(no_ack=True) is None
    assert q.queue_declare(passive=True).message_count == 0


def test_consumer_requeue_then_ack_in_callback(conn, tq, uid):
    name = f"kombu-cbrq-{uid}"
    q = tq(name)
    q(conn.channel()).declare()
    conn.Producer().publish("once", routing_key=name, serializer="json")
    seen = []

    def on_message(body, message):
        seen.append(message.delivery_info["redelivered"])
        if len(seen) == 1:
            message.requeue()
        else:
            message.ack()

    with Consumer(conn, queues=[q], callbacks=[on_message], accept=["json"]):
        deadline = time.monotonic() + DEADLINE
        while len(seen) < 2:
            assert time.monotonic() < deadline
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
    assert seen == [False, True]
    assert q(conn.channel()).queue_declare(passive=True).message_count == 0


def test_consumer_prefetch_count(conn, uid):
    name = f"kombu-qos-{uid}"
    q = Queue(name, Exchange(""), routing_key=name, exclusive=True)
    q(conn.channel()).declare()
    p = conn.Producer()
    for i in range(5):
        p.publish(i, routing_key=name, serializer="json")
    held = []
    with Consumer(conn, queues=[q], callbacks=[lambda b, m: held.append(m)], accept=["json"], prefetch_count=2):
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
        assert [m.payload for m in held] == [0, 1]
        held[0].ack()
        deadline = time.monotonic() + DEADLINE
        while len(held) < 3:
            assert time.monotonic() < deadline
            try:
                conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
        assert [m.payload for m in held] == [0, 1, 2]
        for m in held[1:]:
            m.ack()


def test_mandatory_return_callback(conn, uid):
    returned = []
    ex = Exchange(f"kombu-mand-{uid}", type="direct", auto_delete=True)
    ch = conn.channel()
    ex(ch).declare()
    q = Queue(f"kombu-mand-q-{uid}", ex, routing_key="bound", exclusive=True)
    q(ch).declare()  # keeps the auto-delete exchange alive
    producer = Producer(ch, exchange=ex,
                        on_return=lambda exc, exchange, routing_key, message: returned.append(
                            (exc.reply_code, exc.reply_text, exchange, routing_key, message.body)))
    producer.publish(b"lost", routing_key="nowhere", mandatory=True, content_type="application/data",
                     content_encoding="binary")
    deadline = time.monotonic() + DEADLINE
    while not returned:
        assert time.monotonic() < deadline, "no Basic.Return"
        try:
            conn.drain_events(timeout=0.1)
        except TimeoutError:
            pass
    assert returned == [(312, "NO_ROUTE", ex.name, "nowhere", b"lost")]


def test_simple_queue(conn, uid):
    name = f"kombu-simple-{uid}"
    sq = conn.SimpleQueue(name, serializer="json")
    try:
        assert isinstance(sq, SimpleQueue)
        with pytest.raises(sq.Empty):
            sq.get_nowait()
        for i in range(3):
            sq.put({"i": i})
        deadline = time.monotonic() + DEADLINE
        while sq.qsize() < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sq.qsize() == 3
        m = sq.get(block=True, timeout=DEADLINE)
        assert m.payload == {"i": 0}
        m.ack()
        m = sq.get(block=True, timeout=DEADLINE)
        assert m.payload == {"i": 1}
        m.requeue()
        # the consumer may already hold {"i": 2}: the requeued one comes back redelivered
        nxt = [sq.get(block=True, timeout=DEADLINE) for _ in range(2)]
        assert sorted((x.payload["i"], x.delivery_info["redelivered"]) for x in nxt) == [(1, True), (2, False)]
        for x in nxt:
            if x.payload["i"] == 1:
                x.reject()
            else:
                x.ack()
        with pytest.raises(sq.Empty):
            sq.get(block=True, timeout=0.3)
    finally:
        sq.close()
        ch = conn.channel()
        Queue(name)(ch).delete()
        Exchange(name)(ch).delete()  # SimpleQueue declares a direct exchange of the same name


def test_simple_queue_clear(conn, uid):
    """qsize/clear count ready messages (before any get() starts the consumer)."""
    name = f"kombu-simple-clear-{uid}"
    sq = conn.SimpleQueue(name, serializer="json")
    try:
        sq.put("x")
        sq.put("y")
        deadline = time.monotonic() + DEADLINE
        while sq.qsize() < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sq.clear() == 2
        assert sq.qsize() == 0
        with pytest.raises(sq.Empty):
            sq.get_nowait()
    finally:
        sq.close()
        ch = conn.channel()
        Queue(name)(ch).delete()
        Exchange(name)(ch).delete()  # SimpleQueue declares a direct exchange of the same name


def test_simple_buffer_is_transient(conn, uid):
    name = f"kombu-buffer-{uid}"
    buf = conn.SimpleBuffer(name, serializer="json")
    try:
        buf.put("b")
        m = buf.get(block=True, timeout=DEADLINE)
        assert m.payload == "b"
        assert m.properties.get("delivery_mode") in (None, 1)
        m.ack()
    finally:
        buf.close()


def test_queue_declare_passive_counts_and_purge(conn, uid):
    name = f"kombu-purge-{uid}"
    ch = conn.channel()
    q = Queue(name, Exchange(""), routing_key=name, durable=False, auto_delete=True)(ch)
    assert q.declare() == name
    p = conn.Producer(ch)
    for i in range(4):
        p.publish(i, routing_key=name, serializer="json")
    deadline = time.monotonic() + DEADLINE
    while q.queue_declare(passive=True).message_count < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ok = q.queue_declare(passive=True)
    assert ok.queue == name and ok.message_count == 4 and ok.consumer_count == 0
    assert q.purge() == 4
    assert q.get(no_ack=True) is None
    q.delete()


def test_ensure_publish_autoretry(conn, uid):
    name = f"kombu-ensure-{uid}"
    q = Queue(name, Exchange(""), routing_key=name, exclusive=True)
    q(conn.channel()).declare()
    producer = conn.Producer()
    publish = conn.ensure(producer, producer.publish, max_retries=2)
    publish({"ok": True}, routing_key=name, serializer="json")
    (body, _m), = collect(conn, [q], 1)
    assert body == {"ok": True}


def test_queue_delete_ok_comes_before_the_cancel_py_amqp(broker, uid):
    """py-amqp (kombu, Celery) consuming, then deleting the queue on the same channel:
    RabbitMQ answers Queue.Delete-Ok before the Basic.Cancel; the other order made
    ``queue_delete`` itself raise ConsumerCancelled."""
    import amqp

    conn = amqp.Connection(f"127.0.0.1:{broker.port}")
    conn.connect()
    try:
        ch = conn.channel()
        q = f"del-order-{uid}"
        ch.queue_declare(q)
        ch.basic_publish(amqp.Message(b"x"), routing_key=q)
        tag = ch.basic_consume(q, callback=lambda m: None)
        conn.drain_events(timeout=2)  # the delivery
        assert ch.queue_delete(q) == 0  # the message is unacked, not ready
        with pytest.raises(amqp.exceptions.ConsumerCancelled) as e:
            conn.drain_events(timeout=2)
        assert tag in str(e.value)
    finally:
        conn.collect()
