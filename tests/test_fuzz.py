"""Fuzz what parses bytes.

(a) Unit level: FrameReader, parse_publish, parse_ack, decode_method,
    delivery_mode and decode_properties get random and mutated inputs (fixed
    seeds, thousands of cases); they may only return a result or raise
    FrameError/AMQPError -- any other exception is a bug.
(b) End to end: hundreds of connections do a clean handshake and then send
    mutated frames; afterwards the broker is alive, still serves a pika
    client, and has logged no traceback.
"""

from __future__ import annotations

import datetime
import random
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pika
import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp.header import ContentHeader

from amqp_raw import RawClient
from broker.amqp.content import MAX_MESSAGE_SIZE
from protocol import framing
from protocol.errors import AMQPError, FrameError

# mutated method ids decode to deprecated commands now and then
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RICH_TABLE = {
    "s": "string",
    "u": "ünïcode",
    "i": 7,
    "neg": -5,
    "l": 2**40,
    "f": 1.5,
    "t": True,
    "d": Decimal("3.14"),
    "ts": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
    "a": [1, "two", [3], {"k": "v"}],
    "n": None,
    "tbl": {"x": {"y": {"z": 1}}},
    "x-match": "any",
    "bin": bytearray(b"\x00\xff\x10"),
}

PROPS = C.Basic.Properties(
    content_type="application/json",
    content_encoding="utf-8",
    headers=RICH_TABLE,
    delivery_mode=2,
    priority=5,
    correlation_id="corr",
    reply_to="reply",
    expiration="60000",
    message_id="mid",
    timestamp=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    message_type="type",
    user_id="guest",
    app_id="fuzz",
)

METHODS = [
    C.Queue.Declare(queue="fz", auto_delete=True, arguments={"x-message-ttl": 1000, "x-max-length": 10}),
    C.Queue.Declare(queue="fz-args", auto_delete=True, arguments=RICH_TABLE),
    C.Queue.Declare(queue="fuzz-q", passive=True),
    C.Exchange.Declare(exchange="fzx", exchange_type="topic", auto_delete=True, arguments={"alternate-exchange": "a"}),
    C.Exchange.Declare(exchange="fzh", exchange_type="headers", auto_delete=True),
    C.Exchange.Delete(exchange="fzx"),
    C.Exchange.Bind(destination="fzx", source="amq.topic", routing_key="#"),
    C.Exchange.Unbind(destination="fzx", source="amq.topic", routing_key="#"),
    C.Queue.Bind(queue="fuzz-q", exchange="amq.headers", arguments={"x-match": "all", "k": 1}),
    C.Queue.Bind(queue="fuzz-q", exchange="amq.topic", routing_key="a.*.#"),
    C.Queue.Unbind(queue="fuzz-q", exchange="amq.topic", routing_key="a.*.#"),
    C.Queue.Purge(queue="fz"),
    C.Queue.Delete(queue="fz", if_unused=True, if_empty=True),
    C.Basic.Qos(prefetch_count=3, global_=True),
    C.Basic.Consume(queue="fuzz-q", consumer_tag="ct", exclusive=False, arguments={"x-priority": 1}),
    C.Basic.Cancel(consumer_tag="ct"),
    C.Basic.Get(queue="fuzz-q"),
    C.Basic.Ack(delivery_tag=1, multiple=True),
    C.Basic.Nack(delivery_tag=1, multiple=True, requeue=True),
    C.Basic.Reject(delivery_tag=1, requeue=False),
    C.Basic.Recover(requeue=True),
    C.Basic.Publish(exchange="amq.headers", routing_key="", mandatory=True),
    C.Confirm.Select(),
    C.Tx.Select(),
    C.Tx.Commit(),
    C.Tx.Rollback(),
    C.Channel.Flow(active=True),
    C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
]


def payload_of(m) -> bytes:
    return pframe.marshal(m, 1)[7:-1]


