"""Streams (x-queue-type: stream) over AMQP 0-9-1 with pika, aio-pika and kombu, against a
real broker: RabbitMQ's refusals and texts, x-stream-offset, filtering, retention, the
management API and metrics, restart and kill -9.

The texts were checked against RabbitMQ (3.10 for the runtime answers, the 4.x source for
the texts that changed since).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aio_pika
import pika
import pytest
from kombu import Connection as KombuConnection
from kombu import Consumer as KombuConsumer
from kombu import Queue as KombuQueue
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

STREAM = {"x-queue-type": "stream"}


def connect(b) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))


def declare(ch, name: str, **extra) -> None:
    ch.queue_declare(name, durable=True, arguments=dict(STREAM, **extra))


def publish(ch, name: str, bodies: list[bytes], headers: list[dict] | None = None) -> None:
    """Publish with confirms (every one confirmed before returning)."""
    ch.confirm_delivery()
    for i, body in enumerate(bodies):
        ch.basic_publish("", name, body, pika.BasicProperties(headers=headers[i] if headers else None))


def consume(conn, name: str, count: int, args: dict | None = None, prefetch: int = 50, timeout: float = 5.0,
            ack: bool = True) -> list[tuple[int, bytes]]:
    """Read ``count`` deliveries (or until ``timeout``): (x-stream-offset header, body)."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got: list[tuple[int, bytes]] = []

    def cb(c, m, p, body):
        got.append((p.headers["x-stream-offset"], body))
        if ack:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(name, cb, arguments=args or {})
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    ch.close()
    return got[:count]


MGMT_LINE = re.compile(r"management API listening on (http://\S+)")


def api_get(b, path: str) -> dict:
    base = MGMT_LINE.findall(b.log_text())[-1]
    req = urllib.request.Request(base + "/api/" + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


# -- declaring ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(durable=False, arguments=STREAM), "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
        (dict(durable=True, exclusive=True, arguments=STREAM),
         "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
        (dict(durable=True, auto_delete=True, arguments=STREAM),
         "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-max-priority": 5})),
         "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-message-ttl": 5})),
         "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-single-active-consumer": True})),
         "invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-dead-letter-exchange": "dlx"})),
         "invalid arg 'x-dead-letter-exchange' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-overflow": "drop-head"})),
         "invalid arg 'x-overflow' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-max-age": "1x"})),
         "invalid arg 'x-max-age' for queue '{q}' in vhost '/': invalid_max_age"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-max-age": 5})),
         "invalid arg 'x-max-age' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"),
        (dict(durable=True, arguments=dict(STREAM, **{"x-stream-max-segment-size-bytes": 4_000_000_000})),
         "Exceeded max value for x-stream-max-segment-size-bytes"),
    ],
)
def test_declare_refusals(broker, uid, kwargs, text):
    name = f"st-decl-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(name, **kwargs)
        assert e.value.reply_code == 406
        assert e.value.reply_text == "PRECONDITION_FAILED - " + text.format(q=name)
        assert conn.is_open
        conn.channel().queue_declare(name, passive=False, durable=True, arguments=STREAM)


def test_redeclare_and_equivalence(broker, uid):
    name = f"st-eq-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name, **{"x-max-age": "1D"})
        declare(ch, name, **{"x-max-age": "1D"})  # equivalent
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().queue_declare(name, durable=True, arguments=dict(STREAM, **{"x-max-age": "2D"}))
        assert e.value.reply_text.startswith(f"PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '{name}'")


# -- consuming: refusals ----------------------------------------------------------------------------

