"""The x-delayed-message exchange against real brokers: declare checks, each delayed type's
routing, timing, messages_delayed in the HTTP API, restart and kill -9."""

from __future__ import annotations

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from test_management_api import Http, mgmt_url
from test_tutorials import params


def _props(delay=None, persistent=False, headers=None) -> pika.BasicProperties:
    h = dict(headers or {})
    if delay is not None:
        h["x-delay"] = delay
    return pika.BasicProperties(headers=h or None, delivery_mode=2 if persistent else None)


def _collect(conn, ch, queue: str, n: int, timeout: float = 15.0) -> list[tuple[float, bytes]]:
    """Consume ``n`` messages (auto-ack): (arrival time, body) each."""
    got: list[tuple[float, bytes]] = []
    tag = ch.basic_consume(queue, lambda c, m, p, b: got.append((time.time(), b)), auto_ack=True)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.01)
    ch.basic_cancel(tag)
    return got


def _declare(ch, name: str, dtype: str = "direct", durable: bool = False) -> None:
    ch.exchange_declare(name, "x-delayed-message", durable=durable, arguments={"x-delayed-type": dtype})


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({}, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"),
        ({"x-delayed-type": 5}, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing "
                                "exchange type"),
        ({"x-delayed-type": "x-delayed-message"},
         "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"),
        ({"x-delayed-type": "nope"}, "PRECONDITION_FAILED - unknown exchange type 'nope'"),
    ],
)
def test_declare_checks_x_delayed_type(broker, uid, arguments, text):
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.exchange_declare(f"dx-{uid}", "x-delayed-message", arguments=arguments)
        assert (e.value.reply_code, e.value.reply_text) == (406, text)
    finally:
        conn.close()


def test_delayed_direct_messages_arrive_on_time_and_others_at_once(broker, uid):
    x, q = f"dx-{uid}", f"dq-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        _declare(ch, x)
        ch.queue_declare(q)
        ch.queue_bind(q, x, "k")
        ch.confirm_delivery()
        sent = time.time()
        ch.basic_publish(x, "k", b"later", _props(700), mandatory=True)  # held: not returned
        ch.basic_publish(x, "k", b"now", _props())
        for v in (0, -5, "soon", 2**32):  # what the plugin routes at once
            ch.basic_publish(x, "k", f"now {v}".encode(), _props(v))
        got = _collect(conn, ch, q, 6)
        bodies = [b for _t, b in got]
        assert bodies[:5] == [b"now", b"now 0", b"now -5", b"now soon", f"now {2**32}".encode()]
        assert bodies[5] == b"later"
        late = got[5][0] - (sent + 0.7)
        assert -0.005 <= late < 1.0, late  # never early; within 50 ms when the machine is not loaded
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("dtype", "bind_key", "bind_args", "rk", "headers"),
    [
        ("fanout", "", None, "anything", None),
        ("topic", "orders.*", None, "orders.eu", None),
        ("headers", "", {"x-match": "all", "region": "eu"}, "", {"region": "eu"}),
    ],
)
def test_each_delayed_type_routes_as_its_type(broker, uid, dtype, bind_key, bind_args, rk, headers):
    x, q, other = f"dx-{dtype}-{uid}", f"dq-{dtype}-{uid}", f"dq-other-{dtype}-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        _declare(ch, x, dtype)
        ch.queue_declare(q)
        ch.queue_declare(other)
        ch.queue_bind(q, x, bind_key, arguments=bind_args)
        if dtype != "fanout":
            ch.queue_bind(other, x, "nothing.matches" if dtype == "topic" else "",
                          arguments={"x-match": "all", "region": "us"} if dtype == "headers" else None)
        ch.basic_publish(x, rk, b"m", _props(300, headers=headers))
        time.sleep(0.1)
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        assert len(_collect(conn, ch, q, 1)) == 1
        assert ch.queue_declare(other, passive=True).method.message_count == 0
    finally:
        conn.close()


def test_delayed_messages_come_out_in_due_order(broker, uid):
    x, q = f"dx-order-{uid}", f"dq-order-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        _declare(ch, x)
        ch.queue_declare(q)
        ch.queue_bind(q, x, "k")
        for d in (900, 300, 600, 100, 1200):
            ch.basic_publish(x, "k", str(d).encode(), _props(d))
        assert [b for _t, b in _collect(conn, ch, q, 5)] == [b"100", b"300", b"600", b"900", b"1200"]
    finally:
        conn.close()