METHOD_PAYLOADS = [payload_of(m) for m in METHODS]
HEADER_PAYLOADS = [
    pframe.marshal(ContentHeader(0, size, p), 1)[7:-1]
    for size in (0, 5, 300)
    for p in (PROPS, C.Basic.Properties(), C.Basic.Properties(delivery_mode=1, headers={"k": 1}))
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One or a few random edits: bit flips, byte sets, truncation, insertion, splicing."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:  # flip bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # interesting byte values
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xCE, 0xFF, rng.randrange(256)])
        elif op == 2:  # truncate
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and len(b) > 2:  # delete a slice
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 8)]
        elif op == 5 and len(b) >= 4:  # overwrite a big-endian length with an extreme value
            i = rng.randrange(len(b) - 3)
            b[i : i + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)]))
        elif op == 6:  # splice part of another template in
            other = rng.choice(METHOD_PAYLOADS + HEADER_PAYLOADS)
            i = rng.randrange(len(b) + 1)
            b[i:i] = other[rng.randrange(len(other) + 1) :]
    return bytes(b)


def allowed(fn, *args):
    """Call fn; only a normal result or a protocol error is acceptable."""
    try:
        return fn(*args)
    except (FrameError, AMQPError):
        return None
    except Exception as exc:  # pragma: no cover - this is what the test is looking for
        raise AssertionError(f"{fn.__name__}({args!r:.300}) raised {type(exc).__name__}: {exc}") from exc


# -- (a) unit level --------------------------------------------------------------


def _frame(t: int, ch: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", t, ch, len(payload)) + payload + b"\xce"


def _valid_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 6)):
        k = rng.randrange(4)
        if k == 0:
            parts.append(_frame(1, rng.randint(0, 3), rng.choice(METHOD_PAYLOADS)))
        elif k == 1:
            parts.append(_frame(2, 1, rng.choice(HEADER_PAYLOADS)))
        elif k == 2:
            parts.append(_frame(3, 1, rng.randbytes(rng.randint(0, 50))))
        else:
            parts.append(framing.HEARTBEAT_FRAME)
    return b"".join(parts)


def _feed_chunks(rng: random.Random, data: bytes, frame_max: int) -> list:
    reader = framing.FrameReader(frame_max)
    out = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 64)
        got = reader.feed(data[i : i + n])
        assert isinstance(got, list)
        for f in got:
            assert isinstance(f, tuple) and len(f) == 3
            t, ch, p = f
            assert isinstance(t, int) and 0 <= t <= 255 and 0 <= ch <= 65535
            assert isinstance(p, bytes) and len(p) <= frame_max
        out += got
        i += n
    return out


def test_frame_reader_random_bytes():
    rng = random.Random(1)
    for _ in range(3000):
        data = rng.randbytes(rng.randint(0, 300))
        try:
            _feed_chunks(rng, data, rng.choice([4096, 131072]))
        except (FrameError, AMQPError):
            pass


def test_frame_reader_mutated_streams():
    rng = random.Random(2)
    for _ in range(5000):
        data = _valid_stream(rng)
        if rng.random() < 0.9:
            data = mutate(rng, data)
        try:
            _feed_chunks(rng, data, rng.choice([4096, 131072]))
        except (FrameError, AMQPError):
            pass


def test_frame_reader_valid_streams_roundtrip():
    rng = random.Random(3)
    for _ in range(2000):
        data = _valid_stream(rng)
        whole = framing.FrameReader().feed(data)
        assert _feed_chunks(rng, data, 131072) == whole
        assert b"".join(_frame(t, c, p) for t, c, p in whole) == data


def test_parse_publish_and_ack_mutated():
    rng = random.Random(4)
    pubs = [payload_of(C.Basic.Publish(exchange=e, routing_key=r, mandatory=m))
            for e in ("", "amq.topic", "x" * 100) for r in ("", "a.b", "k" * 255) for m in (False, True)]
    acks = [payload_of(C.Basic.Ack(delivery_tag=t, multiple=m)) for t in (1, 2**40) for m in (False, True)]
    for _ in range(10000):
        p = mutate(rng, rng.choice(pubs))
        r = allowed(framing.parse_publish, p)
        if r is not None:
            e, k, bits = r
            assert isinstance(bits, int) and 0 <= bits <= 255
            assert len(e) == 1 + e[0] and len(k) == 1 + k[0]
        allowed(framing.parse_ack, mutate(rng, rng.choice(acks)))
    for _ in range(2000):
        allowed(framing.parse_publish, rng.randbytes(rng.randint(0, 40)))
        allowed(framing.parse_ack, rng.randbytes(rng.randint(0, 20)))


