"""Quorum queues over AMQP with pika: declare rules and texts, delivery counts and the
delivery limit, dead-lettering (both strategies), limits, priorities, consumers, and the
management API's quorum fields."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from test_management_api import mgmt_url

QQ = {"x-queue-type": "quorum"}


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))


@pytest.fixture
def ch(broker):
    conn = connect(broker.port)
    yield conn.channel()
    if conn.is_open:
        conn.close()


def closed_with(broker, declare) -> tuple[int, str]:
    conn = connect(broker.port)
    try:
        with pytest.raises(ChannelClosedByBroker) as e:
            declare(conn.channel())
        return e.value.reply_code, e.value.reply_text
    finally:
        conn.close()


def get_body(ch, q: str, ack: bool = True):
    m, props, body = ch.basic_get(q, auto_ack=False)
    if m is None:
        return None, None, None
    if ack:
        ch.basic_ack(m.delivery_tag)
    return m, props, body


def wait_for(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def api(b, path: str, method: str = "GET", body=None):
    req = urllib.request.Request(f"{mgmt_url(b)}/api/{path}", method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data, timeout=10) as r:
        return json.loads(r.read() or b"null")


# -- declare ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "durable,exclusive,auto_delete,prop",
    [(False, False, False, "non-durable"), (True, True, False, "exclusive-owner"), (True, False, True, "auto-delete")],
)
def test_quorum_declare_refuses_what_rabbitmq_refuses(broker, uid, durable, exclusive, auto_delete, prop):
    q = f"qq-prop-{uid}"
    code, text = closed_with(
        broker, lambda c: c.queue_declare(q, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                                          arguments=QQ)
    )
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' in vhost '/'")


@pytest.mark.parametrize("arg,value", [("x-max-priority", 10), ("x-queue-mode", "lazy"), ("x-max-age", "1D")])
def test_quorum_refuses_other_types_arguments(broker, uid, arg, value):
    q = f"qq-arg-{uid}"
    code, text = closed_with(broker, lambda c: c.queue_declare(q, durable=True, arguments=dict(QQ, **{arg: value})))
    assert code == 406
    assert text == f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/' of queue type " \
                   "rabbit_quorum_queue"


def test_no_server_named_quorum_queue(broker):
    code, text = closed_with(broker, lambda c: c.queue_declare("", durable=True, arguments=QQ))
    assert (code, text) == (406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type "
                                 "rabbit_quorum_queue")


def test_bad_dead_letter_strategy(broker, uid):
    q = f"qq-dls-{uid}"
    code, text = closed_with(
        broker, lambda c: c.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-dead-letter-strategy": "x"}))
    )
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for queue '{q}' "
                                 "in vhost '/': invalid_dlx_strategy")


def test_queue_type_is_part_of_equivalence(broker, ch, uid):
    q = f"qq-eq-{uid}"
    ch.queue_declare(q, durable=True)
    code, text = closed_with(broker, lambda c: c.queue_declare(q, durable=True, arguments=QQ))
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in "
                                 "vhost '/': received 'quorum' but current is 'classic'")
    q2 = f"qq-eq2-{uid}"
    ch.queue_declare(q2, durable=True, arguments=dict(QQ, **{"x-delivery-limit": 5}))
    ch.queue_declare(q2, durable=True, arguments=dict(QQ, **{"x-delivery-limit": 5}))  # same: fine
    code, text = closed_with(broker, lambda c: c.queue_declare(q2, durable=True, arguments=QQ))
    assert code == 406 and "inequivalent arg 'x-delivery-limit'" in text
    code, _ = closed_with(broker, lambda c: c.queue_declare(q2, durable=True))
    assert code == 406  # declaring it as a classic queue: x-queue-type differs
    ch.queue_delete(q)
    ch.queue_delete(q2)


# -- delivery counts -----------------------------------------------------------------------------
def test_transient_message_is_persisted_and_confirmed(broker, ch, uid):
    q = f"qq-conf-{uid}"
    ch.queue_declare(q, durable=True, arguments=QQ)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"t", pika.BasicProperties(delivery_mode=1))  # raises if nacked
    m, _p, body = get_body(ch, q)
    assert body == b"t"
    ch.queue_delete(q)


def test_x_delivery_count_grows_with_each_return(broker, ch, uid):
    q = f"qq-count-{uid}"
    ch.queue_declare(q, durable=True, arguments=QQ)
    ch.basic_publish("", q, b"m")
    m, props, _ = get_body(ch, q, ack=False)
    assert not m.redelivered and "x-delivery-count" not in (props.headers or {})
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, props, _ = get_body(ch, q, ack=False)
    assert m.redelivered and props.headers["x-delivery-count"] == 1
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, props, _ = get_body(ch, q, ack=False)
    assert props.headers["x-delivery-count"] == 2
    # a closed channel returns its deliveries too
    ch.close()
    conn = connect(broker.port)
    c2 = conn.channel()
    m, props, _ = get_body(c2, q)
    assert props.headers["x-delivery-count"] == 3
    assert get_body(c2, q)[0] is None
    c2.queue_delete(q)
    conn.close()


def test_delivery_limit_dead_letters_with_reason(broker, ch, uid):
    q, dlq = f"qq-lim-{uid}", f"qq-lim-dlq-{uid}"
    ch.queue_declare(dlq, durable=True)
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{
        "x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}))
    ch.basic_publish("", q, b"poison")
    for _ in range(3):
        m, _p, _b = get_body(ch, q, ack=False)
        assert m is not None
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert get_body(ch, q)[0] is None  # returned a third time: over the limit of 2
    m, props, body = wait_for(lambda: (r := get_body(ch, dlq))[0] and r)
    assert body == b"poison"
    death = props.headers["x-death"][0]
    assert death["reason"] == "delivery_limit" and death["queue"] == q
    assert props.headers["x-first-death-reason"] == "delivery_limit"
    ch.queue_delete(q)
    ch.queue_delete(dlq)


def test_default_limit_is_20_and_negative_means_none(broker, ch, uid):
    q, free = f"qq-def-{uid}", f"qq-free-{uid}"
    ch.queue_declare(q, durable=True, arguments=QQ)
    ch.queue_declare(free, durable=True, arguments=dict(QQ, **{"x-delivery-limit": -1}))
    for name in (q, free):
        ch.basic_publish("", name, b"x")
    for name, survives in ((q, False), (free, True)):
        for _ in range(21):
            m, _p, _b = get_body(ch, name, ack=False)
            ch.basic_reject(m.delivery_tag, requeue=True)
        m, props, _ = get_body(ch, name)
        if survives:
            assert props.headers["x-delivery-count"] == 21
        else:
            assert m is None  # dropped after its 21st return (no dead-letter exchange)
    info = api(broker, f"queues/%2F/{q}")
    assert info["delivery_limit"] == 20 and info["type"] == "quorum"
    assert api(broker, f"queues/%2F/{free}")["delivery_limit"] == -1
    ch.queue_delete(q)
    ch.queue_delete(free)


def test_poison_messages_in_management_api(broker, ch, uid):
    q = f"qq-mgmt-{uid}"
    ch.queue_declare(q, durable=True, arguments=QQ)
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    m, _p, _b = get_body(ch, q, ack=False)
    ch.basic_nack(m.delivery_tag, requeue=True)
    info = wait_for(lambda: (d := api(broker, f"queues/%2F/{q}"))["messages"] == 3 and d)
    assert info["type"] == "quorum"
    assert info["members"] == [info["leader"]] and info["online"] == [info["leader"]]
    assert info["messages_returned"] == 1 and info["delivery_count_max"] == 1
    got = api(broker, f"queues/%2F/{q}/get", "POST", {"count": 1, "ackmode": "ack_requeue_true"})
    assert got[0]["redelivered"] is True and got[0]["properties"]["headers"]["x-delivery-count"] == 1
    assert got[0]["delivery_count"] == 1
    got = api(broker, f"queues/%2F/{q}/get", "POST", {"count": 3, "ackmode": "ack_requeue_true"})
    assert [m["delivery_count"] for m in got] == [2, 0, 0]  # the get above returned it once more
    peeked = api(broker, f"queues/%2F/{q}/peek", "POST", {"offset": 0, "count": 3})
    # that get returned all three; peeking takes nothing, so it counts no return
    assert [m["delivery_count"] for m in peeked] == [3, 1, 1]
    info = api(broker, f"queues/%2F/{q}")
    assert (info["messages_returned"], info["delivery_count_max"]) == (3, 3)
    listed = [x for x in api(broker, "queues/%2F") if x["name"] == q]
    assert listed[0]["type"] == "quorum"
    ch.queue_delete(q)


# -- dead-letter strategies ------------------------------------------------------------------------
def test_at_least_once_keeps_message_until_target_exists(broker, ch, uid):
    q, dlx, dlq = f"qq-alo-{uid}", f"qq-alo-x-{uid}", f"qq-alo-dlq-{uid}"
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{
        "x-dead-letter-exchange": dlx, "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"}))
    ch.basic_publish("", q, b"keep me")
    m, _p, _b = get_body(ch, q, ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)  # nowhere to go yet: held in the source queue
    info = wait_for(lambda: (d := api(broker, f"queues/%2F/{q}"))["messages_dlx"] == 1 and d)
    assert info["dead_letter_strategy"] == "at-least-once"
    ch.queue_declare(dlq, durable=True, arguments=QQ)
    ch.queue_bind(dlq, dlx)
    m, props, body = wait_for(lambda: (r := get_body(ch, dlq))[0] and r)
    assert body == b"keep me" and props.headers["x-death"][0]["reason"] == "rejected"
    wait_for(lambda: api(broker, f"queues/%2F/{q}")["messages_dlx"] == 0)
    for name in (q, dlq):
        ch.queue_delete(name)
    ch.exchange_delete(dlx)


def test_at_least_once_needs_reject_publish(broker, ch, uid):
    q = f"qq-alo2-{uid}"
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{
        "x-dead-letter-exchange": "x", "x-dead-letter-strategy": "at-least-once"}))
    assert api(broker, f"queues/%2F/{q}")["dead_letter_strategy"] == "at-most-once"
    ch.queue_delete(q)


# -- limits, ttl, priorities, consumers -------------------------------------------------------------------
def test_max_length_overflow(broker, ch, uid):
    drop, rej = f"qq-ml-d-{uid}", f"qq-ml-r-{uid}"
    ch.queue_declare(drop, durable=True, arguments=dict(QQ, **{"x-max-length": 2}))
    ch.queue_declare(rej, durable=True, arguments=dict(QQ, **{"x-max-length": 2, "x-overflow": "reject-publish"}))
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", drop, str(i).encode())
    assert [get_body(ch, drop)[2] for _ in range(3)] == [b"1", b"2", None]
    ch.basic_publish("", rej, b"0")
    ch.basic_publish("", rej, b"1")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", rej, b"2")
    assert [get_body(ch, rej)[2] for _ in range(3)] == [b"0", b"1", None]
    ch.queue_delete(drop)
    ch.queue_delete(rej)


def test_message_ttl(broker, ch, uid):
    q = f"qq-ttl-{uid}"
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-message-ttl": 100}))
    ch.basic_publish("", q, b"old")
    time.sleep(0.4)
    ch.basic_publish("", q, b"new")
    assert get_body(ch, q)[2] == b"new"
    ch.queue_delete(q)


def test_two_priority_levels(broker, ch, uid):
    q = f"qq-prio-{uid}"
    ch.queue_declare(q, durable=True, arguments=QQ)
    for i in range(6):
        ch.basic_publish("", q, f"n{i}".encode(), pika.BasicProperties(priority=4))
    for i in range(6):
        ch.basic_publish("", q, f"h{i}".encode(), pika.BasicProperties(priority=5))
    order = [get_body(ch, q)[2].decode() for _ in range(12)]
    kinds = "".join(o[0] for o in order)
    # high and normal interleave about 2:1 while both have messages; each level stays in order
    assert kinds.startswith("hhnhhnhhn"), kinds
    assert [o for o in order if o[0] == "n"] == [f"n{i}" for i in range(6)]
    assert [o for o in order if o[0] == "h"] == [f"h{i}" for i in range(6)]
    ch.queue_delete(q)


def test_single_active_consumer_and_priorities(broker, ch, uid):
    q = f"qq-sac-{uid}"
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-single-active-consumer": True}))
    got: list[str] = []
    ch.basic_consume(q, lambda c, m, p, b: got.append("a"), auto_ack=True)
    ch.basic_consume(q, lambda c, m, p, b: got.append("b"), auto_ack=True)
    for _ in range(4):
        ch.basic_publish("", q, b"x")
    wait_for(lambda: (ch.connection.process_data_events(0.05), len(got) == 4)[1])
    assert got == ["a"] * 4
    q2 = f"qq-cprio-{uid}"
    ch.queue_declare(q2, durable=True, arguments=QQ)
    got2: list[str] = []
    ch.basic_consume(q2, lambda c, m, p, b: got2.append("low"), auto_ack=True)
    ch.basic_consume(q2, lambda c, m, p, b: got2.append("high"), auto_ack=True, arguments={"x-priority": 5})
    for _ in range(4):
        ch.basic_publish("", q2, b"x")
    wait_for(lambda: (ch.connection.process_data_events(0.05), len(got2) == 4)[1])
    assert got2 == ["high"] * 4
    ch.queue_delete(q)
    ch.queue_delete(q2)


# -- restart -------------------------------------------------------------------------------------------
def test_kill9_loses_nothing_confirmed_and_keeps_delivery_counts(fresh_broker):
    b = fresh_broker
    conn = connect(b.port)
    ch = conn.channel()
    ch.queue_declare("qq-crash", durable=True, arguments=QQ)
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", "qq-crash", str(i).encode(), pika.BasicProperties(delivery_mode=1))
    m, _p, _b = get_body(ch, "qq-crash", ack=False)
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, props, _b = get_body(ch, "qq-crash", ack=False)
    assert props.headers["x-delivery-count"] == 1
    ch.basic_nack(m.delivery_tag, requeue=True)
    ch.queue_declare("qq-crash", durable=True, arguments=QQ, passive=True)  # the nack is processed
    time.sleep(0.2)  # and its return written (a loop turn later)
    b.kill9()
    b.start()
    conn = connect(b.port)
    ch = conn.channel()
    q = ch.queue_declare("qq-crash", durable=True, arguments=QQ, passive=True)
    assert q.method.message_count == 200
    m, props, body = get_body(ch, "qq-crash")
    assert body == b"0" and m.redelivered and props.headers["x-delivery-count"] == 2
    bodies = [get_body(ch, "qq-crash")[2] for _ in range(199)]
    assert bodies == [str(i).encode() for i in range(1, 200)]
    conn.close()


def test_kill9_while_publishing_loses_nothing_confirmed(fresh_broker):
    """Publish transient messages with confirms until the broker is killed mid-stream:
    every confirmed message is there after the restart, in order."""
    import threading

    b = fresh_broker
    conn = connect(b.port)
    conn.channel().queue_declare("qq-load", durable=True, arguments=QQ)
    conn.close()
    confirmed: list[int] = []

    def publish() -> None:
        c = connect(b.port)
        ch = c.channel()
        ch.confirm_delivery()
        try:
            for i in range(100_000):
                ch.basic_publish("", "qq-load", str(i).encode(), pika.BasicProperties(delivery_mode=1))
                confirmed.append(i)
        except Exception:
            pass  # the broker is gone

    t = threading.Thread(target=publish)
    t.start()
    wait_for(lambda: len(confirmed) >= 300)
    b.kill9()
    t.join(15)
    assert not t.is_alive()
    n = len(confirmed)
    b.start()
    conn = connect(b.port)
    ch = conn.channel()
    count = ch.queue_declare("qq-load", durable=True, arguments=QQ, passive=True).method.message_count
    assert count >= n  # an unconfirmed message may have made it too
    bodies = [get_body(ch, "qq-load")[2] for _ in range(n)]
    assert bodies == [str(i).encode() for i in range(n)]
    conn.close()


def test_x_expires_deletes_an_unused_quorum_queue(broker, ch, uid):
    q = f"qq-exp-{uid}"
    ch.queue_declare(q, durable=True, arguments=dict(QQ, **{"x-expires": 300}))

    def gone() -> bool:
        c = connect(broker.port)
        try:
            c.channel().queue_declare(q, durable=True, arguments=QQ, passive=True)
            return False
        except ChannelClosedByBroker as e:
            return e.reply_code == 404
        finally:
            if c.is_open:
                c.close()

    wait_for(gone, 10)