def test_consumer_needs_prefetch_and_manual_ack(broker, uid):
    name = f"st-cons-{uid}"
    what = f"queue '{name}' in vhost '/'"
    with connect(broker) as conn:
        declare(conn.channel(), name)
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().basic_consume(name, lambda *a: None)
        assert (e.value.reply_code, e.value.reply_text) == (
            406, f"PRECONDITION_FAILED - consumer prefetch count is not set for stream {what}")
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.basic_consume(name, lambda *a: None, arguments={"x-priority": 3})
        assert e.value.reply_text == (
            f"PRECONDITION_FAILED - invalid arg 'x-priority' for {what} of queue type rabbit_stream_queue")
        assert conn.is_open
    for setup, text in [
        (lambda ch: ch.basic_qos(prefetch_count=10), f"automatic acknowledgement not supported by stream {what}"),
        (lambda ch: (ch.basic_qos(prefetch_count=10), ch.basic_qos(prefetch_count=10, global_qos=True)),
         f"{what} does not support global qos"),
    ]:
        with connect(broker) as conn:
            ch = conn.channel()
            setup(ch)
            with pytest.raises(ConnectionClosedByBroker) as ce:
                ch.basic_consume(name, lambda *a: None, auto_ack="automatic" in text)
            assert (ce.value.reply_code, ce.value.reply_text) == (540, "NOT_IMPLEMENTED - " + text)


@pytest.mark.parametrize("bad", ["1x", "0h", "1.5h", "abc", "", "first "])
def test_bad_offset_closes_the_channel_only(broker, uid, bad):
    name = f"st-off-{uid}"
    with connect(broker) as conn:
        declare(conn.channel(), name)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.basic_consume(name, lambda *a: None, arguments={"x-stream-offset": bad})
        assert e.value.reply_code == 406
        assert e.value.reply_text == (
            f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '{name}' in vhost '/': "
            f'{{invalid_stream_offset_arg,{{longstr,<<"{bad}">>}}}}')
        assert conn.is_open
        conn.channel().queue_declare(name, passive=True)