def test_decode_method_mutated():
    rng = random.Random(5)
    for _ in range(6000):
        allowed(framing.decode_method, mutate(rng, rng.choice(METHOD_PAYLOADS)))
    for _ in range(2000):
        idx = rng.choice(METHOD_PAYLOADS)[:4]
        allowed(framing.decode_method, idx + rng.randbytes(rng.randint(0, 60)))


def _nested(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = b"\x01kF" + struct.pack(">I", len(inner)) + inner
    return struct.pack(">I", len(inner)) + inner


def test_decode_method_deeply_nested_table():
    """5000 nested tables fit in one 128 KiB frame; decoding must not blow the stack."""
    head = payload_of(C.Queue.Declare(queue="deep", arguments={}))[:-4]
    allowed(framing.decode_method, head + _nested(5000))
    arr = b""
    for _ in range(5000):
        arr = b"A" + struct.pack(">I", len(arr)) + arr
    allowed(framing.decode_method, head + struct.pack(">I", len(arr) + 2) + b"\x01k" + arr)


def test_content_header_parsers_mutated():
    rng = random.Random(6)
    for _ in range(6000):
        h = mutate(rng, rng.choice(HEADER_PAYLOADS))
        allowed(framing.delivery_mode, h)
        allowed(framing.decode_properties, h)
        if len(h) >= 14:
            allowed(framing.header_body_size, h)


def test_content_header_parsers_deeply_nested_headers():
    h = HEADER_PAYLOADS[1][:12] + struct.pack(">H", framing.FLAG_HEADERS | framing.FLAG_DELIVERY_MODE)
    h += _nested(5000) + b"\x02"
    assert allowed(framing.delivery_mode, h) in (2, None)
    allowed(framing.decode_properties, h)


def test_delivery_mode_agrees_with_pamqp():
    """The fast path and the full decode must agree on every header pamqp can read."""
    rng = random.Random(7)
    checked = 0
    for _ in range(6000):
        h = mutate(rng, rng.choice(HEADER_PAYLOADS))
        try:
            props = framing.decode_properties(h)
        except (FrameError, AMQPError):
            continue
        dm = allowed(framing.delivery_mode, h)
        if dm is not None and isinstance(props.delivery_mode, int):
            assert dm == props.delivery_mode, h
            checked += 1
    assert checked > 100


# -- (b) end to end ----------------------------------------------------------------


def _case(seed: int) -> bytes:
    """The bytes one fuzz connection sends after its handshake (channel 1 is open)."""
    rng = random.Random(seed)
    out = b""
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        if kind == 0:  # a structurally valid frame with a mutated method payload
            out += _frame(1, 1, mutate(rng, rng.choice(METHOD_PAYLOADS)))
        elif kind == 1:  # a publish whose header or body is mutated
            ex = rng.choice(["amq.headers", "", "amq.topic", "amq.fanout"])
            body = rng.randbytes(rng.randint(0, 40))
            props = rng.choice([PROPS, C.Basic.Properties(headers={"k": 1}), C.Basic.Properties(user_id="guest")])
            hdr = pframe.marshal(ContentHeader(0, len(body), props), 1)[7:-1]
            if rng.random() < 0.7:
                hdr = mutate(rng, hdr)
            out += _frame(1, 1, payload_of(C.Basic.Publish(exchange=ex, routing_key="fuzz-q")))
            out += _frame(2, 1, hdr)
            if body:
                out += _frame(3, 1, body)
        elif kind == 2:  # mutated raw bytes of whole valid frames
            m = pframe.marshal(rng.choice(METHODS), rng.choice([1, 1, 1, 0, 2]))
            out += mutate(rng, m)
        elif kind == 3:  # random garbage
            out += rng.randbytes(rng.randint(1, 64))
        else:  # a valid method, to move the channel into another state
            out += pframe.marshal(rng.choice(METHODS), 1)
    return out


def _run_case(port: int, seed: int) -> str:
    try:
        with RawClient(port, timeout=5) as c:
            c.handshake()
            c.open_channel(1)
            c.send(_case(seed))
            # then a clean close; the broker either answers it or has already closed
            try:
                c.send_method(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
            except OSError:
                return "reset"
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                try:
                    f = c.read_frame(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    return "timeout"
                if f is None:
                    return "eof"
                if isinstance(f[1], C.Connection.Close):
                    return f"close-{f[1].reply_code}"
                if isinstance(f[1], C.Connection.CloseOk):
                    return "closeok"
            return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


def test_end_to_end_mutated_frames(fresh_broker):
    port = fresh_broker.port
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    ch.queue_declare("fuzz-q")
    ch.queue_bind("fuzz-q", "amq.headers", arguments={"x-match": "any", "k": 1, "s": "string"})
    ch.queue_bind("fuzz-q", "amq.topic", "#")
    ch.queue_bind("fuzz-q", "amq.fanout")

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda s: _run_case(port, s), range(400)))

    assert fresh_broker.alive
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r] = outcomes.get(r, 0) + 1
    # the connection that was open all along still works, and so does a new one
    ch.queue_purge("fuzz-q")
    ch.basic_publish("", "fuzz-q", b"after-fuzz")
    assert ch.basic_get("fuzz-q", auto_ack=True)[2] == b"after-fuzz"
    c2 = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch2 = c2.channel()
    q = ch2.queue_declare("", exclusive=True).method.queue
    ch2.confirm_delivery()
    ch2.basic_publish("", q, b"consume-me")
    got = []
    for _m, _p, body in ch2.consume(q, auto_ack=True, inactivity_timeout=5):
        got.append(body)
        break
    assert got == [b"consume-me"]
    c2.close()
    conn.close()
    log = fresh_broker.log_text()
    assert "Traceback" not in log and "internal error" not in log, (outcomes, log[-6000:])
    assert "INTERNAL_ERROR" not in log, outcomes


