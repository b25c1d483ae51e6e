"""RabbitMQ's AMQP extensions, with RabbitMQ's exact behaviour as the reference.

Every expectation here was checked against RabbitMQ 3.10.8 (Debian package,
Erlang 25) with ``TEST_BROKER_PORT=<port> pytest tests/test_extensions.py``:
per-queue and per-message TTL, x-expires, max-length (drop-head, reject-publish,
reject-publish-dlx), dead-lettering and the x-death header, priority queues,
single active consumer, consumer priorities, alternate exchanges, consumer
cancel notifications, x-queue-type, direct reply-to and argument validation.

Timing-based tests use short TTLs (50-300 ms) and poll with deadlines.
Tests that restart the broker are in test_extensions_restart.py.
"""

from __future__ import annotations

import asyncio
import datetime
import time

import aio_pika
import pika
import pytest
from kombu import Connection as KConnection
from kombu import Exchange as KExchange
from kombu import Queue as KQueue
from pika.compat import long as pika_long
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

DEADLINE = 3.0  # seconds to wait for something that should happen "soon"
V = "in vhost '/'"
REPLY_TO = "amq.rabbitmq.reply-to"


# --------------------------------------------------------------------------- helpers


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))


@pytest.fixture
def conn(broker):
    c = connect(broker.port)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


