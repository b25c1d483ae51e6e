"""Pure unit tests: hand-rolled codecs against pamqp, framing, routing, auth."""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import struct

import pytest
from pamqp import commands as C
from pamqp import encode as pencode
from pamqp import frame as pframe
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from broker.auth import AuthError, check_password, hash_password, parse_response
from broker.exchange import Binding, TopicExchange, headers_match
from protocol import framing
from protocol.errors import AMQPError, ConnectionError, FrameError

NAMES = ["", "q", "amq.direct", "ünïcödé-ключ", "x" * 255]  # routing keys, consumer tags
EXCHANGES = ["", "amq.direct", "ex-1_a:b.c", "e" * 127]  # what pamqp accepts as exchange names
TAGS = [0, 1, 255, 2**31, 2**63 - 1]  # pamqp packs longlong as signed


def ss(s: str) -> bytes:
    return framing.shortstr(s)


# -- outgoing frames byte-for-byte --------------------------------------------


@pytest.mark.parametrize("channel", [1, 7, 65535])
@pytest.mark.parametrize("redelivered", [False, True])
def test_deliver_frame_matches_pamqp(channel, redelivered):
    for ctag, tag, ex, rk in itertools.product(["amq.ctag-abc", "", "é" * 50], TAGS, EXCHANGES, NAMES):
        ours = framing.deliver_frame(channel, ss(ctag), tag, redelivered, ss(ex), ss(rk))
        ref = pframe.marshal(
            C.Basic.Deliver(consumer_tag=ctag, delivery_tag=tag, redelivered=redelivered, exchange=ex, routing_key=rk),
            channel,
        )
        assert ours == ref, (ctag, tag, ex, rk)


@pytest.mark.parametrize("redelivered", [False, True])
def test_get_ok_frame_matches_pamqp(redelivered):
    for tag, ex, rk, count in itertools.product(TAGS, EXCHANGES, NAMES, [0, 1, 2**32 - 1]):
        ours = framing.get_ok_frame(3, tag, redelivered, ss(ex), ss(rk), count)
        ref = pframe.marshal(
            C.Basic.GetOk(delivery_tag=tag, redelivered=redelivered, exchange=ex, routing_key=rk, message_count=count),
            3,
        )
        assert ours == ref


def test_return_frame_matches_pamqp():
    for code, text, ex, rk in itertools.product([312, 313], ["NO_ROUTE", "NO_CONSUMERS", "ü" * 100], EXCHANGES, NAMES):
        ours = framing.return_frame(9, code, text, ss(ex), ss(rk))
        ref = pframe.marshal(C.Basic.Return(reply_code=code, reply_text=text, exchange=ex, routing_key=rk), 9)
        assert ours == ref


@pytest.mark.parametrize("multiple", [False, True])
def test_confirm_ack_frame_matches_pamqp(multiple):
    for tag in TAGS:
        ours = framing.confirm_frame(5, tag, multiple)
        assert ours == pframe.marshal(C.Basic.Ack(delivery_tag=tag, multiple=multiple), 5)


@pytest.mark.parametrize("multiple", [False, True])
@pytest.mark.parametrize("requeue", [False, True])
def test_confirm_nack_frame_matches_pamqp(multiple, requeue):
    for tag in TAGS:
        ours = framing.confirm_frame(5, tag, multiple, nack=True, requeue=requeue)
        assert ours == pframe.marshal(C.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue), 5)


def test_unsigned_64_bit_delivery_tags():
    tag = 2**64 - 1
    d = framing.deliver_frame(1, ss("c"), tag, False, ss("e"), ss("r"))
    assert struct.unpack_from(">Q", d, 7 + 4 + 2)[0] == tag
    g = framing.get_ok_frame(1, tag, True, ss("e"), ss("r"), 0)
    assert struct.unpack_from(">QB", g, 7 + 4) == (tag, 1)
    a = framing.confirm_frame(1, tag, True)
    assert framing.parse_ack(a[7:-1]) == (tag, True)


def test_shortstr_rejects_long_names():
    with pytest.raises(ValueError):
        framing.shortstr("x" * 256)
    with pytest.raises(ValueError):
        framing.shortstr("é" * 128)  # 256 bytes in UTF-8


PROPS = [
    C.Basic.Properties(),
    C.Basic.Properties(delivery_mode=2),
    C.Basic.Properties(content_type="text/plain", content_encoding="gzip", delivery_mode=1, priority=3),
    C.Basic.Properties(
        content_type="application/json",
        headers={"a": 1, "b": "two", "c": [1, 2], "d": {"e": True}},
        delivery_mode=2,
        correlation_id="c1",
        reply_to="r",
        expiration="1000",
        message_id="m",
        timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        message_type="t",
        user_id="guest",
        app_id="app",
    ),
    C.Basic.Properties(headers={"x": "y"}),
]