# -- (c) every complete malformed frame is answered, at once, with the precise code ----------

CONN, CHAN = "connection", "channel"
UNKNOWN_TYPES = [t for t in range(256) if t not in (1, 2, 3, 8)]
NOT_UNMARSHALLED_BY_PAMQP = {(60 << 16) | 40, (60 << 16) | 80}  # Basic.Publish and Basic.Ack are parsed by hand


def _pamqp_verdict(payload: bytes) -> int | None:
    """The reply code for a method payload by pamqp's own reading, independent of the
    broker: 503 for an unknown method, 501 if it cannot be decoded, None if it can."""
    if len(payload) < 4:
        return 501
    cls = C.INDEX_MAPPING.get(struct.unpack_from(">I", payload)[0])
    if cls is None:
        return 503
    try:
        cls().unmarshal(payload[4:])
    except Exception:  # pamqp raises several kinds; each is a frame that cannot be decoded
        return 501
    return None


def _truncated_properties(rng: random.Random) -> bytes:
    """A content header whose announced properties run past its end."""
    h = rng.choice([p for p in HEADER_PAYLOADS if len(p) > 14])
    return h[: rng.randint(14, len(h) - 1)]


def malformed_case(rng: random.Random) -> tuple[str, bytes, int, str]:
    """(name, bytes sent after the handshake with channel 1 open, expected code, close kind)."""
    pub = pframe.marshal(C.Basic.Publish(exchange="", routing_key="fuzz-q"), 1)
    hdr_ok = pframe.marshal(ContentHeader(0, 3, C.Basic.Properties()), 1)
    while True:
        k = rng.randrange(15)
        if k == 0:  # a random method payload pamqp cannot read (or an unknown method)
            base = rng.choice(METHOD_PAYLOADS)
            p = mutate(rng, base) if rng.random() < 0.7 else base[:4] + rng.randbytes(rng.randint(0, 40))
            if len(p) >= 4 and struct.unpack_from(">I", p)[0] in NOT_UNMARSHALLED_BY_PAMQP:
                continue
            code = _pamqp_verdict(p)
            if code is None:
                continue  # a valid method: not malformed
            return "method payload", _frame(1, 1, p), code, CONN
        if k == 1:
            m = pframe.marshal(rng.choice(METHODS), 1)
            return "frame end byte", m[:-1] + bytes([rng.choice([b for b in range(256) if b != 0xCE])]), 501, CONN
        if k == 2:
            return "over frame_max", struct.pack(">BHI", 1, 1, 131072 + rng.randint(1, 2**31)), 501, CONN
        if k == 3:
            return "unknown frame type", _frame(rng.choice(UNKNOWN_TYPES), rng.randint(0, 3), rng.randbytes(rng.randint(0, 9))), 501, CONN
        if k == 4:
            return "heartbeat on a channel", _frame(8, rng.randint(1, 65535), b""), 505, CONN
        if k == 5:
            return "heartbeat with payload", _frame(8, 0, rng.randbytes(rng.randint(1, 9))), 501, CONN
        if k == 6:
            data = hdr_ok if rng.random() < 0.5 else _frame(3, 1, rng.randbytes(rng.randint(0, 9)))
            return "content without publish", data, 505, CONN
        if k == 7:
            return "truncated properties", pub + _frame(2, 1, _truncated_properties(rng)), 501, CONN
        if k == 8:
            bad = struct.pack(">HHQH", 60, 0, 1, 0x2000) + struct.pack(">I", 3) + b"\x01k" + bytes([rng.choice(b"!#$%&?GHJKMNOPQRWXYZ")])
            return "unknown field type in headers", pub + _frame(2, 1, bad), 501, CONN
        if k == 9:
            size = rng.choice([2**63, 2**64 - 1, 2**32, MAX_MESSAGE_SIZE + 1])
            return "body size over the limit", pub + _frame(2, 1, struct.pack(">HHQH", 60, 0, size, 0)), 406, CHAN
        if k == 10:
            cls = rng.choice([c for c in (10, 20, 40, 50, 85, 90, 0, 65535)])
            return "header of another class", pub + _frame(2, 1, struct.pack(">HHQH", cls, 0, 3, 0)), 505, CONN
        if k == 11:
            return "header too short", pub + _frame(2, 1, rng.randbytes(rng.randint(0, 13))), 501, CONN
        if k == 12:
            return "method on an unopened channel", pframe.marshal(rng.choice(METHODS[:20]), rng.randint(2, 2047)), 504, CONN
        if k == 13:
            return "body longer than declared", pub + hdr_ok + _frame(3, 1, rng.randbytes(rng.randint(4, 40))), 501, CONN
        return "truncated publish or ack", _frame(1, 1, rng.choice([payload_of(C.Basic.Publish(exchange="e", routing_key="k")), payload_of(C.Basic.Ack(delivery_tag=5))])[: rng.randint(4, 8)]), 501, CONN