def wait_get(ch, queue: str, timeout: float = DEADLINE, auto_ack: bool = True):
    """basic.get until a message arrives; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=auto_ack)
        if m is not None:
            return m, p, b
        if time.monotonic() > deadline:
            raise AssertionError(f"no message in {queue!r} within {timeout}s")
        time.sleep(0.02)


def drain(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        m, _p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append(b)


def wait_until(pred, timeout: float = DEADLINE, conn=None, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        if conn is not None:
            conn.process_data_events(0.02)
        else:
            time.sleep(0.02)


def count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def closed_with(fn) -> tuple[int, str]:
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn()
    return ei.value.reply_code, ei.value.reply_text


def dl_queue(ch, uid: str, tag: str = "dlq") -> str:
    """A queue to receive dead letters through the default exchange."""
    name = f"ext-{tag}-{uid}"
    ch.queue_declare(name, exclusive=True)
    return name


DEATH_KEYS = {"count", "reason", "queue", "time", "exchange", "routing-keys"}


def assert_death(entry: dict, *, count: int, reason: str, queue: str, exchange: str,
                 routing_keys: list[str], original_expiration: str | None = None) -> None:
    """One x-death table exactly as RabbitMQ 3.10 writes it.

    Fields: count (long-long, type 'l'), reason (longstr: rejected / expired /
    maxlen), queue, time (timestamp 'T', second precision), exchange (the
    exchange the message was published to, '' for the default exchange),
    routing-keys (array: the routing key plus any CC header keys, never BCC),
    and original-expiration only when the message had a per-message expiration.
    """
    keys = set(DEATH_KEYS)
    if original_expiration is not None:
        keys.add("original-expiration")
    assert set(entry) == keys, entry
    assert entry["count"] == count and isinstance(entry["count"], pika_long), entry
    assert entry["reason"] == reason
    assert entry["queue"] == queue
    assert entry["exchange"] == exchange
    assert entry["routing-keys"] == routing_keys
    if original_expiration is not None:
        assert entry["original-expiration"] == original_expiration
    t = entry["time"]
    assert isinstance(t, datetime.datetime)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - t.replace(tzinfo=datetime.UTC)).total_seconds()) < 120


def assert_first_death(headers: dict, *, reason: str, queue: str, exchange: str) -> None:
    assert headers["x-first-death-reason"] == reason
    assert headers["x-first-death-queue"] == queue
    assert headers["x-first-death-exchange"] == exchange
    # RabbitMQ 3.13+ also writes x-last-death-reason / -queue / -exchange (the newest
    # x-death entry).  RabbitMQ 3.10 (the reference these tests were validated
    # against) does NOT write them; accept either, but if present they must match
    # the newest (first) x-death entry.
    newest = headers["x-death"][0]
    if "x-last-death-reason" in headers:
        assert headers["x-last-death-reason"] == newest["reason"]
        assert headers["x-last-death-queue"] == newest["queue"]
        assert headers["x-last-death-exchange"] == newest["exchange"]


# --------------------------------------------------------------------------- 1. TTL


def test_queue_ttl_expired_messages_never_delivered(ch, uid):
    q = f"ext-ttl-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 100})
    ch.basic_publish("", q, b"old")
    m, _p, b = ch.basic_get(q, auto_ack=True)  # immediately: still there
    assert b == b"old"
    ch.basic_publish("", q, b"will-expire")
    time.sleep(0.3)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    assert count(ch, q) == 0


def test_queue_ttl_not_delivered_to_later_consumer(conn, ch, uid):
    q = f"ext-ttl-cons-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 50})
    for i in range(3):
        ch.basic_publish("", q, b"x%d" % i)
    time.sleep(0.25)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"fresh")
    wait_until(lambda: got, conn=conn, what="delivery of the fresh message")
    conn.process_data_events(0.2)
    assert got == [b"fresh"]


def test_per_message_expiration(ch, uid):
    q = f"ext-exp-{uid}"
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="100"))
    time.sleep(0.3)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    # the expiration property is delivered unchanged while the message lives
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    m, p, b = ch.basic_get(q)
    assert b == b"long" and p.expiration == "60000"
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, p, b = ch.basic_get(q, auto_ack=True)
    assert b == b"long" and p.expiration == "60000" and m.redelivered is True


def test_lower_of_queue_ttl_and_message_expiration_wins(ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-ttl-min-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"m", pika.BasicProperties(expiration="60000"))
    m, p, b = wait_get(ch, dq)
    assert b == b"m"
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    assert p.expiration is None
    assert_death(p.headers["x-death"][0], count=1, reason="expired", queue=q, exchange="",
                 routing_keys=[q], original_expiration="60000")


def test_expiration_zero_without_consumer_expires_at_once(ch, uid):
    """expiration "0": dropped (or dead-lettered) unless it can be delivered at once."""
    dq = dl_queue(ch, uid)
    q = f"ext-exp0-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"zero", pika.BasicProperties(expiration="0"))
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    m, p, b = wait_get(ch, dq)
    assert b == b"zero"
    assert p.expiration is None
    assert_death(p.headers["x-death"][0], count=1, reason="expired", queue=q, exchange="",
                 routing_keys=[q], original_expiration="0")


def test_expiration_zero_delivered_to_waiting_consumer(conn, ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-exp0c-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    got = []
    cc = conn.channel()
    cc.basic_consume(q, lambda c, m, p, b: got.append((b, p.expiration)), auto_ack=True)
    ch.basic_publish("", q, b"zero", pika.BasicProperties(expiration="0"))
    wait_until(lambda: got, conn=conn, what="delivery")
    assert got == [(b"zero", "0")]
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)


def test_expiration_zero_with_consumer_out_of_credit_is_dead_lettered(conn, ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-exp0p-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    got = []
    cc = conn.channel()
    cc.basic_qos(prefetch_count=1)
    cc.basic_consume(q, lambda c, m, p, b: got.append(b))  # never acks
    ch.basic_publish("", q, b"first")
    wait_until(lambda: got, conn=conn, what="first delivery")
    ch.basic_publish("", q, b"zero", pika.BasicProperties(expiration="0"))
    m, p, b = wait_get(ch, dq)
    assert b == b"zero"
    assert got == [b"first"]


def test_queue_ttl_zero(ch, uid):
    q = f"ext-ttl0-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 0})
    ch.basic_publish("", q, b"z")
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_unacked_message_expires_when_requeued_after_its_ttl(ch, uid):
    q = f"ext-ttl-unacked-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 100})
    ch.basic_publish("", q, b"held")
    m, _p, b = ch.basic_get(q)
    assert b == b"held"
    time.sleep(0.3)  # an unacked message does not expire...
    ch.basic_reject(m.delivery_tag, requeue=True)  # ...but is dropped when requeued past its TTL
    time.sleep(0.1)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_x_expires_deletes_unused_queue(ch, conn, uid):
    q = f"ext-xexp-{uid}"
    ch.queue_declare(q, arguments={"x-expires": 200})
    # Note: a (passive) redeclare counts as use and restarts the timer on RabbitMQ,
    # so poll less often than the expiry period.
    time.sleep(0.35)
    deadline = time.monotonic() + DEADLINE
    while True:
        c = conn.channel()
        try:
            c.queue_declare(q, passive=True)
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            assert e.reply_text == f"NOT_FOUND - no queue '{q}' {V}"
            break
        c.close()
        assert time.monotonic() < deadline, "queue with x-expires was not deleted"
        time.sleep(0.3)


def test_x_expires_waits_for_consumers_to_go(conn, ch, uid):
    q = f"ext-xexp-c-{uid}"
    ch.queue_declare(q, arguments={"x-expires": 1000})  # time enough to subscribe on a busy machine
    cc = conn.channel()
    tag = cc.basic_consume(q, lambda *a: None, auto_ack=True)
    conn.process_data_events(1.3)  # past x-expires: the consumer keeps it
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    cc.basic_cancel(tag)
    time.sleep(0.3)
    deadline = time.monotonic() + DEADLINE
    while True:
        c = conn.channel()
        try:
            c.queue_declare(q, passive=True)
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            break
        c.close()
        assert time.monotonic() < deadline, "queue was not deleted after its consumer left"
        time.sleep(0.25)


# --------------------------------------------------------------------------- 2. max-length


def test_max_length_drop_head_dead_letters_oldest(ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-maxlen-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    for i in range(4):
        ch.basic_publish("", q, b"m%d" % i, pika.BasicProperties(expiration="60000"))
    assert drain(ch, q) == [b"m2", b"m3"]
    deaths = []
    for expected in (b"m0", b"m1"):
        m, p, b = wait_get(ch, dq)
        assert b == expected
        assert m.exchange == "" and m.routing_key == dq
        assert p.expiration is None  # removed; kept as original-expiration
        assert len(p.headers["x-death"]) == 1
        assert_death(p.headers["x-death"][0], count=1, reason="maxlen", queue=q, exchange="",
                     routing_keys=[q], original_expiration="60000")
        assert_first_death(p.headers, reason="maxlen", queue=q, exchange="")
        deaths.append(b)
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)


def test_max_length_drop_head_without_dlx(ch, uid):
    ch.confirm_delivery()  # publishes complete before the count is read
    q = f"ext-maxlen-nodlx-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 3})
    for i in range(10):
        ch.basic_publish("", q, b"%d" % i)
    assert count(ch, q) == 3
    assert drain(ch, q) == [b"7", b"8", b"9"]


def test_max_length_zero_drop_head(ch, uid):
    ch.confirm_delivery()
    dq = dl_queue(ch, uid)
    q = f"ext-maxlen0-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-max-length": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"zero")
    assert count(ch, q) == 0
    m, p, b = wait_get(ch, dq)
    assert b == b"zero"
    assert_death(p.headers["x-death"][0], count=1, reason="maxlen", queue=q, exchange="", routing_keys=[q])


def test_max_length_bytes_counts_body_bytes(ch, uid):
    q = f"ext-maxbytes-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length-bytes": 10})
    for i in range(4):
        ch.basic_publish("", q, b"abcd%d" % i, pika.BasicProperties(headers={"big": "x" * 100}))
    assert drain(ch, q) == [b"abcd2", b"abcd3"]


def test_max_length_unacked_not_counted(ch, uid):
    ch.confirm_delivery()
    q = f"ext-maxlen-unacked-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 1})
    ch.basic_publish("", q, b"a")
    m, _p, _b = ch.basic_get(q)  # unacked
    ch.basic_publish("", q, b"b")
    assert count(ch, q) == 1
    ch.basic_ack(m.delivery_tag)
    assert drain(ch, q) == [b"b"]


def test_reject_publish_nacks_and_does_not_enqueue(conn, uid):
    ch = conn.channel()
    ch.confirm_delivery()
    dq = dl_queue(ch, uid)
    q = f"ext-rp-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"a")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"b")
    assert ch.is_open
    assert count(ch, q) == 1
    # mandatory does not turn the nack into a Basic.Return: the message was routed
    with pytest.raises(NackError) as ei:
        ch.basic_publish("", q, b"c", mandatory=True)
    assert ei.value.messages == []  # no returned messages
    # without confirms the message is dropped silently
    plain = conn.channel()
    plain.basic_publish("", q, b"d")
    time.sleep(0.1)
    assert drain(ch, q) == [b"a"]
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)  # reject-publish never dead-letters
    ch.basic_publish("", q, b"e")  # room again
    assert drain(ch, q) == [b"e"]


def test_reject_publish_bytes(conn, uid):
    ch = conn.channel()
    ch.confirm_delivery()
    q = f"ext-rpb-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"12345")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"6")
    assert drain(ch, q) == [b"12345"]


def test_reject_publish_dlx_nacks_and_dead_letters(conn, uid):
    ch = conn.channel()
    ch.confirm_delivery()
    dq = dl_queue(ch, uid)
    q = f"ext-rpdlx-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"a")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"b", pika.BasicProperties(headers={"k": "v"}))
    m, p, b = wait_get(ch, dq)
    assert b == b"b"
    assert p.headers["k"] == "v"
    assert len(p.headers["x-death"]) == 1
    assert_death(p.headers["x-death"][0], count=1, reason="maxlen", queue=q, exchange="", routing_keys=[q])
    assert_first_death(p.headers, reason="maxlen", queue=q, exchange="")
    # not in confirm mode: still dead-lettered
    plain = conn.channel()
    plain.basic_publish("", q, b"c")
    m, p, b = wait_get(ch, dq)
    assert b == b"c"
    assert drain(ch, q) == [b"a"]


def test_reject_publish_one_full_queue_nacks_but_others_get_it(ch, uid):
    """Fanout to a normal queue and a full reject-publish queue: the publisher
    gets a nack, yet the other queue has the message."""
    ch.confirm_delivery()
    fx = f"ext-rp-fan-{uid}"
    ch.exchange_declare(fx, "fanout", auto_delete=True)
    q1 = f"ext-rp-ok-{uid}"
    q2 = f"ext-rp-full-{uid}"
    ch.queue_declare(q1, exclusive=True)
    ch.queue_declare(q2, exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    ch.queue_bind(q1, fx)
    ch.queue_bind(q2, fx)
    with pytest.raises(NackError):
        ch.basic_publish(fx, "", b"m")
    assert drain(ch, q1) == [b"m"]
    assert drain(ch, q2) == []


def test_max_length_kombu_queue_options(broker, uid):
    """kombu's Queue(max_length=..., message_ttl=...) become x-max-length / x-message-ttl."""
    name = f"ext-kombu-ml-{uid}"
    with KConnection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5) as kc:
        channel = kc.channel()
        q = KQueue(name, exchange=KExchange(""), routing_key=name, max_length=2, auto_delete=True)
        q = q(channel)
        q.declare()
        producer = kc.Producer(channel)
        for i in range(5):
            producer.publish({"n": i}, routing_key=name, serializer="json")
        got = []
        while True:
            m = q.get(no_ack=True)
            if m is None:
                break
            got.append(m.payload["n"])
        assert got == [3, 4]
        q.delete()