def test_management_api_shows_messages_delayed(broker, uid):
    api = Http(mgmt_url(broker))
    x = f"dx-api-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        _declare(ch, x, "topic")
        ch.confirm_delivery()
        for _ in range(3):
            ch.basic_publish(x, "a.b", b"m", _props(1500))
        j = api.get(f"/api/exchanges/%2F/{x}").json
        assert j["type"] == "x-delayed-message" and j["arguments"] == {"x-delayed-type": "topic"}
        assert j["messages_delayed"] == 3
        deadline = time.monotonic() + 10
        while api.get(f"/api/exchanges/%2F/{x}").json["messages_delayed"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert api.get(f"/api/exchanges/%2F/{x}").json["messages_delayed"] == 0  # released (to nowhere)
        types = [t["name"] for t in api.get("/api/overview").json["exchange_types"]]
        assert "x-delayed-message" in types
    finally:
        conn.close()


def test_deleting_the_exchange_drops_its_held_messages(fresh_broker, uid):
    conn = pika.BlockingConnection(params(fresh_broker))
    try:
        ch = conn.channel()
        _declare(ch, "dx", durable=True)
        ch.queue_declare("dq", durable=True)
        ch.queue_bind("dq", "dx", "k")
        ch.confirm_delivery()
        ch.basic_publish("dx", "k", b"gone", _props(500, persistent=True))
        delayed = fresh_broker.data_dir / "delayed"
        assert any(delayed.iterdir())
        ch.exchange_delete("dx")
        assert not any(delayed.iterdir())
        _declare(ch, "dx", durable=True)
        ch.queue_bind("dq", "dx", "k")
        time.sleep(0.8)
        assert ch.queue_declare("dq", passive=True).method.message_count == 0
    finally:
        conn.close()


def _publish_held(b, n: int, delay_ms: int, transient: int = 0) -> float:
    """Declare dx -> dq and publish ``n`` confirmed delayed messages; returns when the first was sent."""
    conn = pika.BlockingConnection(params(b))
    try:
        ch = conn.channel()
        _declare(ch, "dx", durable=True)
        ch.queue_declare("dq", durable=True)
        ch.queue_bind("dq", "dx", "k")
        ch.confirm_delivery()
        first = time.time()
        for i in range(n):
            ch.basic_publish("dx", "k", str(i).encode(), _props(delay_ms + i, persistent=True))
        for _ in range(transient):
            ch.basic_publish("dx", "k", b"transient", _props(delay_ms, persistent=False))
        return first
    finally:
        conn.close()


def _drain_dq(b, n: int, timeout: float = 20.0) -> list[tuple[float, bytes]]:
    conn = pika.BlockingConnection(params(b))
    try:
        ch = conn.channel()
        got = _collect(conn, ch, "dq", n, timeout)
        conn.process_data_events(time_limit=0.3)
        assert ch.queue_declare("dq", passive=True).method.message_count == 0
        return got
    finally:
        conn.close()


def test_held_persistent_messages_survive_a_restart_and_transient_ones_do_not(fresh_broker):
    sent = _publish_held(fresh_broker, 50, 2500, transient=5)
    fresh_broker.stop()
    fresh_broker.start()
    got = _drain_dq(fresh_broker, 50)
    assert sorted((b for _t, b in got), key=int) == [str(i).encode() for i in range(50)]
    assert min(t for t, _b in got) >= sent + 2.5 - 0.005  # not released early
    # a delivered bucket goes once the queue's copies are fsync'd (a loaded disk can take a while)
    deadline = time.monotonic() + 10
    while any((fresh_broker.data_dir / "delayed").glob("*/*-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any((fresh_broker.data_dir / "delayed").glob("*/*-*")), "delivered buckets are removed"


def test_confirmed_held_messages_survive_kill_9(fresh_broker):
    _publish_held(fresh_broker, 300, 1500)
    fresh_broker.kill9()  # right after the last confirm
    fresh_broker.start()
    got = _drain_dq(fresh_broker, 300)
    assert sorted({b for _t, b in got}, key=int) == [str(i).encode() for i in range(300)]
