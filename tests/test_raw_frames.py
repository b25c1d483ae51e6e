"""Bad input on a raw socket: every case gets the right Connection.Close.

Each test checks the reply code (and that the text names the problem), that
the broker then closes the socket, that the broker logged a line naming the
peer, and that another connection that was already open keeps working.
"""

from __future__ import annotations

import socket
import struct
import time

import pika
import pytest
from pamqp import commands as C

from amqp_raw import (
    PROTOCOL_HEADER,
    RawClient,
    content_body,
    content_header,
    frame,
    method,
    method_payload,
    publish_frames,
)


class Survivor:
    """A pika connection opened before the bad client; it must keep working."""

    def __init__(self, port: int) -> None:
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
        self.ch = self.conn.channel()
        self.q = self.ch.queue_declare("", exclusive=True).method.queue
        self.n = 0

    def check(self) -> None:
        assert self.conn.is_open and self.ch.is_open
        self.n += 1
        body = f"survivor-{self.n}".encode()
        self.ch.basic_publish("", self.q, body)
        _m, _p, got = self.ch.basic_get(self.q, auto_ack=True)
        assert got == body


@pytest.fixture
def survivor(fresh_broker):
    s = Survivor(fresh_broker.port)
    yield s
    if s.conn.is_open:
        s.conn.close()