# --------------------------------------------------------------------------- 3. dead-lettering


def test_dead_letter_on_reject_and_nack_with_x_death(ch, uid):
    dlx = f"ext-dlx-{uid}"
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dq = dl_queue(ch, uid)
    ch.queue_bind(dq, dlx)
    q = f"ext-dlsrc-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    props = pika.BasicProperties(headers={"h": 1}, message_id="id-1", content_type="text/plain",
                                 delivery_mode=2, correlation_id="c-1")
    ch.basic_publish("", q, b"rej", props)
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = wait_get(ch, dq)
    assert b == b"rej"
    # no x-dead-letter-routing-key: the original routing key, via the DLX
    assert m.exchange == dlx and m.routing_key == q and m.redelivered is False
    assert p.message_id == "id-1" and p.content_type == "text/plain"
    assert p.delivery_mode == 2 and p.correlation_id == "c-1"
    assert p.headers["h"] == 1
    assert set(p.headers) == {"h", "x-death", "x-first-death-exchange", "x-first-death-queue",
                              "x-first-death-reason"} | ({"x-last-death-exchange", "x-last-death-queue",
                                                          "x-last-death-reason"} & set(p.headers))
    assert len(p.headers["x-death"]) == 1
    assert_death(p.headers["x-death"][0], count=1, reason="rejected", queue=q, exchange="", routing_keys=[q])
    assert_first_death(p.headers, reason="rejected", queue=q, exchange="")

    # the same (already dead-lettered) message, dead-lettered again from the same
    # queue for the same reason: the x-death entry is updated, count 2
    ch.basic_publish("", q, b"again", p)
    m, _p, _b = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=False)
    m, p2, b = wait_get(ch, dq)
    assert b == b"again"
    assert len(p2.headers["x-death"]) == 1
    assert_death(p2.headers["x-death"][0], count=2, reason="rejected", queue=q, exchange="", routing_keys=[q])
    assert_first_death(p2.headers, reason="rejected", queue=q, exchange="")


def test_nack_multiple_dead_letters_all(ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-nackm-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)
    wait_until(lambda: count(ch, dq) == 3, what="3 dead letters")
    assert drain(ch, dq) == [b"0", b"1", b"2"]


def test_requeue_true_does_not_dead_letter(ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-requeue-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"x")
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    time.sleep(0.1)
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)
    assert drain(ch, q) == [b"x"]