@pytest.mark.parametrize("size", [0, 1, 4087, 4088, 4089, 3 * 4088, 3 * 4088 + 7])
def test_content_frames_split_like_pamqp(size):
    max_body = 4088
    body = bytes(i % 251 for i in range(size))
    props = PROPS[3]
    header = framing.content_header_payload(size, props)
    ref_header = pframe.marshal(ContentHeader(0, size, props), 2)
    parts = framing.content_frames(2, header, body, max_body)
    out = b"".join(bytes(p) for p in parts)
    ref = ref_header
    for off in range(0, size, max_body):
        ref += pframe.marshal(ContentBody(body[off : off + max_body]), 2)
    assert out == ref
    # and every frame reads back through FrameReader within frame_max
    frames = framing.FrameReader(max_body + 8).feed(out)
    assert frames[0] == (2, 2, ref_header[7:-1])
    assert b"".join(p for t, _c, p in frames[1:]) == body
    assert all(t == 3 and 0 < len(p) <= max_body for t, _c, p in frames[1:])


def test_content_header_payload_matches_pamqp():
    for p in PROPS:
        for size in (0, 5, 2**40):
            assert framing.content_header_payload(size, p) == pframe.marshal(ContentHeader(0, size, p), 1)[7:-1]


# -- incoming hot-path parsers ----------------------------------------------------


def test_parse_publish_matches_pamqp():
    for ex, rk, mandatory, immediate in itertools.product(EXCHANGES, NAMES, [False, True], [False, True]):
        payload = pframe.marshal(
            C.Basic.Publish(exchange=ex, routing_key=rk, mandatory=mandatory, immediate=immediate), 1
        )[7:-1]
        e, r, bits = framing.parse_publish(payload)
        assert e == ss(ex) and r == ss(rk)
        assert bits == (1 if mandatory else 0) | (2 if immediate else 0)


def test_parse_publish_truncated():
    payload = pframe.marshal(C.Basic.Publish(exchange="ex", routing_key="rk"), 1)[7:-1]
    for n in range(len(payload)):
        with pytest.raises(FrameError):
            framing.parse_publish(payload[:n])


def test_parse_ack_matches_pamqp():
    for tag, multiple in itertools.product(TAGS, [False, True]):
        payload = pframe.marshal(C.Basic.Ack(delivery_tag=tag, multiple=multiple), 1)[7:-1]
        assert framing.method_index(payload) == framing.IDX_BASIC_ACK
        assert framing.parse_ack(payload) == (tag, multiple)
    for n in range(13):
        with pytest.raises(FrameError):
            framing.parse_ack(payload[:n])


def test_decode_method_round_trip():
    cmds = [
        C.Queue.Declare(queue="q", durable=True, arguments={"x-max-length": 10}),
        C.Exchange.Declare(exchange="x", exchange_type="topic", auto_delete=True),
        C.Basic.Consume(queue="q", consumer_tag="t", no_ack=True, exclusive=True),
        C.Basic.Qos(prefetch_count=10, global_=True),
        C.Queue.Bind(queue="q", exchange="x", routing_key="a.#", arguments={"k": "v"}),
        C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
    ]
    for m in cmds:
        payload = pframe.marshal(m, 1)[7:-1]
        d = framing.decode_method(payload)
        assert type(d) is type(m)
        assert pframe.marshal(d, 1)[7:-1] == payload


def test_decode_method_errors():
    with pytest.raises(FrameError):
        framing.decode_method(b"\x00\x32")
    with pytest.raises(ConnectionError) as ei:
        framing.decode_method(struct.pack(">HH", 99, 99))
    assert ei.value.code == 503
    payload = pframe.marshal(C.Queue.Declare(queue="abc", arguments={"a": 1}), 1)[7:-1]
    for n in range(4, len(payload) - 1):
        try:
            framing.decode_method(payload[:n])
        except AMQPError:
            pass


def test_header_accessors_match_pamqp():
    for p in PROPS:
        header = framing.content_header_payload(42, p)
        assert framing.header_body_size(header) == (60, 42)
        assert framing.delivery_mode(header) == (p.delivery_mode or 0)
        d = framing.decode_properties(header)
        assert d.delivery_mode == p.delivery_mode and d.headers == p.headers and d.user_id == p.user_id
    with pytest.raises(FrameError):
        framing.header_body_size(b"\x00" * 13)