def wait_log(b, *needles: str, timeout: float = 3.0) -> str:
    """A broker log line containing every needle (the log is written by another process)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in b.log_text().splitlines():
            if all(n in line for n in needles):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {needles!r}; log tail:\n{b.log_text()[-3000:]}")
        time.sleep(0.05)


def assert_no_traceback(b) -> None:
    text = b.log_text()
    assert "Traceback" not in text and "internal error" not in text, text[-4000:]


def expect_connection_close(b, survivor, c: RawClient, code: int, any_of=(), exact: str | None = None):
    """Connection.Close with ``code``; its text equals ``exact`` or names the
    problem with one of ``any_of``; then EOF, a log line, a working survivor."""
    close = c.read_until_close()
    assert isinstance(close, C.Connection.Close), f"expected Connection.Close, got {close!r} / {c.frames!r}"
    assert close.reply_code == code, (close.reply_code, close.reply_text)
    if exact is not None:
        assert close.reply_text == exact
    if any_of:
        assert any(w.lower() in close.reply_text.lower() for w in any_of), (any_of, close.reply_text)
    assert c.wait_eof(3.0), "the broker did not close the socket"
    wait_log(b, c.peer_name, close.reply_text)
    assert_no_traceback(b)
    survivor.check()
    return close


def opened(b, channel: int | None = 1) -> RawClient:
    c = RawClient(b.port)
    c.handshake()
    if channel is not None:
        c.open_channel(channel)
    return c


# -- protocol header -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x01\x01\x00\x0a",  # AMQP 1.0
        b"AMQP\x00\x00\x08\x00",  # AMQP 0-8
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
def test_wrong_protocol_header(fresh_broker, survivor, header):
    with RawClient(fresh_broker.port) as c:
        c.send(header)
        assert c.read_raw(8, timeout=3) == PROTOCOL_HEADER
        assert c.wait_eof(3.0)
        assert c.buf == b""
        wait_log(fresh_broker, c.peer_name, "protocol header")
    assert_no_traceback(fresh_broker)
    survivor.check()


# -- framing (501) ----------------------------------------------------------------


def test_bad_frame_end_byte(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(frame(1, 1, method_payload(C.Basic.Qos(prefetch_count=1)), end=b"\x00"))
        expect_connection_close(fresh_broker, survivor, c, 501, ["frame end", "frame_end"])


def test_frame_larger_than_frame_max(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        fmax = c.tune.frame_max
        c.send(method(1, C.Basic.Publish(exchange="", routing_key="q")))
        c.send(content_header(1, fmax + 100))
        # RabbitMQ tolerates 8 bytes too many (FRAME_SIZE_FUDGE); this is beyond that
        c.send(frame(3, 1, b"x" * (fmax + 100)))
        expect_connection_close(fresh_broker, survivor, c, 501, ["frame_max", "frame_too_large", "too large"])


def test_frame_off_by_eight_is_tolerated(fresh_broker, survivor):
    """RabbitMQ accepts a frame whose *payload* is frame_max bytes (clients that
    forget the 8 bytes of framing are common: rabbit_reader FRAME_SIZE_FUDGE)."""
    with opened(fresh_broker) as c:
        fmax = c.tune.frame_max
        c.call(1, C.Queue.Declare(queue="fudge", auto_delete=True), C.Queue.DeclareOk)
        c.send(method(1, C.Basic.Publish(exchange="", routing_key="fudge")))
        c.send(content_header(1, fmax))
        c.send(frame(3, 1, b"y" * fmax))
        ok = c.call(1, C.Queue.Declare(queue="fudge", passive=True), C.Queue.DeclareOk)
        assert ok.message_count == 1
    assert_no_traceback(fresh_broker)
    survivor.check()


def test_frame_larger_than_negotiated_frame_max(fresh_broker, survivor):
    with RawClient(fresh_broker.port) as c:
        c.handshake(frame_max=8192)
        c.open_channel(1)
        c.send(frame(1, 1, method_payload(C.Queue.Declare(queue="x" * 200, arguments={"k": "v" * 9000}))))
        expect_connection_close(fresh_broker, survivor, c, 501, ["frame_max", "frame_too_large", "too large"])


def test_unknown_frame_type(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(frame(5, 1, b"hello"))
        close = expect_connection_close(fresh_broker, survivor, c, 501, ["type 5", "frame type"])
        assert "5" in close.reply_text


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">HHH", 60, 40, 0),  # basic.publish with nothing after reserved-1
        struct.pack(">HHH", 60, 40, 0) + b"\x05ab",  # exchange name cut short
        struct.pack(">HHH", 50, 10, 0) + b"\x10abc",  # queue.declare, queue name cut short
        struct.pack(">HHH", 50, 10, 0) + b"\x01q" + b"\x00" + b"\x00\x00\x01\x00",  # arguments table cut short
        struct.pack(">HB", 60, 0),  # not even a method id
    ],
    ids=["publish-empty", "publish-short-name", "declare-short-name", "declare-short-table", "three-bytes"],
)
def test_garbage_method_payload(fresh_broker, survivor, payload):
    with opened(fresh_broker) as c:
        c.send(frame(1, 1, payload))
        close = c.read_until_close()
        assert isinstance(close, C.Connection.Close), c.frames
        assert close.reply_code in (501, 502), (close.reply_code, close.reply_text)
        assert c.wait_eof(3.0)
        wait_log(fresh_broker, c.peer_name, close.reply_text)
        assert_no_traceback(fresh_broker)
        survivor.check()


def _nested_table(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = b"\x01kF" + struct.pack(">I", len(inner)) + inner
    return struct.pack(">I", len(inner)) + inner


def test_deeply_nested_field_table_in_method(fresh_broker, survivor):
    """A 5000-level nested table fits in one frame; it must not crash the decoder.

    RabbitMQ decodes it (Erlang has no recursion limit); refusing it with a
    framing/syntax error is fine too.  An internal error (541) with a traceback
    is not.
    """
    with opened(fresh_broker) as c:
        head = method_payload(C.Queue.Declare(queue="deep", auto_delete=True, arguments={}))[:-4]
        c.send(frame(1, 1, head + _nested_table(5000)))
        c.send(method(1, C.Basic.Qos(prefetch_count=1)))
        f = c.read_frame(timeout=3)
        assert f is not None, "socket closed without a Connection.Close"
        if isinstance(f[1], C.Connection.Close):
            assert f[1].reply_code in (501, 502), (f[1].reply_code, f[1].reply_text)
        else:
            assert isinstance(f[1], C.Queue.DeclareOk), f
    assert_no_traceback(fresh_broker)
    survivor.check()


def test_deeply_nested_headers_routed_through_headers_exchange(fresh_broker, survivor):
    """Same, in the properties of a message the headers exchange must decode."""
    survivor.ch.queue_bind(survivor.q, "amq.headers", arguments={"x-match": "any", "a": 1})
    with opened(fresh_broker) as c:
        hdr = content_header(1, 1)[7:-1]  # class, weight, size, flags=0
        props = struct.pack(">H", 0x2000) + _nested_table(5000)
        c.send(method(1, C.Basic.Publish(exchange="amq.headers", routing_key="")))
        c.send(frame(2, 1, hdr[:12] + props))
        c.send(content_body(1, b"x"))
        c.send(method(1, C.Basic.Qos(prefetch_count=1)))
        f = c.read_frame(timeout=3)
        assert f is not None, "socket closed without a Connection.Close"
        if isinstance(f[1], C.Connection.Close):
            assert f[1].reply_code in (501, 502), (f[1].reply_code, f[1].reply_text)
        else:
            assert isinstance(f[1], C.Basic.QosOk), f
    assert_no_traceback(fresh_broker)
    survivor.check()


# -- channels (504) ---------------------------------------------------------------


def test_method_on_channel_never_opened(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(method(7, C.Basic.Qos(prefetch_count=1)))
        expect_connection_close(fresh_broker, survivor, c, 504, exact="CHANNEL_ERROR - expected 'channel.open'")


def test_channel_open_twice(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(method(1, C.Channel.Open()))
        expect_connection_close(fresh_broker, survivor, c, 504, exact="CHANNEL_ERROR - second 'channel.open' seen")


# -- content sequencing (505) ----------------------------------------------------

NON_METHOD = "UNEXPECTED_FRAME - expected method frame, got non method frame instead"


def test_content_header_without_publish(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(content_header(1, 3))
        expect_connection_close(fresh_broker, survivor, c, 505, exact=NON_METHOD)


def test_content_body_without_publish(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(content_body(1, b"abc"))
        expect_connection_close(fresh_broker, survivor, c, 505, exact=NON_METHOD)


@pytest.mark.parametrize("kind", ["header", "body"])
def test_content_frame_on_channel_never_opened(fresh_broker, survivor, kind):
    # RabbitMQ runs the frame through the channel's command assembler, which
    # wants a method frame first: 505, like on an open channel.
    with opened(fresh_broker) as c:
        c.send(content_header(9, 3) if kind == "header" else content_body(9, b"abc"))
        expect_connection_close(fresh_broker, survivor, c, 505, exact=NON_METHOD)


def test_method_between_publish_and_header(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(method(1, C.Basic.Publish(exchange="", routing_key="q")))
        c.send(method(1, C.Basic.Qos(prefetch_count=1)))
        expect_connection_close(
            fresh_broker, survivor, c, 505,
            exact="UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
        )


def test_method_between_header_and_body(fresh_broker, survivor):
    with opened(fresh_broker) as c:
        c.send(method(1, C.Basic.Publish(exchange="", routing_key="q")))
        c.send(content_header(1, 10))
        c.send(method(1, C.Basic.Qos(prefetch_count=1)))
        expect_connection_close(
            fresh_broker, survivor, c, 505,
            exact="UNEXPECTED_FRAME - expected content body, got non content body frame instead",
        )


# -- handshake ----------------------------------------------------------------


def test_tune_ok_frame_max_below_minimum(fresh_broker, survivor):
    with RawClient(fresh_broker.port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(C.Connection.Start)
        c.send_method(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest", locale="en_US"))
        c.expect(C.Connection.Tune)
        c.send_method(0, C.Connection.TuneOk(channel_max=0, frame_max=1024, heartbeat=0))
        c.send_method(0, C.Connection.Open(virtual_host="/"))
        expect_connection_close(fresh_broker, survivor, c, 530, exact="NOT_ALLOWED - frame_max=1024 < 8192 min size")


def test_missed_heartbeats_disconnect(fresh_broker, survivor):
    with RawClient(fresh_broker.port) as c:
        c.handshake(heartbeat=1)
        t0 = time.monotonic()
        assert c.wait_eof(6.0), "a silent client with heartbeat=1 was not disconnected"
        took = time.monotonic() - t0
        assert 1.0 <= took <= 3.5, took
        # the broker kept sending its own heartbeats meanwhile
        while c.read_frame(0.1) is not None:
            pass
        assert any(type(f).__name__ == "Heartbeat" for _ch, f in c.frames)
        wait_log(fresh_broker, c.peer_name, "heartbeat")
    assert_no_traceback(fresh_broker)
    survivor.check()


@pytest.mark.slow
def test_handshake_timeout(fresh_broker, survivor):
    with RawClient(fresh_broker.port, timeout=20) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(C.Connection.Start)
        t0 = time.monotonic()
        assert c.wait_eof(15.0), "a client that never finishes the handshake was not dropped"
        took = time.monotonic() - t0
        assert 8.0 <= took <= 12.0, took
        wait_log(fresh_broker, c.peer_name, "handshake timeout")
    assert_no_traceback(fresh_broker)
    survivor.check()


# -- what must keep working -------------------------------------------------------


def test_oversized_message_is_a_channel_error(fresh_broker, survivor):
    size = 128 * 1024 * 1024 + 1
    with opened(fresh_broker) as c:
        c.send(method(1, C.Basic.Publish(exchange="", routing_key="q")))
        c.send(content_header(1, size))
        close = c.read_until_close()
        assert isinstance(close, C.Channel.Close), c.frames
        assert close.reply_code == 406
        assert str(size) in close.reply_text and "larger than" in close.reply_text, close.reply_text
        assert close.reply_text.startswith("PRECONDITION_FAILED - message size ")
        c.send_method(1, C.Channel.CloseOk())
        # the connection is still usable, on the same channel number too
        c.open_channel(1)
        c.call(1, C.Queue.Declare(queue="after-big", auto_delete=True), C.Queue.DeclareOk)
        c.send(publish_frames(1, "", "after-big", b"small"))
        c.send_method(1, C.Basic.Get(queue="after-big", no_ack=True))
        c.expect(C.Basic.GetOk)
        assert c.read_frame()[1].body_size == 5
        assert c.read_frame()[1].value == b"small"
        wait_log(fresh_broker, c.peer_name, close.reply_text)
    assert_no_traceback(fresh_broker)
    survivor.check()


def test_trickled_publish_one_byte_at_a_time(fresh_broker, survivor):
    body = bytes(range(256)) * 4
    with opened(fresh_broker) as c:
        c.call(1, C.Queue.Declare(queue="trickle", auto_delete=True), C.Queue.DeclareOk)
        data = method(1, C.Basic.Publish(exchange="", routing_key="trickle"))
        data += content_header(1, len(body), C.Basic.Properties(content_type="application/octet-stream"))
        data += content_body(1, body[:300]) + content_body(1, body[300:])
        data += method(1, C.Basic.Get(queue="trickle", no_ack=True))
        c.trickle(data)
        ok = c.expect(C.Basic.GetOk)
        assert ok.routing_key == "trickle"
        hdr = c.read_frame()[1]
        assert hdr.body_size == len(body)
        assert hdr.properties.content_type == "application/octet-stream"
        got = b""
        while len(got) < len(body):
            got += c.read_frame()[1].value
        assert got == body
    survivor.check()


def test_close_without_handshake_is_harmless(fresh_broker, survivor):
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", fresh_broker.port))
        s.close()
    with RawClient(fresh_broker.port) as c:
        c.send(PROTOCOL_HEADER[:5])
    assert_no_traceback(fresh_broker)
    survivor.check()