def test_dead_letter_routing_key_and_second_queue_entry(ch, uid):
    """x-dead-letter-routing-key replaces the routing key; x-death keeps the original.
    A message dead-lettered by a second queue gets a second x-death entry, newest first;
    x-first-death-* stay those of the first death."""
    dlx = f"ext-dlx-rk-{uid}"
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    dq = dl_queue(ch, uid)
    ch.queue_bind(dq, dlx, "dead")
    q1 = f"ext-dl1-{uid}"
    q2 = f"ext-dl2-{uid}"
    ch.queue_declare(q1, exclusive=True, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    ch.queue_declare(q2, exclusive=True, arguments={
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead", "x-message-ttl": 50})
    ch.basic_publish("", q1, b"m")
    m, _p, _b = ch.basic_get(q1)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = wait_get(ch, dq)
    assert m.exchange == dlx and m.routing_key == "dead"
    assert_death(p.headers["x-death"][0], count=1, reason="rejected", queue=q1, exchange="", routing_keys=[q1])
    # republish the dead letter (headers included) through q2, where it expires
    ch.basic_publish("", q2, b, p)
    m, p, b = wait_get(ch, dq)
    assert m.routing_key == "dead"
    deaths = p.headers["x-death"]
    assert len(deaths) == 2
    assert_death(deaths[0], count=1, reason="expired", queue=q2, exchange="", routing_keys=[q2])
    assert_death(deaths[1], count=1, reason="rejected", queue=q1, exchange="", routing_keys=[q1])
    assert_first_death(p.headers, reason="rejected", queue=q1, exchange="")


def test_dead_letter_x_death_records_exchange_and_cc_but_not_bcc(ch, uid):
    ex = f"ext-cc-ex-{uid}"
    ch.exchange_declare(ex, "direct", auto_delete=True)
    dlx = f"ext-cc-dlx-{uid}"
    ch.exchange_declare(dlx, "topic", auto_delete=True)
    dq = dl_queue(ch, uid)
    ch.queue_bind(dq, dlx, "#")
    q = f"ext-cc-src-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    for k in ("k1", "k2", "k3"):
        ch.queue_bind(q, ex, k)
    ch.basic_publish(ex, "k1", b"cc", pika.BasicProperties(headers={"CC": ["k2"], "BCC": ["k3"]}))
    m, p, _b = ch.basic_get(q)
    assert m.exchange == ex and m.routing_key == "k1"
    assert p.headers == {"CC": ["k2"]}  # BCC is stripped on publish
    ch.basic_nack(m.delivery_tag, requeue=False)
    m, p, b = wait_get(ch, dq)
    assert b == b"cc" and m.exchange == dlx and m.routing_key == "k1"
    assert p.headers["CC"] == ["k2"]
    assert "BCC" not in p.headers
    assert_death(p.headers["x-death"][0], count=1, reason="rejected", queue=q, exchange=ex,
                 routing_keys=["k1", "k2"])
    assert_first_death(p.headers, reason="rejected", queue=q, exchange=ex)
    time.sleep(0.1)
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)  # one copy per queue


def test_dead_letter_on_expiry_per_message_keeps_original_expiration(ch, uid):
    dlx = f"ext-dlx-exp-{uid}"
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dq = dl_queue(ch, uid)
    ch.queue_bind(dq, dlx)
    q = f"ext-dlexp-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"m1", pika.BasicProperties(expiration="100", headers={"h": 1}, message_id="id1"))
    time.sleep(0.25)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    m, p, b = wait_get(ch, dq)
    assert b == b"m1" and m.exchange == dlx and m.routing_key == q
    assert p.expiration is None
    assert p.message_id == "id1"
    assert_death(p.headers["x-death"][0], count=1, reason="expired", queue=q, exchange="",
                 routing_keys=[q], original_expiration="100")
    assert_first_death(p.headers, reason="expired", queue=q, exchange="")


def test_dead_letter_on_queue_ttl_has_no_original_expiration(ch, uid):
    dq = dl_queue(ch, uid)
    q = f"ext-dlqttl-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq})
    ch.basic_publish("", q, b"m")
    m, p, b = wait_get(ch, dq)
    assert p.expiration is None
    assert_death(p.headers["x-death"][0], count=1, reason="expired", queue=q, exchange="", routing_keys=[q])


def test_dead_letter_to_missing_exchange_drops(ch, uid):
    q = f"ext-dlmissing-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": f"ext-nonexistent-{uid}"})
    ch.basic_publish("", q, b"m")
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    time.sleep(0.1)
    assert count(ch, q) == 0
    assert ch.is_open


def test_purge_delete_and_channel_close_do_not_dead_letter(conn, ch, uid):
    dq = dl_queue(ch, uid)
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq}
    q = f"ext-nodl-{uid}"
    ch.queue_declare(q, arguments=args)
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"c")
    assert ch.queue_purge(q).method.message_count == 3
    ch.basic_publish("", q, b"d")
    # unacked messages of a closed channel are requeued, not dead-lettered
    other = conn.channel()
    m, _p, b = other.basic_get(q)
    assert b == b"d"
    other.close()
    m, _p, b = wait_get(ch, q)
    assert b == b"d" and m.redelivered is True
    ch.basic_publish("", q, b"e")
    ch.queue_delete(q)
    time.sleep(0.1)
    assert ch.basic_get(dq, auto_ack=True) == (None, None, None)


def test_reject_to_own_queue_via_default_exchange(ch, uid):
    """x-dead-letter-exchange '' without a routing key: rejected messages come back
    to the same queue (with x-death); rejection cycles are not dropped."""
    q = f"ext-selfrej-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": ""})
    ch.basic_publish("", q, b"s")
    for n in (1, 2):
        m, _p, _b = wait_get(ch, q, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, p, b = wait_get(ch, q, auto_ack=False)
        assert b == b"s" and m.redelivered is False
        assert len(p.headers["x-death"]) == 1
        assert_death(p.headers["x-death"][0], count=n, reason="rejected", queue=q, exchange="", routing_keys=[q])
        ch.basic_reject(m.delivery_tag, requeue=True)


def test_ttl_dead_letter_cycle_is_dropped(ch, uid):
    """A expires into B, B expires back into A: RabbitMQ detects the cycle (the
    message already died in A, and no death in the cycle was a rejection) and
    drops the message instead of delivering it to A again."""
    a = f"ext-cycA-{uid}"
    b = f"ext-cycB-{uid}"
    ch.queue_declare(a, exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": b, "x-message-ttl": 100})
    ch.queue_declare(b, exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": a, "x-message-ttl": 100})
    ch.basic_publish("", a, b"cyc")
    wait_until(lambda: count(ch, b) == 1, what="message in B")
    wait_until(lambda: count(ch, a) == 0 and count(ch, b) == 0, what="message dropped")
    time.sleep(0.3)
    assert count(ch, a) == 0 and count(ch, b) == 0


def test_ttl_self_cycle_is_dropped(ch, uid):
    q = f"ext-selfcyc-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-message-ttl": 50})
    ch.basic_publish("", q, b"self")
    time.sleep(0.3)
    assert count(ch, q) == 0
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_reject_dead_letter_cycle_continues_and_counts(ch, uid):
    """A cycle that contains rejections is not dropped: each pass updates the
    entry for (queue, reason), increments its count and moves it to the front."""
    a = f"ext-rcycA-{uid}"
    b = f"ext-rcycB-{uid}"
    ch.queue_declare(a, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    ch.queue_declare(b, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a})
    ch.basic_publish("", a, b"cyc")

    def bounce(q):
        m, p, body = wait_get(ch, q, auto_ack=False)
        assert body == b"cyc"
        ch.basic_reject(m.delivery_tag, requeue=False)
        return p.headers

    assert bounce(a) is None
    h = bounce(b)
    assert [(d["queue"], d["count"]) for d in h["x-death"]] == [(a, 1)]
    h = bounce(a)
    assert [(d["queue"], d["count"]) for d in h["x-death"]] == [(b, 1), (a, 1)]
    h = bounce(b)
    assert [(d["queue"], d["count"]) for d in h["x-death"]] == [(a, 2), (b, 1)]
    h = bounce(a)
    assert [(d["queue"], d["count"]) for d in h["x-death"]] == [(b, 2), (a, 2)]
    for d in h["x-death"]:
        assert_death(d, count=2, reason="rejected", queue=d["queue"], exchange="", routing_keys=[d["queue"]])
    assert_first_death(h, reason="rejected", queue=a, exchange="")
    m, p, body = wait_get(ch, b)
    assert [(d["queue"], d["count"]) for d in p.headers["x-death"]] == [(a, 3), (b, 2)]


def test_dead_letter_with_aio_pika(broker, uid):
    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as c:
            chan = await c.channel()
            dlx = await chan.declare_exchange(f"ext-aio-dlx-{uid}", aio_pika.ExchangeType.FANOUT, auto_delete=True)
            dq = await chan.declare_queue(exclusive=True)
            await dq.bind(dlx)
            q = await chan.declare_queue(f"ext-aio-src-{uid}", exclusive=True,
                                         arguments={"x-dead-letter-exchange": dlx.name})
            await chan.default_exchange.publish(aio_pika.Message(b"aio", expiration=0.1), routing_key=q.name)
            deadline = time.monotonic() + DEADLINE
            msg = None
            while msg is None:
                msg = await dq.get(no_ack=True, fail=False, timeout=5)
                if msg is None:
                    assert time.monotonic() < deadline, "not dead-lettered"
                    await asyncio.sleep(0.05)
            assert msg.body == b"aio" and msg.exchange == dlx.name and msg.routing_key == q.name
            assert msg.expiration is None
            (death,) = msg.headers["x-death"]
            assert death["count"] == 1 and death["reason"] == "expired" and death["queue"] == q.name
            assert death["exchange"] == "" and death["routing-keys"] == [q.name]
            assert death["original-expiration"] == "100"
            assert isinstance(death["time"], datetime.datetime)
            assert msg.headers["x-first-death-reason"] == "expired"
            assert msg.headers["x-first-death-queue"] == q.name
            assert msg.headers["x-first-death-exchange"] == ""

    asyncio.run(asyncio.wait_for(body(), 15))


def test_dead_letter_with_kombu(broker, uid):
    name = f"ext-kombu-dl-{uid}"
    dead = f"ext-kombu-dead-{uid}"
    with KConnection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5) as kc:
        channel = kc.channel()
        dq = KQueue(dead, exchange=KExchange(""), routing_key=dead, auto_delete=True)(channel)
        dq.declare()
        q = KQueue(name, exchange=KExchange(""), routing_key=name, auto_delete=True,
                   queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})(channel)
        q.declare()
        kc.Producer(channel).publish(b"k", routing_key=name, content_type="application/data",
                                     content_encoding="binary")
        m = q.get(no_ack=False)
        assert m.body == b"k"
        m.reject(requeue=False)
        deadline = time.monotonic() + DEADLINE
        got = None
        while got is None:
            got = dq.get(no_ack=True)
            if got is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert got.body == b"k"
        (death,) = got.headers["x-death"]
        assert death["reason"] == "rejected" and death["queue"] == name and death["count"] == 1
        assert got.headers["x-first-death-reason"] == "rejected"
        q.delete()
        dq.delete()