# -- FrameReader ---------------------------------------------------------------


def _stream() -> tuple[bytes, list]:
    frames = [
        pframe.marshal(C.Basic.Publish(exchange="amq.topic", routing_key="a.b"), 1),
        pframe.marshal(ContentHeader(0, 11, PROPS[3]), 1),
        pframe.marshal(ContentBody(b"hello world"), 1),
        framing.HEARTBEAT_FRAME,
        b"\x03\x00\x02\x00\x00\x00\x00\xce",  # an empty body frame is legal
        pframe.marshal(C.Basic.Ack(delivery_tag=7, multiple=True), 65535),
    ]
    expect = [(f[0], struct.unpack(">H", f[1:3])[0], f[7:-1]) for f in frames]
    return b"".join(frames), expect


def test_frame_reader_whole_stream():
    data, expect = _stream()
    assert framing.FrameReader().feed(data) == expect


def test_frame_reader_split_at_every_boundary():
    data, expect = _stream()
    for i in range(len(data) + 1):
        r = framing.FrameReader()
        got = r.feed(data[:i]) + r.feed(data[i:])
        assert got == expect, i
        assert r.buffered == 0


def test_frame_reader_split_in_three_everywhere():
    data, expect = _stream()
    n = len(data)
    for i in range(0, n + 1, 3):
        for j in range(i, n + 1, 5):
            r = framing.FrameReader()
            got = r.feed(data[:i]) + r.feed(data[i:j]) + r.feed(data[j:])
            assert got == expect, (i, j)


def test_frame_reader_one_byte_at_a_time():
    data, expect = _stream()
    r = framing.FrameReader()
    got = []
    for i in range(len(data)):
        got += r.feed(data[i : i + 1])
    assert got == expect


def test_frame_reader_bad_end_byte():
    frame = bytearray(pframe.marshal(C.Basic.Qos(prefetch_count=1), 1))
    frame[-1] = 0
    with pytest.raises(FrameError) as ei:
        framing.FrameReader().feed(bytes(frame))
    assert ei.value.code == 501


def test_frame_reader_frame_max():
    r = framing.FrameReader(4096)
    ok = b"\x03\x00\x01" + struct.pack(">I", 4088) + b"x" * 4088 + b"\xce"
    assert r.feed(ok) == [(3, 1, b"x" * 4088)]
    too_big = b"\x03\x00\x01" + struct.pack(">I", 5000)
    with pytest.raises(FrameError) as ei:
        framing.FrameReader(4096).feed(too_big)  # refused from the header alone
    assert ei.value.code == 501
    r = framing.FrameReader(131072)
    r.set_frame_max(4096)
    with pytest.raises(FrameError):
        r.feed(too_big)


def test_frame_reader_huge_announced_size_is_refused_even_when_split():
    r = framing.FrameReader(131072)
    hdr = b"\x01\x00\x01\xff\xff\xff\xff"
    with pytest.raises(FrameError):
        for i in range(len(hdr)):
            r.feed(hdr[i : i + 1])


# -- topic routing -------------------------------------------------------------