def test_get_and_purge_are_refused(broker, uid):
    name = f"st-get-{uid}"
    with connect(broker) as conn:
        declare(conn.channel(), name)
        with pytest.raises(ConnectionClosedByBroker) as e:
            conn.channel().basic_get(name)
    assert (e.value.reply_code, e.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{name}' in vhost '/'")
    with connect(broker) as conn:
        with pytest.raises(ConnectionClosedByBroker) as e:
            conn.channel().queue_purge(name)
    assert (e.value.reply_code, e.value.reply_text) == (
        540, f"NOT_IMPLEMENTED - queue.purge not supported by stream queues queue '{name}' in vhost '/'")


# -- consuming: offsets, independence, credit ---------------------------------------------------------

def test_offsets_first_last_next_number_time_interval(broker, uid):
    name = f"st-offsets-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name)
        publish(ch, name, [b"a%d" % i for i in range(10)])
        time.sleep(1.1)  # AMQP timestamps have whole seconds
        between = datetime.datetime.now(datetime.UTC)
        time.sleep(1.1)
        publish(ch, name, [b"b%d" % i for i in range(5)])

        first = consume(conn, name, 15, {"x-stream-offset": "first"})
        assert first == [(i, b"a%d" % i) for i in range(10)] + [(10 + i, b"b%d" % i) for i in range(5)]
        assert consume(conn, name, 1, {"x-stream-offset": "last"}) == [(14, b"b4")]
        assert consume(conn, name, 3, {"x-stream-offset": 7}) == [(7, b"a7"), (8, b"a8"), (9, b"a9")]
        assert consume(conn, name, 1, {"x-stream-offset": 99}, timeout=0.5) == []  # past the end: waits
        assert [o for o, _ in consume(conn, name, 5, {"x-stream-offset": between})] == [10, 11, 12, 13, 14]
        assert len(consume(conn, name, 15, {"x-stream-offset": "1h"})) == 15
        assert consume(conn, name, 1, {"x-stream-offset": "next"}, timeout=0.5) == []
        assert consume(conn, name, 1, {}, timeout=0.5) == []  # next is the default

        # a consumer from next sees what comes after it subscribed
        ch2 = conn.channel()
        ch2.basic_qos(prefetch_count=10)
        got: list = []
        ch2.basic_consume(name, lambda c, m, p, b: (got.append((p.headers["x-stream-offset"], b)),
                                                     c.basic_ack(m.delivery_tag)))
        conn.process_data_events(0.2)
        publish(ch, name, [b"c0"])
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            conn.process_data_events(0.05)
        assert got == [(15, b"c0")]


def test_reading_never_removes_and_nack_is_a_no_op(broker, uid):
    name = f"st-keep-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name)
        publish(ch, name, [b"m%d" % i for i in range(20)])
        # two consumers on two channels read everything, each on its own
        a = consume(conn, name, 20, {"x-stream-offset": "first"}, prefetch=3)
        b = consume(conn, name, 20, {"x-stream-offset": "first"}, prefetch=7)
        assert a == b == [(i, b"m%d" % i) for i in range(20)]
        # nack with requeue: nothing comes back, the reader goes on (credit only)
        ch2 = conn.channel()
        ch2.basic_qos(prefetch_count=2)
        seen: list[int] = []

        def cb(c, m, p, body):
            seen.append(p.headers["x-stream-offset"])
            c.basic_nack(m.delivery_tag, requeue=True)

        ch2.basic_consume(name, cb, arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + 5
        while len(seen) < 20 and time.monotonic() < deadline:
            conn.process_data_events(0.05)
        conn.process_data_events(0.3)
        assert seen == list(range(20))
        assert ch.queue_declare(name, passive=True).method.message_count == 20


def test_prefetch_bounds_unacked_deliveries(broker, uid):
    name = f"st-credit-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name)
        publish(ch, name, [b"x"] * 30)
        got = consume(conn, name, 30, {"x-stream-offset": "first"}, prefetch=4, timeout=1.0, ack=False)
        assert len(got) == 4


def test_filtering(broker, uid):
    name = f"st-filter-{uid}"
    values = ["red", "blue", None, "red", "green", None, "blue"]
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name)
        publish(ch, name, [b"%d" % i for i in range(len(values))],
                [{"x-stream-filter-value": v} if v else {} for v in values])
        red = consume(conn, name, 2, {"x-stream-offset": "first", "x-stream-filter": "red"})
        assert [o for o, _ in red] == [0, 3]
        several = consume(conn, name, 3, {"x-stream-offset": "first", "x-stream-filter": ["blue", "green"]})
        assert [o for o, _ in several] == [1, 4, 6]
        with_unfiltered = consume(conn, name, 4, {"x-stream-offset": "first", "x-stream-filter": "red",
                                                  "x-stream-match-unfiltered": True})
        assert [o for o, _ in with_unfiltered] == [0, 2, 3, 5]
        assert len(consume(conn, name, 7, {"x-stream-offset": "first"})) == 7  # no filter: everything


# -- what the stream shows ------------------------------------------------------------------------

def test_management_api_cli_columns_and_metrics(broker, uid):
    name = f"st-mgmt-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name)
        publish(ch, name, [b"y" * 100] * 12)
    q = api_get(broker, f"queues/%2F/{name}")
    assert q["type"] == "stream"
    assert (q["messages"], q["messages_ready"], q["first_offset"], q["last_offset"]) == (12, 12, 0, 11)
    assert q["segments"] == 1 and q["message_bytes"] > 1200
    m = re.search(r"Prometheus metrics listening on (http://\S+/metrics)", broker.log_text())
    if m is None:
        pytest.fail("no metrics listener in the log")
    req = urllib.request.Request(m.group(1) + "/per-object")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    assert f'rabbitmq_queue_messages_ready{{queue="{name}",vhost="/"}} 12' in text
    assert f'burrowmq_stream_last_offset{{queue="{name}",vhost="/"}} 11.0' in text
    assert f'burrowmq_stream_segments{{queue="{name}",vhost="/"}} 1.0' in text
    # the CLI lists the same columns
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), BROKER_URL=MGMT_LINE.findall(broker.log_text())[-1])
    r = subprocess.run([sys.executable, "-m", "cli", "list-queues", "name", "type", "messages", "first_offset",
                        "last_offset", "segments"], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [name, "stream", "12", "0", "11", "1"] in [line.split() for line in r.stdout.splitlines()]


# -- retention -----------------------------------------------------------------------------------------

def test_retention_by_bytes_drops_whole_segments_from_the_head(broker, uid):
    name = f"st-ret-{uid}"
    body = b"z" * 1000
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name, **{"x-stream-max-segment-size-bytes": 16384, "x-max-length-bytes": 50_000})
        publish(ch, name, [body] * 300)
        q = api_get(broker, f"queues/%2F/{name}")
        assert q["last_offset"] == 299
        assert q["first_offset"] > 0 and q["message_bytes"] <= 50_000 + 16384
        assert q["messages"] == 300 - q["first_offset"]
        got = consume(conn, name, 1, {"x-stream-offset": "first"})
        assert got[0][0] == q["first_offset"]
        assert consume(conn, name, 1, {"x-stream-offset": 0})[0][0] == q["first_offset"]