# --------------------------------------------------------------------------- 4. priorities


def test_priority_queue_order(ch, uid):
    q = f"ext-prio-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5})
    prios = [None, 1, 5, 9, 3, 5, 0, 255, 1]
    for i, pr in enumerate(prios):
        ch.basic_publish("", q, f"{i}-{pr}".encode(), pika.BasicProperties(priority=pr))
    got = []
    while True:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        got.append((b.decode(), p.priority))
    # higher first; above the maximum counts as the maximum (FIFO among 5, 9, 5, 255);
    # no priority counts as 0; the priority property itself is delivered unchanged
    assert got == [("2-5", 5), ("3-9", 9), ("5-5", 5), ("7-255", 255), ("4-3", 3),
                   ("1-1", 1), ("8-1", 1), ("0-None", None), ("6-0", 0)]


def test_priority_requeue_keeps_position(ch, uid):
    q = f"ext-prio-rq-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5})
    ch.basic_publish("", q, b"lo", pika.BasicProperties(priority=1))
    ch.basic_publish("", q, b"hi", pika.BasicProperties(priority=4))
    m, _p, b = ch.basic_get(q)
    assert b == b"hi"
    ch.basic_publish("", q, b"hi2", pika.BasicProperties(priority=4))
    ch.basic_reject(m.delivery_tag, requeue=True)
    assert drain(ch, q) == [b"hi", b"hi2", b"lo"]


def test_priority_zero_max_and_plain_queue_are_fifo(ch, uid):
    q0 = f"ext-prio0-{uid}"
    ch.queue_declare(q0, exclusive=True, arguments={"x-max-priority": 0})
    plain = f"ext-prio-plain-{uid}"
    ch.queue_declare(plain, exclusive=True)
    for q in (q0, plain):
        for i, pr in enumerate([1, 5, 0]):
            ch.basic_publish("", q, b"%d" % i, pika.BasicProperties(priority=pr))
        assert drain(ch, q) == [b"0", b"1", b"2"]


def test_priority_delivery_to_consumer(conn, ch, uid):
    q = f"ext-prio-cons-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 10})
    for i, pr in enumerate([1, 2, 9, 2, 10]):
        ch.basic_publish("", q, b"%d" % i, pika.BasicProperties(priority=pr))
    got = []
    cc = conn.channel()
    cc.basic_qos(prefetch_count=1)
    cc.basic_consume(q, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
    wait_until(lambda: len(got) == 5, conn=conn, what="5 deliveries")
    assert got == [b"4", b"2", b"1", b"3", b"0"]


def test_priority_with_kombu(broker, uid):
    name = f"ext-kombu-prio-{uid}"
    with KConnection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5) as kc:
        channel = kc.channel()
        q = KQueue(name, exchange=KExchange(""), routing_key=name, max_priority=10, auto_delete=True)(channel)
        q.declare()
        producer = kc.Producer(channel)
        for n, pr in [(0, 1), (1, 7), (2, 3), (3, 7)]:
            producer.publish({"n": n}, routing_key=name, priority=pr, serializer="json")
        got = []
        while True:
            m = q.get(no_ack=True)
            if m is None:
                break
            got.append((m.payload["n"], m.properties["priority"]))
        assert got == [(1, 7), (3, 7), (2, 3), (0, 1)]
        q.delete()


# --------------------------------------------------------------------------- 5. consumers


def test_single_active_consumer(conn, ch, uid):
    q = f"ext-sac-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-single-active-consumer": True})
    got: dict[str, list] = {"c1": [], "c2": []}

    def cb(name, ack):
        def f(c, m, p, b):
            got[name].append((b, m.redelivered))
            if ack:
                c.basic_ack(m.delivery_tag)
        return f

    ch1 = conn.channel()
    ch2 = conn.channel()
    t1 = ch1.basic_consume(q, cb("c1", True))
    ch2.basic_consume(q, cb("c2", True))
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    wait_until(lambda: len(got["c1"]) == 4, conn=conn, what="4 deliveries to the active consumer")
    conn.process_data_events(0.1)
    assert got["c2"] == []
    ch1.basic_cancel(t1)
    for i in range(4, 6):
        ch.basic_publish("", q, b"%d" % i)
    wait_until(lambda: len(got["c2"]) == 2, conn=conn, what="deliveries to the next consumer")
    assert got == {"c1": [(b"%d" % i, False) for i in range(4)], "c2": [(b"4", False), (b"5", False)]}