TOPIC_CASES = [
    # binding key, routing key, matches?
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.b.c.d", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.c", True),
    ("a.#.c", "a.b.d.c", True),
    ("a.#.c", "a.b.d", False),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "a.b.c", True),
    ("#.*.#", "a", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("a.", "a.", True),
    ("a.", "a", False),
    ("", "", True),
    ("", "a", False),
    ("a.b", "a.bb", False),
    ("a.*", "a.", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.c", False),
    ("*.b.*", "a.b.c", True),
    ("*.b.*", "b.c", False),
]


def _topic(*keys) -> TopicExchange:
    x = TopicExchange(None, "t")
    for i, k in enumerate(keys):
        x.add_binding(Binding(x, f"dest-{i}", k, {}))
    return x


@pytest.mark.parametrize("bkey, rkey, hit", TOPIC_CASES)
def test_topic_match(bkey, rkey, hit):
    x = _topic(bkey)
    assert (set(x.match(rkey, None)) == {"dest-0"}) is hit
    assert (set(x.match(rkey, None)) == {"dest-0"}) is hit  # second time from the cache


def test_topic_all_bindings_together():
    x = TopicExchange(None, "t")
    for i, (bkey, _r, _h) in enumerate(TOPIC_CASES):
        x.add_binding(Binding(x, i, bkey, {}))
    for rkey in {r for _b, r, _h in TOPIC_CASES}:
        want = {i for i, (b, r, h) in enumerate(TOPIC_CASES) if _topic(b).match(rkey, None)}
        assert set(x.match(rkey, None)) == want


def test_topic_unbind_invalidates_cache_and_dedups():
    x = TopicExchange(None, "t")
    b1 = Binding(x, "q", "a.*", {})
    b2 = Binding(x, "q", "#", {})
    x.add_binding(b1)
    x.add_binding(b2)
    assert list(x.match("a.b", None)) == ["q"]  # one destination, however many bindings
    x.remove_binding(b2)
    assert list(x.match("a.b", None)) == ["q"]
    assert list(x.match("z", None)) == []
    x.remove_binding(b1)
    assert list(x.match("a.b", None)) == []
    assert x.root.children == {}  # pruned


# -- headers matching ------------------------------------------------------------

HEADER_CASES = [
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": 2}, False),
    ({"a": 1}, {"a": 1}, True),  # all is the default
    ({"a": 1}, {}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"c": 2}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {}, False),
    ({"x-match": "all"}, {}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "all", "a": None}, {"a": "anything"}, True),  # void = presence
    ({"x-match": "all", "a": None}, {"b": 1}, False),
    ({"x-match": "any", "x-k": 1}, {"x-k": 1}, False),  # x- keys ignored
    ({"x-match": "all", "x-k": 1, "a": 1}, {"a": 1}, True),
    ({"x-match": "any-with-x", "x-k": 1}, {"x-k": 1}, True),
    ({"x-match": "all-with-x", "x-k": 1, "a": 1}, {"a": 1}, False),
    ({"x-match": "all-with-x", "x-k": 1, "a": 1}, {"a": 1, "x-k": 1}, True),
    ({"x-match": b"any", "a": 1}, {"a": 1}, True),
    ({"x-match": "all", "a": "1"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": True}, False),  # Erlang: 1 == true is false
    ({"x-match": "all", "a": 1}, {"a": 1.0}, False),  # RabbitMQ compares type classes first: int is not float
    ({"x-match": "all", "a": {"n": [1, 2]}}, {"a": {"n": [1, 2]}}, True),
]


@pytest.mark.parametrize("args, headers, hit", HEADER_CASES)
def test_headers_match(args, headers, hit):
    assert headers_match(args, headers) is hit


# -- auth --------------------------------------------------------------------------


def test_hash_password_is_rabbitmq_sha256():
    salt = bytes.fromhex("908dc60a")
    h = hash_password("test12", salt)
    raw = base64.b64decode(h)
    assert raw[:4] == salt
    assert raw[4:] == hashlib.sha256(salt + b"test12").digest()
    assert len(raw) == 36


def test_hash_password_salts_randomly_and_checks():
    a, b = hash_password("secret"), hash_password("secret")
    assert a != b
    for h in (a, b):
        assert check_password("secret", h)
        assert not check_password("Secret", h)
        assert not check_password("", h)
    u = hash_password("pässwörd-密码")
    assert check_password("pässwörd-密码", u)
    assert not check_password("passwort", u)


def test_check_password_garbage_hash():
    for bad in ["", "!!!not base64!!!", "abc", base64.b64encode(b"\x00" * 68).decode()]:
        assert check_password("x", bad) is False


def test_parse_response_plain():
    assert parse_response("PLAIN", b"\x00guest\x00guest") == ("guest", "guest")
    assert parse_response("PLAIN", "\x00bøb\x00pä55".encode()) == ("bøb", "pä55")
    assert parse_response("PLAIN", b"\x00u\x00") == ("u", "")
    for bad in [b"", b"guest", b"guest\x00guest", b"\x00a\x00b\x00c"]:
        with pytest.raises(AuthError):
            parse_response("PLAIN", bad)


def _amqplain(table: dict) -> bytes:
    return pencode.field_table(table)[4:]  # the response is the table without its length


def test_parse_response_amqplain():
    assert parse_response("AMQPLAIN", _amqplain({"LOGIN": "guest", "PASSWORD": "guest"})) == ("guest", "guest")
    assert parse_response("AMQPLAIN", _amqplain({"PASSWORD": "p", "LOGIN": "ü"})) == ("ü", "p")
    for bad in [_amqplain({"LOGIN": "guest"}), _amqplain({"LOGIN": 1, "PASSWORD": "x"}), b"\x05LOGINS\x00", b"\xff"]:
        with pytest.raises(AuthError):
            parse_response("AMQPLAIN", bad)
    with pytest.raises(AuthError):
        parse_response("EXTERNAL", b"")