def test_retention_by_age_when_a_segment_rolls(broker, uid):
    name = f"st-age-{uid}"
    with connect(broker) as conn:
        ch = conn.channel()
        declare(ch, name, **{"x-stream-max-segment-size-bytes": 16384, "x-max-age": "1s"})
        publish(ch, name, [b"o" * 1000] * 40)
        time.sleep(2.2)
        publish(ch, name, [b"n" * 1000] * 40)
        q = api_get(broker, f"queues/%2F/{name}")
        assert q["first_offset"] >= 40 - 16 and q["last_offset"] == 79
        assert all(b.startswith(b"n") for _o, b in consume(conn, name, 100, {"x-stream-offset": "first"},
                                                            timeout=1.0)[16:])


# -- restart and kill -9 ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_confirmed_messages_and_offsets_survive(fresh_broker, how):
    b = fresh_broker
    with connect(b) as conn:
        ch = conn.channel()
        declare(ch, "durable-stream", **{"x-stream-max-segment-size-bytes": 65536})
        publish(ch, "durable-stream", [b"p%d" % i for i in range(300)])
    if how == "kill9":
        b.kill9()
    else:
        b.stop()
    b.start()
    with connect(b) as conn:
        ch = conn.channel()
        assert ch.queue_declare("durable-stream", passive=True).method.message_count == 300
        publish(ch, "durable-stream", [b"after"])
        got = consume(conn, "durable-stream", 301, {"x-stream-offset": "first"}, prefetch=200)
    assert got == [(i, b"p%d" % i) for i in range(300)] + [(300, b"after")]


# -- other clients -------------------------------------------------------------------------------------

async def test_aio_pika_reads_a_stream(broker, uid):
    name = f"st-aio-{uid}"

    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=10)
            q = await ch.declare_queue(name, durable=True, arguments=STREAM)
            for i in range(25):
                await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=name)
            got = []
            async with q.iterator(arguments={"x-stream-offset": 20}) as it:
                async for m in it:
                    async with m.process():
                        got.append((m.headers["x-stream-offset"], m.body))
                    if len(got) == 5:
                        break
            return got

    got = await asyncio.wait_for(body(), 10)
    assert got == [(20 + i, b"%d" % (20 + i)) for i in range(5)]


def test_kombu_reads_a_stream(broker, uid):
    name = f"st-kombu-{uid}"
    with KombuConnection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5) as conn:
        queue = KombuQueue(name, durable=True, queue_arguments=STREAM, consumer_arguments={"x-stream-offset": "first"})
        producer = conn.Producer()
        for i in range(8):
            producer.publish({"n": i}, routing_key=name, declare=[queue], serializer="json")
        got = []

        def on_message(body, message):
            got.append((message.headers["x-stream-offset"], body["n"]))
            message.ack()

        ch = conn.channel()
        ch.basic_qos(0, 5, False)
        with KombuConsumer(ch, queues=[queue], callbacks=[on_message]):
            deadline = time.monotonic() + 5
            while len(got) < 8 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    assert got == [(i, i) for i in range(8)]