def test_single_active_consumer_unacked_go_to_next(conn, ch, uid):
    q = f"ext-sac-unacked-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-single-active-consumer": True})
    got: dict[str, list] = {"c1": [], "c2": []}
    ch1 = conn.channel()
    ch2 = conn.channel()
    ch1.basic_consume(q, lambda c, m, p, b: got["c1"].append(b))  # never acks
    ch2.basic_consume(q, lambda c, m, p, b: (got["c2"].append((b, m.redelivered)), c.basic_ack(m.delivery_tag)))
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    wait_until(lambda: len(got["c1"]) == 3, conn=conn, what="3 deliveries to the active consumer")
    assert got["c2"] == []
    ch1.close()
    wait_until(lambda: len(got["c2"]) == 3, conn=conn, what="redelivery to the next consumer")
    assert sorted(got["c2"]) == [(b"0", True), (b"1", True), (b"2", True)]


def test_single_active_consumer_basic_get_still_works(conn, ch, uid):
    q = f"ext-sac-get-{uid}"
    ch.queue_declare(q, exclusive=True, arguments={"x-single-active-consumer": True})
    ch.basic_publish("", q, b"g")
    assert ch.basic_get(q, auto_ack=True)[2] == b"g"


def test_consumer_priorities(conn, ch, uid):
    q = f"ext-cprio-{uid}"
    ch.queue_declare(q, exclusive=True)
    got: dict[str, list] = {"low": [], "high": []}
    tags: list[int] = []
    low = conn.channel()
    low.basic_qos(prefetch_count=100)
    high = conn.channel()
    high.basic_qos(prefetch_count=2)
    low.basic_consume(q, lambda c, m, p, b: (got["low"].append(b), c.basic_ack(m.delivery_tag)),
                      arguments={"x-priority": 1})
    high.basic_consume(q, lambda c, m, p, b: (got["high"].append(b), tags.append(m.delivery_tag)),
                       arguments={"x-priority": 10})
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    wait_until(lambda: len(got["low"]) + len(got["high"]) == 6, conn=conn, what="6 deliveries")
    # the high-priority consumer gets messages while it has credit; then the low one
    assert got == {"high": [b"0", b"1"], "low": [b"2", b"3", b"4", b"5"]}
    high.basic_ack(tags[-1], multiple=True)
    high.basic_qos(prefetch_count=2)  # a round trip on that channel: the ack is processed
    for i in range(6, 9):
        ch.basic_publish("", q, b"%d" % i)
    wait_until(lambda: len(got["low"]) + len(got["high"]) == 9, conn=conn, what="9 deliveries")
    assert got == {"high": [b"0", b"1", b"6", b"7"], "low": [b"2", b"3", b"4", b"5", b"8"]}


def test_consumer_priority_invalid_type(conn, ch, uid):
    q = f"ext-cprio-bad-{uid}"
    ch.queue_declare(q, exclusive=True)
    code, text = closed_with(lambda: ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"}))
    assert code == 406
    assert text == f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' {V}: \"expected integer, got longstr\""


def test_consume_arguments_unknown_accepted(conn, ch, uid):
    q = f"ext-cargs-{uid}"
    ch.queue_declare(q, exclusive=True)
    got = []
    cc = conn.channel()
    cc.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True,
                     arguments={"x-priority": 3, "x-cancel-on-ha-failover": True, "foo": "bar"})
    ch.basic_publish("", q, b"x")
    wait_until(lambda: got, conn=conn, what="delivery")
    assert got == [b"x"]


# --------------------------------------------------------------------------- 6. alternate exchange


def test_alternate_exchange(ch, conn, uid):
    ae = f"ext-ae-{uid}"
    ex = f"ext-ae-main-{uid}"
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    aq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(aq, ae)
    ch.exchange_declare(ex, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    nq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(nq, ex, "k")
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.confirm_delivery()
    ch.basic_publish(ex, "k", b"routed", mandatory=True)
    ch.basic_publish(ex, "other", b"unrouted", mandatory=True)  # AE routes it: no Basic.Return
    conn.process_data_events(0.1)
    assert returned == []
    m, p, b = ch.basic_get(aq, auto_ack=True)
    # delivered with the original exchange and routing key
    assert (b, m.exchange, m.routing_key) == (b"unrouted", ex, "other")
    assert p.headers is None
    assert ch.basic_get(aq, auto_ack=True) == (None, None, None)
    assert drain(ch, nq) == [b"routed"]


def test_alternate_exchange_chain_and_failures(ch, uid):
    ch.confirm_delivery()
    # AE that does not exist: unroutable -> returned
    ex2 = f"ext-ae2-{uid}"
    ch.exchange_declare(ex2, "direct", auto_delete=True, arguments={"alternate-exchange": f"ext-none-{uid}"})
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(ex2, "x", b"y", mandatory=True)
    ret = ei.value.messages[0].method
    assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", ex2, "x")
    # AE exists but routes nowhere: returned, naming the original exchange
    ae3 = f"ext-ae3-{uid}"
    ch.exchange_declare(ae3, "direct", auto_delete=False)
    ex3 = f"ext-ae3-main-{uid}"
    ch.exchange_declare(ex3, "direct", auto_delete=False, arguments={"alternate-exchange": ae3})
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(ex3, "x", b"z", mandatory=True)
    ret = ei.value.messages[0].method
    assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", ex3, "x")
    # chain: ex4 -> AE ex3 -> AE ae3, which routes
    ex4 = f"ext-ae4-{uid}"
    ch.exchange_declare(ex4, "direct", auto_delete=False, arguments={"alternate-exchange": ex3})
    aq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(aq, ae3, "x")
    ch.basic_publish(ex4, "x", b"chain", mandatory=True)
    m, _p, b = ch.basic_get(aq, auto_ack=True)
    assert (b, m.exchange, m.routing_key) == (b"chain", ex4, "x")
    # cycle of AEs: terminates, message returned
    ex5, ex6 = f"ext-ae5-{uid}", f"ext-ae6-{uid}"
    ch.exchange_declare(ex5, "direct", arguments={"alternate-exchange": ex6})
    ch.exchange_declare(ex6, "direct", arguments={"alternate-exchange": ex5})
    with pytest.raises(UnroutableError):
        ch.basic_publish(ex5, "x", b"cyc", mandatory=True)
    for e in (ex2, ex3, ex4, ae3, ex5, ex6):
        ch.exchange_delete(e)


def test_alternate_exchange_argument_errors(conn, uid):
    ch = conn.channel()
    ex = f"ext-ae-arg-{uid}"
    code, text = closed_with(lambda: ch.exchange_declare(ex, "direct", arguments={"alternate-exchange": 5}))
    assert code == 406
    assert text == f"PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange '{ex}' {V}"
    ch = conn.channel()
    ch.exchange_declare(ex, "direct", auto_delete=True, arguments={"alternate-exchange": "a1"})
    code, text = closed_with(lambda: ch.exchange_declare(ex, "direct", auto_delete=True,
                                                          arguments={"alternate-exchange": "other"}))
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{ex}' {V}: "
                    "received 'other' but current is 'a1'")
    ch = conn.channel()
    code, text = closed_with(lambda: ch.exchange_declare(ex, "direct", auto_delete=True))
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{ex}' {V}: "
                    "received none but current is the value 'a1' of type 'longstr'")
    conn.channel().exchange_delete(ex)


