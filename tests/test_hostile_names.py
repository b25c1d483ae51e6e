"""Names are any UTF-8 of up to 255 bytes, as in RabbitMQ (issue 16, "Names").

Queue, exchange and consumer-tag names like ``订单``, ``q!``, ``x=y`` or ``空 格``
used to be created and then answered with 541 INTERNAL_ERROR, because pamqp
checks names against the AMQP spec's ASCII-only pattern when it builds
Queue.DeclareOk.  Here the RabbitMQ tutorials run with Chinese names through
pika and aio-pika, the management API serves such names and refuses ones over
255 bytes or not UTF-8 with 400, and durable ones survive a restart.  The hand
encoders that replaced pamqp for these methods are checked byte-for-byte
against pamqp for the names pamqp accepts.

aio-pika builds its methods with pamqp, which refuses to *send* a non-ASCII
queue or exchange name (a client-side check), so its tests use Chinese routing
keys, consumer tags and the queues other clients named.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import commands as C
from pamqp import encode as pencode
from pamqp import frame as pframe

from amqp_raw import RawClient, frame, publish_frames
from protocol import fields, framing, methods, names
from test_tutorials import drain, params

ODD_NAMES = ["订单", "q!", "x=y", "空 格"]
MAX_NAME = "队" * 85  # 255 bytes of UTF-8
TOO_LONG = "队" * 85 + "x"  # 256 bytes
ASCII_NAMES = ["", "q", "amq.gen-abc_1:2", "a b", "x" * 255]  # what pamqp's name check accepts


# -- the encoders, byte-for-byte against pamqp -------------------------------------


def test_shortstr_is_pamqps_encoding_and_never_truncates():
    for s in ASCII_NAMES + ODD_NAMES + [MAX_NAME]:
        assert names.shortstr(s) == pencode.short_string(s)
    assert framing.shortstr is names.shortstr and fields.shortstr is names.shortstr
    for bad in (TOO_LONG, "x" * 256, "é" * 128, "\ud800"):
        with pytest.raises(ValueError):
            names.shortstr(bad)


def test_clip_cuts_at_a_character_boundary():
    text = "NOT_FOUND - no queue '" + MAX_NAME + "' in vhost '/'"
    clipped = names.clip(text)
    raw = clipped.encode()
    assert len(raw) <= 255 and text.startswith(clipped) and len(raw) > 250
    assert names.clip("short") == "short"
    assert names.clip("é" * 200).encode() == ("é" * 127).encode()  # 254 bytes, not a split 255th


@pytest.mark.parametrize("channel", [0, 1, 65535])
def test_name_carrying_methods_match_pamqp(channel):
    for name in ASCII_NAMES:
        for counts in [(0, 0), (1, 2), (2**32 - 1, 7)]:
            assert methods.queue_declare_ok(channel, name, *counts) == pframe.marshal(
                C.Queue.DeclareOk(queue=name, message_count=counts[0], consumer_count=counts[1]), channel
            )
    for tag in ASCII_NAMES + ["消费者-标签", "amq.ctag-Zx_9"]:  # pamqp does not check consumer tags
        assert methods.basic_consume_ok(channel, tag) == pframe.marshal(C.Basic.ConsumeOk(consumer_tag=tag), channel)
        assert methods.basic_cancel_ok(channel, tag) == pframe.marshal(C.Basic.CancelOk(consumer_tag=tag), channel)
        assert methods.basic_cancel(channel, tag) == pframe.marshal(
            C.Basic.Cancel(consumer_tag=tag, nowait=True), channel
        )
    for code, text, cls, meth in [(404, "NOT_FOUND - no queue 'q' in vhost '/'", 50, 10), (320, "", 0, 0),
                                  (406, "PRECONDITION_FAILED - 队列 '订单'", 60, 40), (541, "x" * 255, 0, 0)]:
        assert methods.channel_close(channel, code, text, cls, meth) == pframe.marshal(
            C.Channel.Close(reply_code=code, reply_text=text, class_id=cls, method_id=meth), channel
        )
        assert methods.connection_close(code, text, cls, meth) == pframe.marshal(
            C.Connection.Close(reply_code=code, reply_text=text, class_id=cls, method_id=meth), 0
        )


def test_names_pamqp_refuses_are_encoded():
    for name in ODD_NAMES + [MAX_NAME]:
        with pytest.raises(ValueError):
            C.Queue.DeclareOk(queue=name)  # what made the broker answer 541
        f = methods.queue_declare_ok(1, name, 3, 4)
        assert f[11:-9] == names.shortstr(name) and f[-9:] == struct.pack(">II", 3, 4) + b"\xce"
    long_text = "NOT_FOUND - no queue '" + MAX_NAME + "' in vhost '/'"
    f = methods.channel_close(1, 404, long_text, 50, 10)
    assert f[13] <= 255 and long_text.encode().startswith(f[14 : 14 + f[13]])


def test_table_key_that_is_not_utf8_keeps_its_bytes():
    raw = b"\xff\xfe" * 100  # 200 bytes, not UTF-8: decoding with "replace" would make it 600
    entry = bytes((len(raw),)) + raw + b"t\x01"
    table = struct.pack(">I", len(entry)) + entry
    assert fields.encode_table_entries(fields.table_entries(table)) == table


# -- helpers -----------------------------------------------------------------------


@pytest.fixture
def connect(broker):
    made: list[pika.BlockingConnection] = []

    def _connect(b=None) -> pika.BlockingConnection:
        c = pika.BlockingConnection(params(b or broker))
        made.append(c)
        return c

    yield _connect
    for c in made:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


def get_bodies(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


# -- the RabbitMQ tutorials with Chinese names, through pika ------------------------


def test_hello_world_with_chinese_queue(connect, uid):
    conn = connect()
    ch = conn.channel()
    name = f"你好-{uid}"
    assert ch.queue_declare(name, auto_delete=True).method.queue == name
    ch.basic_publish("", name, "你好，世界！".encode())
    got = []
    tag = ch.basic_consume(name, lambda c, m, p, b: got.append((m, b)), auto_ack=True, consumer_tag=f"接收者-{uid}")
    drain(conn, lambda: got)
    method, body = got[0]
    assert body.decode() == "你好，世界！"
    assert method.consumer_tag == tag == f"接收者-{uid}" and method.routing_key == name and method.exchange == ""
    ch.basic_cancel(tag)
    ch.queue_delete(name)


def test_work_queue_with_chinese_names(connect, uid):
    conn = connect()
    ch = conn.channel()
    name = f"任务队列-{uid}"
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    tasks = [f"任务 {i}{'.' * (i % 3)}" for i in range(6)]
    for t in tasks:
        ch.basic_publish("", name, t.encode(), pika.BasicProperties(delivery_mode=2))
    workers = [conn.channel(), conn.channel()]
    done: dict[str, list[str]] = {"工人一": [], "工人二": []}
    for w, tag in zip(workers, done):
        w.basic_qos(prefetch_count=1)

        def work(c, m, p, b, tag=tag):
            assert m.consumer_tag == tag
            done[tag].append(b.decode())
            c.basic_ack(m.delivery_tag)

        assert w.basic_consume(name, work, consumer_tag=tag) == tag
    drain(conn, lambda: sum(map(len, done.values())) == len(tasks))
    assert sorted(done["工人一"] + done["工人二"]) == sorted(tasks) and all(done.values())
    ch.queue_delete(name)


def test_publish_subscribe_with_chinese_fanout_exchange(connect, uid):
    conn = connect()
    ch = conn.channel()
    ex = f"日志-{uid}"
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    queues = [ch.queue_declare(f"{who}-{uid}", exclusive=True).method.queue for who in ("订阅者一", "订阅者二")]
    assert queues == [f"订阅者一-{uid}", f"订阅者二-{uid}"]
    for q in queues:
        ch.queue_bind(q, ex)
    ch.basic_publish(ex, "", "信息: 你好".encode())
    for q in queues:
        method, _p, body = ch.basic_get(q, auto_ack=True)
        assert body.decode() == "信息: 你好" and method.exchange == ex


def test_routing_with_chinese_direct_exchange_and_keys(connect, uid):
    conn = connect()
    ch = conn.channel()
    ex = f"直接日志-{uid}"
    ch.exchange_declare(ex, "direct", auto_delete=True)
    errs = f"错误队列-{uid}"
    everything = f"全部队列-{uid}"
    for q in (errs, everything):
        ch.queue_declare(q, exclusive=True)
    ch.queue_bind(errs, ex, "错误")
    for sev in ("信息", "警告", "错误"):
        ch.queue_bind(everything, ex, sev)
    for sev in ("信息", "警告", "错误", "调试"):
        ch.basic_publish(ex, sev, f"{sev}: 消息".encode())
    assert get_bodies(ch, errs) == ["错误: 消息".encode()]
    assert get_bodies(ch, everything) == [f"{s}: 消息".encode() for s in ("信息", "警告", "错误")]


def test_topics_with_chinese_exchange_and_keys(connect, uid):
    conn = connect()
    ch = conn.channel()
    ex = f"主题日志-{uid}"
    ch.exchange_declare(ex, "topic", auto_delete=True)
    patterns = {"*.橙色.*": f"橙色-{uid}", "*.*.兔子": f"兔子-{uid}", "懒惰.#": f"懒惰-{uid}"}
    for p, q in patterns.items():
        assert ch.queue_declare(q, exclusive=True).method.queue == q
        ch.queue_bind(q, ex, p)
    keys = ["快速.橙色.兔子", "懒惰.橙色.大象", "快速.橙色.狐狸", "懒惰.棕色.狐狸", "懒惰.粉色.兔子", "快速.棕色.狐狸"]
    for k in keys:
        ch.basic_publish(ex, k, k.encode())
    got = {p: [b.decode() for b in get_bodies(ch, q)] for p, q in patterns.items()}
    assert got == {
        "*.橙色.*": ["快速.橙色.兔子", "懒惰.橙色.大象", "快速.橙色.狐狸"],
        "*.*.兔子": ["快速.橙色.兔子", "懒惰.粉色.兔子"],
        "懒惰.#": ["懒惰.橙色.大象", "懒惰.棕色.狐狸", "懒惰.粉色.兔子"],
    }


@pytest.mark.parametrize("name", ODD_NAMES + [MAX_NAME], ids=["订单", "q!", "x=y", "空 格", "255-bytes"])
def test_odd_names_for_queues_and_exchanges(connect, uid, name):
    conn = connect()
    ch = conn.channel()
    qname = name if len(name.encode()) == 255 else f"{name}-{uid}"
    xname = qname[:-1] + "交" if len(name.encode()) == 255 else f"{name}-x-{uid}"
    assert len(xname.encode()) <= 255
    r = ch.queue_declare(qname, auto_delete=True)
    assert r.method.queue == qname
    assert ch.queue_declare(qname, passive=True).method.queue == qname
    ch.exchange_declare(xname, "direct", auto_delete=True)
    ch.queue_bind(qname, xname, qname)
    ch.basic_publish(xname, qname, b"m")
    method, _p, body = ch.basic_get(qname, auto_ack=True)
    assert body == b"m" and method.exchange == xname and method.routing_key == qname
    ch.exchange_delete(xname)
    ch.queue_delete(qname)
    assert conn.is_open


def test_error_text_quoting_a_255_byte_name_is_clipped_not_fatal(connect):
    conn = connect()
    ch = conn.channel()
    missing = "无" * 85
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(missing, passive=True)
    assert e.value.reply_code == 404
    text = e.value.reply_text
    assert text.startswith("NOT_FOUND - no queue '无无") and len(text.encode()) <= 255
    assert conn.is_open and conn.channel().queue_declare("", exclusive=True)


def test_consumer_cancel_notification_carries_a_chinese_tag(connect, uid):
    conn = connect()
    ch = conn.channel()
    name = f"被删除-{uid}"
    ch.queue_declare(name)
    cancels = []
    ch.add_on_cancel_callback(lambda f: cancels.append(f.method.consumer_tag))
    tag = ch.basic_consume(name, lambda *a: None, consumer_tag=f"消费者-{uid}")
    connect().channel().queue_delete(name)
    drain(conn, lambda: cancels)
    assert cancels == [tag]


# -- consumer tags byte-exact over a raw socket -------------------------------------


def _ss(s: str) -> bytes:
    raw = s.encode()
    return bytes((len(raw),)) + raw


def _method(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def test_consumer_tag_comes_back_byte_exact(broker, uid):
    """Built by hand: pamqp's client side refuses to send a Chinese queue name."""
    name, tag = f"订单-{uid}", "消费者-标签-" + uid
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        # Queue.Declare(ticket, queue, bits (none), arguments {})
        c.send(_method(1, 50, 10, b"\x00\x00" + _ss(name) + b"\x00" + b"\x00\x00\x00\x00"))
        assert c.expect(C.Queue.DeclareOk).queue == name
        c.send(publish_frames(1, "", name, b"hello"))
        # Basic.Consume(ticket, queue, consumer_tag, bits: no_ack, arguments {})
        c.send(_method(1, 60, 20, b"\x00\x00" + _ss(name) + _ss(tag) + b"\x02" + b"\x00\x00\x00\x00"))
        assert c.expect(C.Basic.ConsumeOk).consumer_tag == tag
        d = c.expect(C.Basic.Deliver)
        assert (d.consumer_tag, d.routing_key) == (tag, name)
        c.send(_method(1, 60, 30, _ss(tag) + b"\x00"))  # Basic.Cancel
        while True:
            f = c.read_frame()
            assert f is not None
            if isinstance(f[1], C.Basic.CancelOk):
                assert f[1].consumer_tag == tag
                break
        # a second consumer, then the queue is deleted: the server's Basic.Cancel names it
        c.send(_method(1, 60, 20, b"\x00\x00" + _ss(name) + _ss(tag + "2") + b"\x02" + b"\x00\x00\x00\x00"))
        c.expect(C.Basic.ConsumeOk)
        c.send(_method(1, 50, 40, b"\x00\x00" + _ss(name) + b"\x00"))  # Queue.Delete
        assert c.expect(C.Queue.DeleteOk)  # first, as RabbitMQ
        cancel = c.expect(C.Basic.Cancel)
        assert cancel.consumer_tag == tag + "2"