def _answer(port: int, seed: int) -> tuple[str, int, str, float, str]:
    """Send one malformed case; (case name, expected code, what came back, seconds, kind wanted)."""
    rng = random.Random(seed)
    name, data, code, kind = malformed_case(rng)
    with RawClient(port, timeout=5) as c:
        c.handshake()
        c.open_channel(1)
        t0 = time.monotonic()
        c.send(data)
        while True:
            left = 1.0 - (time.monotonic() - t0)
            if left <= 0:
                return name, code, "nothing within 1 s", 1.0, kind
            try:
                f = c.read_frame(left)
            except TimeoutError:
                return name, code, "nothing within 1 s", 1.0, kind
            if f is None:
                return name, code, "EOF without Close", time.monotonic() - t0, kind
            m = f[1]
            if isinstance(m, (C.Connection.Close, C.Channel.Close)):
                got_kind = CONN if isinstance(m, C.Connection.Close) else CHAN
                return name, code, f"{got_kind} {m.reply_code} {m.reply_text}", time.monotonic() - t0, kind


class Canary:
    """A publisher with confirms and a consumer on their own connections, running
    all through the fuzzing: every confirmed message must arrive, in order."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.stop = threading.Event()
        self.confirmed = 0
        self.received: list[int] = []
        self.errors: list[str] = []
        self.worst_confirm = 0.0
        self.q = f"canary-{random.randrange(1 << 30)}"
        setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
        setup.channel().queue_declare(self.q, auto_delete=False)
        setup.close()
        self.threads = [threading.Thread(target=self._publish), threading.Thread(target=self._consume)]
        for t in self.threads:
            t.start()

    def _publish(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, heartbeat=0))
            ch = conn.channel()
            ch.confirm_delivery()
            n = 0
            while not self.stop.is_set():
                t0 = time.monotonic()
                ch.basic_publish("", self.q, str(n).encode(), pika.BasicProperties(delivery_mode=2))
                self.worst_confirm = max(self.worst_confirm, time.monotonic() - t0)
                n += 1
                self.confirmed = n
                time.sleep(0.002)
            conn.close()
        except Exception as exc:  # the assertion names it
            self.errors.append(f"publisher: {type(exc).__name__}: {exc}")

    def _consume(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, heartbeat=0))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            idle_since = None
            for meth, _props, body in ch.consume(self.q, inactivity_timeout=0.2):
                if body is None:
                    if self.stop.is_set():
                        idle_since = idle_since or time.monotonic()
                        if len(self.received) >= self.confirmed or time.monotonic() - idle_since > 5:
                            break
                    continue
                self.received.append(int(body))
                ch.basic_ack(meth.delivery_tag)
            ch.cancel()
            ch.queue_delete(self.q)
            conn.close()
        except Exception as exc:
            self.errors.append(f"consumer: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.slow
def test_every_malformed_frame_is_answered_within_a_second(fresh_broker):
    """Thousands of complete malformed frames, each on its own connection, while a canary
    publishes and consumes: each gets Connection.Close (or Channel.Close) with the
    code its kind of fault calls for, within a second; the canary loses nothing."""
    port = fresh_broker.port
    canary = Canary(port)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda s: _answer(port, s), range(3000)))
    finally:
        canary.finish()
    wrong = [r for r in results if not r[2].startswith(f"{r[4]} {r[1]} ")]
    by_case: dict[str, int] = {}
    for r in results:
        by_case[r[0]] = by_case.get(r[0], 0) + 1
    assert len(by_case) == 15, by_case
    assert not wrong, f"{len(wrong)} of {len(results)} wrong, e.g. {wrong[:8]}"
    slowest = max(r[3] for r in results)
    assert slowest < 1.0
    assert not canary.errors, canary.errors
    assert canary.confirmed > 50, canary.confirmed
    assert canary.received == list(range(canary.confirmed)), (canary.confirmed, len(canary.received))
    assert fresh_broker.alive
    log = fresh_broker.log_text()
    assert "Traceback" not in log and "internal error" not in log


def _cut_short(port: int, heartbeat: int, trickle: float) -> float:
    """Handshake, then a frame cut short (or trickled a byte at a time): seconds until
    the broker closes the socket (-1 if it is still open after 15 s)."""
    with RawClient(port, timeout=20) as c:
        c.handshake(heartbeat=heartbeat)
        c.open_channel(1)
        frame = _frame(1, 1, payload_of(C.Basic.Qos(prefetch_count=1)) + bytes(60))
        t0 = time.monotonic()
        if trickle:
            for b in frame[:-1]:
                try:
                    c.send(bytes([b]))
                except OSError:  # closed by the broker: what this waits for
                    return time.monotonic() - t0
                time.sleep(trickle)
                if time.monotonic() - t0 > 15:
                    return -1.0
        else:
            c.send(frame[:30])
        while time.monotonic() - t0 < 15:
            try:
                f = c.read_frame(15)
            except (TimeoutError, OSError):
                break
            if f is None:
                return time.monotonic() - t0
        return -1.0


async def test_a_frame_cut_short_is_closed_by_the_timeout():
    """A frame that never completes holds no connection forever: with heartbeats off the
    handshake timeout bounds it (1 s here), with heartbeats on the heartbeat timeout;
    trickling the frame a byte at a time does not extend it."""
    import asyncio

    from broker.server import Broker

    b = Broker(host="127.0.0.1", port=0, handshake_timeout=1.0, heartbeat=60)
    await b.start()
    try:
        cut_no_hb = await asyncio.to_thread(_cut_short, b.port, 0, 0.0)
        cut_hb = await asyncio.to_thread(_cut_short, b.port, 1, 0.0)
        trickled = await asyncio.to_thread(_cut_short, b.port, 0, 0.1)
    finally:
        await b.stop()
    assert 0.9 <= cut_no_hb < 4.0, cut_no_hb
    assert 1.5 <= cut_hb < 5.0, cut_hb
    assert 0.9 <= trickled < 4.0, trickled