def test_alternate_exchange_aio_pika(broker, uid):
    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as c:
            chan = await c.channel(publisher_confirms=True, on_return_raises=True)
            ae = await chan.declare_exchange(f"ext-aio-ae-{uid}", aio_pika.ExchangeType.FANOUT, auto_delete=True)
            aq = await chan.declare_queue(exclusive=True)
            await aq.bind(ae)
            ex = await chan.declare_exchange(f"ext-aio-ae-main-{uid}", aio_pika.ExchangeType.TOPIC,
                                             auto_delete=True, arguments={"alternate-exchange": ae.name})
            await ex.publish(aio_pika.Message(b"to-ae"), routing_key="a.b", mandatory=True)
            m = await aq.get(no_ack=True, timeout=5)
            assert m.body == b"to-ae" and m.exchange == ex.name and m.routing_key == "a.b"
            await ex.delete()  # auto-delete exchanges without bindings would linger

    asyncio.run(asyncio.wait_for(body(), 15))


# --------------------------------------------------------------------------- 7. consumer cancel notification


def test_cancel_notification_when_queue_deleted(conn, ch, uid):
    q = f"ext-cancel-{uid}"
    ch.queue_declare(q)
    cancels = []
    cc = conn.channel()
    cc.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = cc.basic_consume(q, lambda *a: None, arguments={"x-priority": 3, "foo": "bar"})
    assert cc.consumer_tags == [tag]
    ch.queue_delete(q)
    wait_until(lambda: cancels, conn=conn, what="Basic.Cancel")
    (method,) = cancels
    assert method.NAME == "Basic.Cancel"
    assert method.consumer_tag == tag
    assert method.nowait is True
    assert cc.is_open and cc.consumer_tags == []


def test_cancel_notification_aio_pika(broker, uid):
    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as c:
            chan = await c.channel()
            q = await chan.declare_queue(f"ext-aio-cancel-{uid}")
            async def ignore(_m):
                pass

            await q.consume(ignore, no_ack=True)
            other = await c.channel()
            await other.queue_delete(q.name)
            raw = await chan.get_underlay_channel()
            for _ in range(150):
                if not raw.consumers:  # aiormq drops the consumer on Basic.Cancel from the broker
                    break
                await asyncio.sleep(0.02)
            assert raw.consumers == {}
            assert not chan.is_closed

    asyncio.run(asyncio.wait_for(body(), 15))


# --------------------------------------------------------------------------- 8. x-queue-type


def test_queue_type_classic(conn, ch, uid):
    q = f"ext-qtype-{uid}"
    ok = ch.queue_declare(q, exclusive=True, arguments={"x-queue-type": "classic"})
    assert ok.method.queue == q
    # RabbitMQ 3.10: redeclaring without x-queue-type is equivalent for a classic queue
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"c")
    assert drain(ch, q) == [b"c"]
    # A different type is inequivalent.  (About quorum itself: RabbitMQ 3.10 accepts
    # x-queue-type=quorum only for durable, non-exclusive, non-auto-delete queues; otherwise
    # 406 "PRECONDITION_FAILED - invalid property 'non-durable' | 'exclusive-owner' |
    # 'auto-delete' for queue 'Q' in vhost '/'".  A quorum queue redeclared without the
    # argument fails with "inequivalent arg 'x-queue-type' ... received none but current
    # is the value 'quorum' of type 'longstr'".  Quorum queues are not tested here.)
    code, text = closed_with(lambda: ch.queue_declare(q, exclusive=True, arguments={"x-queue-type": "quorum"}))
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' {V}: "
                    "received 'quorum' but current is 'classic'")


def test_queue_type_unknown(ch, uid):
    q = f"ext-qtype-bad-{uid}"
    code, text = closed_with(lambda: ch.queue_declare(q, arguments={"x-queue-type": "bogus"}))
    assert code == 406
    assert text == f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' {V}: \"unsupported queue type 'bogus'\""


# --------------------------------------------------------------------------- 9. direct reply-to


def test_direct_reply_to_rpc(conn, uid):
    client = conn.channel()
    server = conn.channel()
    sq = f"ext-rpc-{uid}"
    server.queue_declare(sq, exclusive=True)
    replies = []
    ctag = client.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    client.basic_publish("", sq, b"req", pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c1"))
    m, p, b = wait_get(server, sq)
    assert b == b"req" and p.correlation_id == "c1"
    assert p.reply_to.startswith(REPLY_TO + ".") and len(p.reply_to) > len(REPLY_TO) + 1
    # the pseudo-queue is visible to a passive declare while the consumer exists
    ok = server.queue_declare(p.reply_to, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (p.reply_to, 0, 1)
    server.basic_publish("", p.reply_to, b"resp", pika.BasicProperties(correlation_id=p.correlation_id))
    wait_until(lambda: replies, conn=conn, what="reply")
    ((rm, rp, rb),) = replies
    assert rb == b"resp" and rp.correlation_id == "c1"
    assert rm.consumer_tag == ctag and rm.exchange == "" and rm.routing_key == p.reply_to
    assert rm.redelivered is False
    # a reply_to already of the long form is passed through unchanged
    client.basic_publish("", sq, b"req2", pika.BasicProperties(reply_to=REPLY_TO + ".foo"))
    _m, p2, _b = wait_get(server, sq)
    assert p2.reply_to == REPLY_TO + ".foo"


def test_direct_reply_to_passive_declare_and_stale_names(conn, uid):
    ch = conn.channel()
    ok = ch.queue_declare(REPLY_TO, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)
    client = conn.channel()
    client.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True, consumer_tag=f"my-tag-{uid}")
    sq = ch.queue_declare("", exclusive=True).method.queue
    client.basic_publish("", sq, b"req", pika.BasicProperties(reply_to=REPLY_TO))
    _m, p, _b = wait_get(ch, sq)
    rt = p.reply_to
    client.close()
    code, text = closed_with(lambda: ch.queue_declare(rt, passive=True))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{rt}' {V}")
    ch = conn.channel()
    code, text = closed_with(lambda: ch.queue_declare(REPLY_TO + ".bogus", passive=True))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{REPLY_TO}.bogus' {V}")
    # replies to a gone client are dropped silently, or returned if mandatory
    ch = conn.channel()
    ch.basic_publish("", rt, b"late")
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish("", rt, b"late", mandatory=True)
    ret = ei.value.messages[0].method
    assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", "", rt)
    assert ch.is_open


def test_direct_reply_to_publish_without_consumer(conn, uid):
    ch = conn.channel()
    sq = ch.queue_declare("", exclusive=True).method.queue
    bad = conn.channel()

    def go():
        bad.basic_publish("", sq, b"req", pika.BasicProperties(reply_to=REPLY_TO))
        bad.queue_declare(sq, passive=True)

    code, text = closed_with(go)
    assert (code, text) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")
    assert ch.basic_get(sq, auto_ack=True) == (None, None, None)
    # same after the reply consumer was cancelled
    c2 = conn.channel()
    tag = c2.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    c2.basic_cancel(tag)

    def go2():
        c2.basic_publish("", sq, b"req", pika.BasicProperties(reply_to=REPLY_TO))
        c2.queue_declare(sq, passive=True)

    code, text = closed_with(go2)
    assert (code, text) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")


def test_direct_reply_to_consume_with_acks_refused(conn):
    ch = conn.channel()
    code, text = closed_with(lambda: ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False))
    assert (code, text) == (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
    assert conn.is_open


def test_direct_reply_to_consume_twice_refused(conn):
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    code, text = closed_with(lambda: ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True))
    assert (code, text) == (406, "PRECONDITION_FAILED - reply consumer already set")