def test_name_that_is_not_utf8_is_a_frame_error_naming_the_field(connect, broker):
    other = connect()
    och = other.channel()
    och.queue_declare("", exclusive=True)
    with RawClient(broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(_method(1, 50, 10, b"\x00\x00" + b"\x03q\xff\xfe" + b"\x08" + b"\x00\x00\x00\x00"))
        close = c.read_until_close()
        assert isinstance(close, C.Connection.Close)
        assert close.reply_code == 501
        assert close.reply_text == "FRAME_ERROR - cannot decode Queue.Declare frame: 'queue' is not valid UTF-8"
    q = och.queue_declare("", exclusive=True).method.queue  # everyone else carries on
    och.basic_publish("", q, b"still here")
    assert och.basic_get(q, auto_ack=True)[2] == b"still here"


# -- aio-pika -----------------------------------------------------------------------


async def test_aio_pika_chinese_routing_keys_and_consumer_tags(broker, uid):
    """aio-pika publishes to and consumes with Chinese names; the queue itself is
    named by pika (aio-pika's pamqp will not send a non-ASCII queue name)."""
    orders = f"订单-{uid}"
    with pika.BlockingConnection(params(broker)) as pc:
        assert pc.channel().queue_declare(orders).method.queue == orders

    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as conn:
            ch = await conn.channel()
            await ch.default_exchange.publish(aio_pika.Message("新订单".encode()), routing_key=orders)
            topic = await ch.get_exchange("amq.topic")
            q = await ch.declare_queue(exclusive=True)
            await q.bind(topic, "订单.*.已付款")
            got: asyncio.Queue = asyncio.Queue()
            tag = await q.consume(got.put, no_ack=True, consumer_tag=f"支付-{uid}")
            assert tag == f"支付-{uid}"
            for k in ("订单.北京.已付款", "订单.上海.已取消", "订单.上海.已付款"):
                await topic.publish(aio_pika.Message(k.encode()), routing_key=k)
            seen = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
            assert [m.body.decode() for m in seen] == ["订单.北京.已付款", "订单.上海.已付款"]
            assert {m.consumer_tag for m in seen} == {tag} and seen[0].routing_key == "订单.北京.已付款"
            await q.cancel(tag)

    await asyncio.wait_for(body(), 15)
    with pika.BlockingConnection(params(broker)) as pc:
        ch = pc.channel()
        method, _p, data = ch.basic_get(orders, auto_ack=True)
        assert data.decode() == "新订单" and method.routing_key == orders
        ch.queue_delete(orders)


# -- the management API -------------------------------------------------------------

MGMT_LINE = re.compile(r"management API listening on http://([^:\s]+):(\d+)")


def mgmt(b) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = MGMT_LINE.findall(b.log_text())
        if found:
            return "http://{}:{}".format(*found[-1])
        time.sleep(0.05)
    raise AssertionError("no management API line in the broker log")


def http(base: str, method: str, path: str, body=None) -> tuple[int, object]:
    """``path`` is sent as given (already percent-encoded)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
               "Content-Type": "application/json"}
    r = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=15) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def pq(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def test_management_api_serves_chinese_names(broker, connect, uid):
    base = mgmt(broker)
    ch = connect().channel()
    name = f"订单 队列-{uid}"
    ch.queue_declare(name, auto_delete=False)
    ch.exchange_declare(f"订单交换-{uid}", "topic", auto_delete=True)
    ch.queue_bind(name, f"订单交换-{uid}", "订单.#")
    ch.basic_publish("", name, b"x")
    status, q = http(base, "GET", f"/api/queues/%2F/{pq(name)}")
    assert status == 200 and q["name"] == name
    status, listed = http(base, "GET", "/api/queues/%2F")
    assert name in [i["name"] for i in listed]
    status, x = http(base, "GET", f"/api/exchanges/%2F/{pq(f'订单交换-{uid}')}")
    assert status == 200 and x["name"] == f"订单交换-{uid}"
    status, bs = http(base, "GET", f"/api/queues/%2F/{pq(name)}/bindings")
    assert "订单.#" in [b["routing_key"] for b in bs]
    longest = "管" * 85  # 255 bytes
    assert http(base, "PUT", f"/api/queues/%2F/{pq(longest)}", {"durable": False})[0] in (201, 204)
    assert http(base, "GET", f"/api/queues/%2F/{pq(longest)}")[1]["name"] == longest
    assert http(base, "DELETE", f"/api/queues/%2F/{pq(longest)}")[0] == 204
    assert http(base, "DELETE", f"/api/queues/%2F/{pq(name)}")[0] == 204


def _refused(resp, *words: str) -> None:
    status, body = resp
    assert status == 400, resp
    assert body["error"] == "bad_request", body
    for w in words:
        assert w in body["reason"], (w, body)


def test_management_api_refuses_names_over_255_bytes_or_not_utf8(broker, uid):
    base = mgmt(broker)
    long_q = pq(TOO_LONG)
    _refused(http(base, "PUT", f"/api/queues/%2F/{long_q}", {"durable": False}), "queue name", "256 bytes", "255")
    _refused(http(base, "PUT", f"/api/exchanges/%2F/{long_q}", {"type": "direct"}), "exchange name", "255")
    _refused(http(base, "PUT", f"/api/vhosts/{long_q}", {}), "vhost name", "255")
    _refused(http(base, "PUT", f"/api/users/{long_q}", {"password": "p", "tags": ""}), "user name", "255")
    _refused(http(base, "PUT", f"/api/permissions/%2F/{long_q}", {"configure": ".*", "write": ".*", "read": ".*"}),
             "user name", "255")
    _refused(http(base, "PUT", "/api/queues/%2F/q%FF%FE", {"durable": False}), "queue name", "not valid UTF-8")
    _refused(http(base, "GET", "/api/queues/%FF"), "vhost name", "not valid UTF-8")
    # names in bodies: a binding's and a published message's routing key, definitions
    ex, q = f"绑定-{uid}", f"目的地-{uid}"
    assert http(base, "PUT", f"/api/exchanges/%2F/{pq(ex)}", {"type": "direct", "auto_delete": True})[0] == 201
    assert http(base, "PUT", f"/api/queues/%2F/{pq(q)}", {"durable": False})[0] == 201
    _refused(http(base, "POST", f"/api/bindings/%2F/e/{pq(ex)}/q/{pq(q)}", {"routing_key": TOO_LONG}),
             "'routing_key'", "255")
    _refused(http(base, "POST", f"/api/exchanges/%2F/{pq(ex)}/publish",
                  {"routing_key": TOO_LONG, "payload": "x", "properties": {}}), "'routing_key'", "255")
    _refused(http(base, "POST", f"/api/exchanges/%2F/{pq(ex)}/publish",
                  {"routing_key": "\ud800", "payload": "x", "properties": {}}), "'routing_key'", "not valid UTF-8")
    _refused(http(base, "PUT", f"/api/queues/%2F/{pq(q + '-dl')}",
                  {"durable": False, "arguments": {"x-dead-letter-exchange": TOO_LONG}}),
             "x-dead-letter-exchange", "255")
    defs = {"queues": [{"name": TOO_LONG, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
            "vhosts": [{"name": TOO_LONG}], "users": [{"name": TOO_LONG, "password": "p", "tags": ""}]}
    resp = http(base, "POST", "/api/definitions", defs)
    _refused(resp, "queue name", "the name is 256 bytes long")
    refused = {(e["section"], e["reason"].split(" is ")[0]) for e in resp[1]["not_applied"]}
    assert {("vhosts", "the name"), ("users", "the name")} <= refused, resp
    status, listed = http(base, "GET", "/api/queues")
    assert TOO_LONG not in [i["name"] for i in listed]
    assert TOO_LONG not in [v["name"] for v in http(base, "GET", "/api/vhosts")[1]]
    assert TOO_LONG not in [u["name"] for u in http(base, "GET", "/api/users")[1]]
    assert http(base, "DELETE", f"/api/queues/%2F/{pq(q)}")[0] == 204


# -- durability ---------------------------------------------------------------------


def test_durable_chinese_names_survive_a_restart(fresh_broker, connect):
    conn = connect(fresh_broker)
    ch = conn.channel()
    ch.confirm_delivery()
    ex, q, rk = "订单交换", "订单队列", "订单.新建"
    ch.exchange_declare(ex, "topic", durable=True)
    ch.queue_declare(q, durable=True)
    ch.queue_declare(MAX_NAME, durable=True)
    ch.queue_bind(q, ex, "订单.#")
    for i in range(20):
        ch.basic_publish(ex, rk, f"订单 {i}".encode(), pika.BasicProperties(delivery_mode=2))
        ch.basic_publish("", MAX_NAME, f"长 {i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    fresh_broker.stop()
    fresh_broker.start()
    conn = connect(fresh_broker)
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 20
    assert ch.queue_declare(MAX_NAME, passive=True).method.message_count == 20
    assert get_bodies(ch, q) == [f"订单 {i}".encode() for i in range(20)]
    assert get_bodies(ch, MAX_NAME) == [f"长 {i}".encode() for i in range(20)]
    ch.basic_publish(ex, "订单.已付款", b"after restart")  # the exchange and its binding came back too
    assert get_bodies(ch, q) == [b"after restart"]