def test_direct_reply_to_aio_pika(broker, uid):
    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as c:
            server_ch = await c.channel()
            sq = await server_ch.declare_queue(f"ext-aio-rpc-{uid}", exclusive=True)

            async def serve(msg: aio_pika.abc.AbstractIncomingMessage):
                async with msg.process():
                    assert msg.reply_to.startswith(REPLY_TO + ".")
                    await server_ch.default_exchange.publish(
                        aio_pika.Message(msg.body.upper(), correlation_id=msg.correlation_id),
                        routing_key=msg.reply_to)

            await sq.consume(serve)
            client_ch = await c.channel()
            reply_q = await client_ch.declare_queue(REPLY_TO, passive=True)
            got: asyncio.Queue = asyncio.Queue()
            await reply_q.consume(got.put, no_ack=True)
            for i in range(3):
                await client_ch.default_exchange.publish(
                    aio_pika.Message(b"ping%d" % i, reply_to=REPLY_TO, correlation_id=str(i)), routing_key=sq.name)
            out = []
            for _ in range(3):
                m = await asyncio.wait_for(got.get(), 5)
                out.append((m.body, m.correlation_id))
            assert sorted(out) == [(b"PING0", "0"), (b"PING1", "1"), (b"PING2", "2")]

    asyncio.run(asyncio.wait_for(body(), 15))


# --------------------------------------------------------------------------- 10. argument validation

INVALID_QUEUE_ARGS = [
    ({"x-max-priority": 300}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{max_value_exceeded,300}}"),
    ({"x-max-priority": 256}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{max_value_exceeded,256}}"),
    ({"x-max-priority": -1}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-message-ttl": "abc"},
     "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ({"x-overflow": "bogus"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow"),
    ({"x-expires": 0}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}"),
    ({"x-expires": -1}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-max-length": -1}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-max-length-bytes": -1},
     "invalid arg 'x-max-length-bytes' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-dead-letter-routing-key": "k"},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined"),
    ({"x-single-active-consumer": "yes"},
     "invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {{unacceptable_type,longstr}}"),
    ({"x-dead-letter-exchange": 5}, "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
]


@pytest.mark.parametrize("args,text", INVALID_QUEUE_ARGS, ids=[repr(a[0]) for a in INVALID_QUEUE_ARGS])
def test_invalid_queue_arguments(conn, uid, args, text):
    ch = conn.channel()
    q = f"ext-badarg-{uid}"
    code, got = closed_with(lambda: ch.queue_declare(q, arguments=args))
    assert code == 406
    assert got == "PRECONDITION_FAILED - " + text.format(q=q)
    assert conn.is_open
    # nothing was created
    code, _ = closed_with(lambda: conn.channel().queue_declare(q, passive=True))
    assert code == 404


@pytest.mark.parametrize("args", [{"x-max-priority": 255}, {"x-max-priority": 0}, {"x-max-length": 0},
                                  {"x-message-ttl": 0}, {"x-overflow": "drop-head"},
                                  {"x-single-active-consumer": False}, {"x-queue-type": "classic"}])
def test_valid_edge_queue_arguments(ch, uid, args):
    q = f"ext-okarg-{uid}"
    assert ch.queue_declare(q, exclusive=True, arguments=args).method.queue == q


@pytest.mark.parametrize("expiration,text", [
    ("-1", "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"),
    ("abc", "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"),
])
def test_invalid_expiration_property(conn, uid, expiration, text):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue

    def go():
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
        ch.queue_declare(q, passive=True)

    code, got = closed_with(go)
    assert (code, got) == (406, text)
    assert conn.is_open


def test_inequivalent_extension_arguments(conn, uid):
    q = f"ext-ineq-{uid}"
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5})
    cases = [
        ({}, "received none but current is the value '5' of type 'signedint'", "x-max-priority"),
        ({"x-max-priority": 6}, "received '6' but current is '5'", "x-max-priority"),
        ({"x-max-priority": 5, "x-message-ttl": 6}, "received the value '6' of type 'signedint' but current is none",
         "x-message-ttl"),
    ]
    for args, detail, key in cases:
        code, text = closed_with(lambda a=args: conn.channel().queue_declare(q, exclusive=True, arguments=a))
        assert code == 406
        assert text == f"PRECONDITION_FAILED - inequivalent arg '{key}' for queue '{q}' {V}: {detail}"
    # a passive declare ignores arguments
    conn.channel().queue_declare(q, passive=True, arguments={"x-max-priority": 9})
    s = f"ext-ineq-sac-{uid}"
    ch = conn.channel()
    ch.queue_declare(s, exclusive=True, arguments={"x-single-active-consumer": True})
    code, text = closed_with(lambda: conn.channel().queue_declare(
        s, exclusive=True, arguments={"x-single-active-consumer": False}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue "
                                 f"'{s}' {V}: received 'false' but current is 'true'")
