"""The RabbitMQ tutorials (and the semantics they rely on) as tests, with pika.

Each test talks to a real broker subprocess with real pika connections.
RabbitMQ is the reference behaviour for every assertion here.
"""

from __future__ import annotations

import threading
import time

import pika
import pika.exceptions
import pytest
from pika.spec import Basic

TIMEOUT = 10.0


# -- helpers --------------------------------------------------------------------


def params(broker, **kw) -> pika.ConnectionParameters:
    kw.setdefault("heartbeat", 0)
    kw.setdefault("blocked_connection_timeout", 10)
    return pika.ConnectionParameters("127.0.0.1", broker.port, **kw)


@pytest.fixture
def connect(broker):
    """Open BlockingConnections to the shared broker; all closed at teardown."""
    made: list[pika.BlockingConnection] = []

    def _connect(**kw) -> pika.BlockingConnection:
        c = pika.BlockingConnection(params(broker, **kw))
        made.append(c)
        return c

    yield _connect
    for c in made:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


def drain(conn: pika.BlockingConnection, done, timeout: float = TIMEOUT) -> None:
    """Process I/O on ``conn`` until ``done()`` is true; fail on timeout."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the broker")
        conn.process_data_events(time_limit=0.02)


def settle(conn: pika.BlockingConnection, seconds: float) -> None:
    """Process I/O for a while (to see that nothing more arrives)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)


def passive_count(conn: pika.BlockingConnection, queue: str) -> tuple[int, int]:
    ch = conn.channel()
    ok = ch.queue_declare(queue, passive=True)
    ch.close()
    return ok.method.message_count, ok.method.consumer_count


def get_all(ch, queue: str) -> list[bytes]:
    out = []
    while True:
        m, _p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append(body)


def assert_queue_gone(conn: pika.BlockingConnection, queue: str) -> None:
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(queue, passive=True)
    assert ei.value.reply_code == 404


# -- tutorial 1: hello world ------------------------------------------------------------


def test_hello_world(connect, uid):
    q = f"hello-{uid}"
    pconn = connect()
    pch = pconn.channel()
    pch.queue_declare(q)
    pch.basic_publish("", q, b"Hello World!")

    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    got = []

    def callback(ch_, method, props, body):
        got.append((method, body))

    ch.basic_consume(q, callback, auto_ack=True)
    drain(conn, lambda: got)
    settle(conn, 0.1)
    assert len(got) == 1
    method, body = got[0]
    assert body == b"Hello World!"
    assert method.routing_key == q
    assert method.exchange == ""
    assert method.redelivered is False
    assert passive_count(pconn, q) == (0, 1)
    pch.queue_delete(q)


# -- tutorial 2: work queues ------------------------------------------------------------


def test_work_queue_redelivery_after_consumer_dies(connect, uid):
    q = f"task_queue-{uid}"
    pconn = connect()
    pch = pconn.channel()
    pch.queue_declare(q, durable=True)
    pch.basic_publish(
        "", q, b"Hello...", properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    )

    c1 = connect()
    ch1 = c1.channel()
    ch1.basic_qos(prefetch_count=1)
    got1 = []
    ch1.basic_consume(q, lambda c, m, p, b: got1.append((m, p, b)), auto_ack=False)
    drain(c1, lambda: got1)
    m, p, body = got1[0]
    assert body == b"Hello..."
    assert m.redelivered is False
    assert p.delivery_mode == 2
    assert passive_count(pconn, q) == (0, 1)  # delivered, unacked
    c1.close()  # dies without acking

    c2 = connect()
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=1)
    got2 = []

    def cb(c, m, p, b):
        got2.append((m, p, b))
        c.basic_ack(m.delivery_tag)

    ch2.basic_consume(q, cb, auto_ack=False)
    drain(c2, lambda: got2)
    settle(c2, 0.1)
    assert len(got2) == 1
    m, p, body = got2[0]
    assert body == b"Hello..."
    assert m.redelivered is True
    assert p.delivery_mode == 2
    ch2.close()
    assert passive_count(pconn, q) == (0, 0)  # acked: gone for good
    pch.queue_delete(q)


def test_fair_dispatch_prefetch_one(broker, connect, uid):
    q = f"fair-{uid}"
    n = 10
    setup = connect()
    sch = setup.channel()
    sch.queue_declare(q, durable=True)

    ready = threading.Barrier(3)
    stop = threading.Event()
    lock = threading.Lock()
    results = {"busy": [], "fast": [], "busy_max_unacked": 0, "busy_pending": 0, "errors": []}

    def busy_worker():
        try:
            conn = pika.BlockingConnection(params(broker))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)
            pending = []  # (delivery_tag, received_at)

            def cb(c, m, p, b):
                pending.append((m.delivery_tag, time.monotonic()))
                with lock:
                    results["busy_pending"] = len(pending)
                    results["busy"].append(b)
                    results["busy_max_unacked"] = max(results["busy_max_unacked"], len(pending))

            ch.basic_consume(q, cb)
            ready.wait(5)
            while not stop.is_set():
                conn.process_data_events(time_limit=0.02)
                # "work" takes 0.6 s per message: ack only then
                if pending and time.monotonic() - pending[0][1] > 0.6:
                    ch.basic_ack(pending.pop(0)[0])
                with lock:
                    results["busy_pending"] = len(pending)
            conn.close()
        except Exception as e:  # pragma: no cover - reported below
            results["errors"].append(repr(e))

    def fast_worker():
        try:
            conn = pika.BlockingConnection(params(broker))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)

            def cb(c, m, p, b):
                with lock:
                    results["fast"].append(b)
                c.basic_ack(m.delivery_tag)

            ch.basic_consume(q, cb)
            ready.wait(5)
            while not stop.is_set():
                conn.process_data_events(time_limit=0.02)
            conn.close()
        except Exception as e:  # pragma: no cover
            results["errors"].append(repr(e))

    threads = [threading.Thread(target=busy_worker), threading.Thread(target=fast_worker)]
    for t in threads:
        t.start()
    try:
        ready.wait(5)
        assert passive_count(setup, q)[1] == 2
        for i in range(n):
            sch.basic_publish("", q, f"task {i}".encode(),
                              properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with lock:
                if len(results["busy"]) + len(results["fast"]) >= n and not results["busy_pending"]:
                    break
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not results["errors"]
    assert results["busy_max_unacked"] == 1
    assert sorted(results["busy"] + results["fast"]) == sorted(f"task {i}".encode() for i in range(n))
    # the busy one held its first message for 0.6 s; the fast one did the rest
    assert 1 <= len(results["busy"]) <= 2
    assert len(results["fast"]) >= n - 2
    assert passive_count(setup, q) == (0, 0)
    sch.queue_delete(q)


# -- tutorial 3: publish/subscribe ------------------------------------------------------


def test_publish_subscribe_fanout(connect, uid):
    ex = f"logs-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="fanout")
    queues = []
    for _ in range(3):
        ok = ch.queue_declare("", exclusive=True)
        name = ok.method.queue
        assert name.startswith("amq.gen-")
        assert ok.method.message_count == 0 and ok.method.consumer_count == 0
        ch.queue_bind(name, ex)
        queues.append(name)
    assert len(set(queues)) == 3
    ch.queue_bind(queues[0], ex, routing_key="second-binding")  # still one copy per message

    pconn = connect()
    pch = pconn.channel()
    for i in range(5):
        pch.basic_publish(ex, "ignored-key" if i % 2 else "", f"log {i}".encode())
    pconn.close()  # the publishes are processed before the close

    for name in queues:
        assert get_all(ch, name) == [f"log {i}".encode() for i in range(5)]
    ch.exchange_delete(ex)


# -- tutorial 4: routing ---------------------------------------------------------------------


def test_routing_direct(connect, uid):
    ex = f"direct_logs-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="direct")
    q_warn = ch.queue_declare("", exclusive=True).method.queue
    q_info = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_warn, ex, routing_key="error")
    ch.queue_bind(q_warn, ex, routing_key="warning")
    ch.queue_bind(q_info, ex, routing_key="info")
    ch.queue_bind(q_info, ex, routing_key="error")
    for sev in ("info", "warning", "error", "debug", "Error", "error.x", ""):
        ch.basic_publish(ex, sev, sev.encode())
    assert get_all(ch, q_warn) == [b"warning", b"error"]
    assert get_all(ch, q_info) == [b"info", b"error"]
    ch.exchange_delete(ex)


# -- tutorial 5: topics ------------------------------------------------------------------------


TOPIC_BINDINGS = ["lqz.*", "lqz.#", "*.orange.*", "lazy.#", "#", "*", "", "#.b", "a.*.b", "*.lqz", "#.#",
                  "*.*.rabbit", "lqz.*.#"]
TOPIC_KEYS = ["lqz", "lqz.a", "lqz.a.b", "quick.orange.rabbit", "lazy", "lazy.orange.elephant", "quick.orange.fox",
              "lazy.brown.fox", "quick.brown.fox", "", "lqz.", ".lqz", "a..b", "orange", "lqz.b", "lqzz.a"]
# Expected per binding; '#' and '#.#' get every key (including the empty one).
TOPIC_EXPECTED = {
    "lqz.*": {"lqz.a", "lqz.", "lqz.b"},
    "lqz.#": {"lqz", "lqz.a", "lqz.a.b", "lqz.", "lqz.b"},
    "*.orange.*": {"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"},
    "lazy.#": {"lazy", "lazy.orange.elephant", "lazy.brown.fox"},
    "*": {"lqz", "lazy", "orange"},
    "": {""},
    "#.b": {"lqz.a.b", "a..b", "lqz.b"},
    "a.*.b": {"a..b"},
    "*.lqz": {".lqz"},
    "*.*.rabbit": {"quick.orange.rabbit"},
    "lqz.*.#": {"lqz.a", "lqz.a.b", "lqz.", "lqz.b"},
}


def test_topics(connect, uid):
    ex = f"topic_logs-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="topic")
    qs = {}
    for b in TOPIC_BINDINGS:
        qs[b] = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(qs[b], ex, routing_key=b)
    # one queue with two overlapping bindings gets a single copy
    q_both = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_both, ex, routing_key="lqz.*")
    ch.queue_bind(q_both, ex, routing_key="lqz.#")

    for k in TOPIC_KEYS:
        ch.basic_publish(ex, k, k.encode())

    expected = dict(TOPIC_EXPECTED)
    expected["#"] = set(TOPIC_KEYS)
    expected["#.#"] = set(TOPIC_KEYS)
    got = {b: [x.decode() for x in get_all(ch, qs[b])] for b in TOPIC_BINDINGS}
    for b in TOPIC_BINDINGS:
        assert sorted(got[b]) == sorted(expected[b]), f"binding {b!r}"
        # publish order is kept
        assert got[b] == [k for k in TOPIC_KEYS if k in expected[b]], f"binding {b!r}"
    assert [x.decode() for x in get_all(ch, q_both)] == [k for k in TOPIC_KEYS if k in TOPIC_EXPECTED["lqz.#"]]

    # unbinding one of the two keys leaves the other in force
    ch.queue_unbind(q_both, ex, routing_key="lqz.#")
    for k in ("lqz", "lqz.a", "lqz.a.b"):
        ch.basic_publish(ex, k, k.encode())
    assert get_all(ch, q_both) == [b"lqz.a"]
    ch.exchange_delete(ex)


# -- tutorial 6: RPC ------------------------------------------------------------------------


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_rpc_fibonacci(broker, connect, uid):
    rpc_queue = f"rpc_queue-{uid}"
    server_ready = threading.Event()
    stop = threading.Event()
    errors: list[str] = []
    served: list[int] = []

    def server():
        try:
            conn = pika.BlockingConnection(params(broker))
            ch = conn.channel()
            ch.queue_declare(rpc_queue)
            ch.basic_qos(prefetch_count=1)

            def on_request(c, method, props, body):
                n = int(body)
                served.append(n)
                c.basic_publish(
                    "", props.reply_to, str(fib(n)).encode(),
                    properties=pika.BasicProperties(correlation_id=props.correlation_id),
                )
                c.basic_ack(method.delivery_tag)

            ch.basic_consume(rpc_queue, on_request)
            server_ready.set()
            while not stop.is_set():
                conn.process_data_events(time_limit=0.02)
            conn.close()
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))
            server_ready.set()

    t = threading.Thread(target=server)
    t.start()
    try:
        assert server_ready.wait(5)
        assert not errors
        conn = connect()
        ch = conn.channel()
        callback_queue = ch.queue_declare("", exclusive=True).method.queue
        responses: dict[str, bytes] = {}

        def on_response(c, method, props, body):
            responses[props.correlation_id] = body

        ch.basic_consume(callback_queue, on_response, auto_ack=True)

        # a reply with an unknown correlation id must be ignored by the client logic
        ch.basic_publish("", callback_queue, b"bogus", properties=pika.BasicProperties(correlation_id="nope"))

        def call(n: int, corr: str) -> int:
            ch.basic_publish(
                "", rpc_queue, str(n).encode(),
                properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr),
            )
            drain(conn, lambda: corr in responses)
            return int(responses[corr])

        for i, n in enumerate([0, 1, 2, 10, 30, 90]):
            assert call(n, f"{uid}-{i}") == fib(n)
        assert fib(30) == 832040
        assert responses["nope"] == b"bogus"

        # several calls in flight at once are matched by correlation id
        ns = [5, 7, 11, 13]
        for n in ns:
            ch.basic_publish("", rpc_queue, str(n).encode(),
                             properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=f"multi-{n}"))
        drain(conn, lambda: all(f"multi-{n}" in responses for n in ns))
        for n in ns:
            assert int(responses[f"multi-{n}"]) == fib(n)
        assert served == [0, 1, 2, 10, 30, 90] + ns
    finally:
        stop.set()
        t.join(10)
    assert not errors
    c = connect()
    c.channel().queue_delete(rpc_queue)


# -- SelectConnection (async callbacks) -----------------------------------------------------


def run_select(broker, on_channel, timeout: float = 8.0) -> dict:
    """Run a SelectConnection, call ``on_channel(state)`` once a channel is open.

    ``state['done']()`` closes the connection and ends the ioloop; a timeout
    closes it too and records ``state['timed_out']``.
    """
    state: dict = {"timed_out": False, "closed_reason": None}

    def on_open(conn):
        state["conn"] = conn
        conn.channel(on_open_callback=lambda ch: (state.__setitem__("channel", ch), on_channel(state)))

    def on_open_error(conn, err):
        state["open_error"] = err
        conn.ioloop.stop()

    def on_closed(conn, reason):
        state["closed_reason"] = reason
        conn.ioloop.stop()

    def done():
        if state["conn"].is_open:
            state["conn"].close()

    def on_timeout():
        state["timed_out"] = True
        c = state.get("conn")
        if c is not None and c.is_open:
            c.close()
        else:
            conn.ioloop.stop()

    state["done"] = done
    conn = pika.SelectConnection(
        params(broker), on_open_callback=on_open, on_open_error_callback=on_open_error,
        on_close_callback=on_closed,
    )
    conn.ioloop.call_later(timeout, on_timeout)
    conn.ioloop.start()
    assert "open_error" not in state, state.get("open_error")
    return state


def test_select_connection_hello_world(broker, connect, uid):
    q = f"hello-select-{uid}"
    got: list = []

    def on_channel(st):
        ch = st["channel"]

        def on_declared(frame):
            assert frame.method.queue == q
            ch.basic_publish("", q, b"Hello World!")
            ch.basic_consume(q, on_message, auto_ack=True)

        def on_message(c, method, props, body):
            got.append((method.redelivered, body))
            st["done"]()

        ch.queue_declare(q, callback=on_declared)

    st = run_select(broker, on_channel)
    assert not st["timed_out"]
    assert got == [(False, b"Hello World!")]
    c = connect()
    assert passive_count(c, q) == (0, 0)
    c.channel().queue_delete(q)


def test_select_connection_work_queue(broker, connect, uid):
    q = f"task-select-{uid}"
    first: list = []
    second: list = []

    def consumer_dies(st):
        ch = st["channel"]

        def on_qos(_frame):
            ch.basic_publish("", q, b"job", properties=pika.BasicProperties(delivery_mode=2))
            ch.basic_consume(q, on_message)  # manual ack

        def on_message(c, method, props, body):
            first.append((method.redelivered, props.delivery_mode, body))
            st["done"]()  # close the connection without acking

        ch.queue_declare(q, durable=True, callback=lambda _f: ch.basic_qos(prefetch_count=1, callback=on_qos))

    st = run_select(broker, consumer_dies)
    assert not st["timed_out"]
    assert first == [(False, 2, b"job")]

    def consumer_acks(st):
        ch = st["channel"]

        def on_message(c, method, props, body):
            second.append((method.redelivered, props.delivery_mode, body))
            c.basic_ack(method.delivery_tag)
            # make sure the ack reached the broker before closing
            c.queue_declare(q, passive=True, callback=lambda f: (second.append(f.method.message_count), st["done"]()))

        ch.basic_qos(prefetch_count=1, callback=lambda _f: ch.basic_consume(q, on_message))

    st = run_select(broker, consumer_acks)
    assert not st["timed_out"]
    assert second == [(True, 2, b"job"), 0]
    c = connect()
    assert passive_count(c, q) == (0, 0)
    c.channel().queue_delete(q)


# -- round robin and requeue order ------------------------------------------------------------


def test_round_robin_three_consumers_one_channel(connect, uid):
    q = f"rr-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    counts: dict[str, list[int]] = {}

    def make_cb(tag):
        def cb(c, m, p, b):
            counts[tag].append(int(b))
            c.basic_ack(m.delivery_tag)
        return cb

    for i in range(3):
        tag = f"c{i}-{uid}"
        counts[tag] = []
        assert ch.basic_consume(q, make_cb(tag), consumer_tag=tag) == tag
    pconn = connect()
    pch = pconn.channel()
    for i in range(30):
        pch.basic_publish("", q, str(i).encode())
    drain(conn, lambda: sum(map(len, counts.values())) >= 30)
    settle(conn, 0.1)
    assert sorted(len(v) for v in counts.values()) == [10, 10, 10]
    assert sorted(x for v in counts.values() for x in v) == list(range(30))
    # strict rotation: consumer k gets every third message
    firsts = sorted(counts.values(), key=lambda v: v[0])
    for k, v in enumerate(firsts):
        assert v == list(range(k, 30, 3))
    ch.queue_delete(q)


def test_requeue_keeps_original_order(connect, uid):
    q = f"requeue-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    for i in range(1, 11):
        ch.basic_publish("", q, str(i).encode())
    tags = {}
    for i in range(1, 11):
        m, _p, body = ch.basic_get(q)
        assert int(body) == i and m.redelivered is False
        assert m.message_count == 10 - i
        tags[i] = m.delivery_tag
    ch.basic_ack(tags[1])
    ch.basic_ack(tags[2])
    ch.basic_nack(tags[3], requeue=True)
    ch.basic_reject(tags[7], requeue=True)
    ch.basic_nack(tags[5], requeue=False)  # dropped
    ch.basic_publish("", q, b"11")
    ch.basic_publish("", q, b"12")
    other = connect()
    assert passive_count(other, q) == (4, 0)  # 3, 7, 11, 12 ready
    ch.close()  # 4, 6, 8, 9, 10 go back
    assert passive_count(other, q) == (9, 0)

    ch2 = conn.channel()
    got = []
    ch2.basic_consume(q, lambda c, m, p, b: got.append((int(b), m.redelivered)), auto_ack=True)
    drain(conn, lambda: len(got) >= 9)
    settle(conn, 0.1)
    assert got == [(3, True), (4, True), (6, True), (7, True), (8, True), (9, True), (10, True),
                   (11, False), (12, False)]
    ch2.queue_delete(q)


def test_nack_requeue_goes_back_to_head(connect, uid):
    q = f"requeue-head-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    m, _p, body = ch.basic_get(q)
    assert body == b"0"
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _p, body = ch.basic_get(q)
    assert body == b"0" and m.redelivered is True
    # nack(multiple) of everything up to a tag
    m2, _p, b2 = ch.basic_get(q)
    m3, _p, b3 = ch.basic_get(q)
    assert (b2, b3) == (b"1", b"2")
    ch.basic_nack(m3.delivery_tag, multiple=True, requeue=True)
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)] == [b"0", b"1", b"2"]
    assert ch.basic_get(q) == (None, None, None)
    ch.queue_delete(q)


# -- QoS ---------------------------------------------------------------------------------------------


def _qos_setup(connect, uid, prefetch_calls):
    conn = connect()
    ch = conn.channel()
    queues = [f"qos-{uid}-a", f"qos-{uid}-b"]
    for q in queues:
        ch.queue_declare(q, auto_delete=True)
        for i in range(10):
            ch.basic_publish("", q, f"{q}:{i}".encode())
    for kw in prefetch_calls:
        ch.basic_qos(**kw)
    got: dict[str, list] = {q: [] for q in queues}
    for q in queues:
        ch.basic_consume(q, lambda c, m, p, b, q=q: got[q].append(m.delivery_tag))
    settle(conn, 0.3)
    return conn, ch, got


def test_qos_per_consumer(connect, uid):
    conn, ch, got = _qos_setup(connect, uid, [dict(prefetch_count=2)])
    assert [len(v) for v in got.values()] == [2, 2]
    ch.basic_ack(got[f"qos-{uid}-a"][0])
    settle(conn, 0.2)
    assert [len(v) for v in got.values()] == [3, 2]


def test_qos_global_shared_by_consumers(connect, uid):
    conn, ch, got = _qos_setup(connect, uid, [dict(prefetch_count=3, global_qos=True)])
    assert sum(len(v) for v in got.values()) == 3
    tag = next(v[0] for v in got.values() if v)
    ch.basic_ack(tag)
    settle(conn, 0.2)
    assert sum(len(v) for v in got.values()) == 4


def test_qos_global_and_per_consumer_both_apply(connect, uid):
    # RabbitMQ: per-consumer limit 2 and channel limit 3 -> 3 in all, at most 2 each
    conn, ch, got = _qos_setup(
        connect, uid, [dict(prefetch_count=3, global_qos=True), dict(prefetch_count=2, global_qos=False)]
    )
    counts = [len(v) for v in got.values()]
    assert sum(counts) == 3 and max(counts) == 2


def test_qos_change_does_not_affect_existing_consumer(connect, uid):
    # basic.qos(global=False) applies to consumers started after it (RabbitMQ)
    conn = connect()
    ch = conn.channel()
    q = f"qos-late-{uid}"
    ch.queue_declare(q, auto_delete=True)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag))
    settle(conn, 0.2)
    assert len(got) == 1
    ch.basic_qos(prefetch_count=5)
    settle(conn, 0.2)
    assert len(got) == 1
    ch.basic_ack(got[0])
    settle(conn, 0.2)
    assert len(got) == 2


# -- publisher confirms and body sizes ----------------------------------------------------------


def test_publisher_confirms(connect, uid):
    q = f"confirm-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q, auto_delete=False)
    assert ch.basic_publish("", q, b"one") is None
    ch.basic_publish("", q, b"two", mandatory=True)
    # unroutable but not mandatory: confirmed, dropped
    ch.basic_publish("", f"no-such-queue-{uid}", b"lost")
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish("", f"no-such-queue-{uid}", b"returned", mandatory=True)
    returned = ei.value.messages
    assert len(returned) == 1 and returned[0].body == b"returned"
    assert returned[0].method.reply_code == 312 and returned[0].method.reply_text == "NO_ROUTE"
    # the channel is still usable and the routed messages are there
    ch.basic_publish("", q, b"three", mandatory=True)
    assert get_all(ch, q) == [b"one", b"two", b"three"]
    # publish to a missing exchange closes the channel with 404
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei2:
        ch.basic_publish(f"no-such-exchange-{uid}", q, b"x")
    assert ei2.value.reply_code == 404
    conn.channel().queue_delete(q)


@pytest.mark.parametrize("which", ["empty", "frame_max-8", "frame_max-7", "5MB"])
def test_body_sizes_round_trip(connect, uid, which):
    q = f"sizes-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q, auto_delete=True)
    frame_max = conn._impl.params.frame_max
    assert frame_max >= 4096
    size = {"empty": 0, "frame_max-8": frame_max - 8, "frame_max-7": frame_max - 7, "5MB": 5 * 1024 * 1024}[which]
    body = bytes((i * 7 + 3) % 251 for i in range(size % 1000 + 1000))  # pattern
    body = (body * (size // len(body) + 1))[:size]
    props = pika.BasicProperties(content_type="application/octet-stream", headers={"n": size})
    ch.basic_publish("", q, body, properties=props)
    ch.basic_publish("", q, body, properties=props)
    m, p, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == size and got == body
    assert p.headers == {"n": size} and p.content_type == "application/octet-stream"
    got2 = []
    ch.basic_consume(q, lambda c, m, p, b: got2.append(b), auto_ack=True)
    drain(conn, lambda: got2)
    assert len(got2[0]) == size and got2[0] == body


# -- queue lifetimes -----------------------------------------------------------------------------


def test_auto_delete_queue_deleted_when_last_consumer_cancels(connect, uid):
    q = f"autodel-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    other = connect()
    assert passive_count(other, q) == (0, 2)
    ch.basic_cancel(t1)
    assert passive_count(other, q) == (0, 1)  # one consumer left: still there
    ch.basic_cancel(t2)
    assert_queue_gone(other, q)


def test_auto_delete_queue_survives_until_first_consumer(connect, uid):
    q = f"autodel-unused-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"x")
    other = connect()
    assert passive_count(other, q) == (1, 0)  # never had a consumer: stays
    ch.close()  # channel closing with a consumer also counts: none here
    assert passive_count(other, q) == (1, 0)
    other.channel().queue_delete(q)


def test_auto_delete_queue_deleted_when_consumer_channel_closes(connect, uid):
    q = f"autodel-chclose-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None)
    other = connect()
    assert passive_count(other, q) == (0, 1)
    ch.close()
    assert_queue_gone(other, q)


def test_exclusive_queue_deleted_with_its_connection(connect, uid):
    q = f"excl-{uid}"
    owner = connect()
    och = owner.channel()
    och.queue_declare(q, exclusive=True)
    och.basic_publish("", q, b"x")
    other = connect()
    ch = other.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 405  # RESOURCE_LOCKED while the owner lives
    # closing the owner's channel does not delete it
    och.close()
    assert passive_count(owner, q) == (1, 0)
    owner.close()
    assert_queue_gone(other, q)


# -- counts in method replies -------------------------------------------------------------


def test_counts_in_replies(connect, uid):
    q = f"counts-{uid}"
    conn = connect()
    ch = conn.channel()
    ok = ch.queue_declare(q)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    assert ch.basic_get(q) == (None, None, None)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    ok = ch.queue_declare(q)
    assert (ok.method.message_count, ok.method.consumer_count) == (5, 0)
    m, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"0" and m.message_count == 4
    m, _p, body = ch.basic_get(q)  # unacked: not counted as ready
    assert body == b"1" and m.message_count == 3
    ok = ch.queue_declare(q, passive=True)
    assert ok.method.message_count == 3

    cconn = connect()
    cch = cconn.channel()
    cch.basic_qos(prefetch_count=1)
    cch.basic_consume(q, lambda *a: None)
    cch2 = cconn.channel()
    cch2.basic_qos(prefetch_count=1)
    cch2.basic_consume(q, lambda *a: None)
    settle(cconn, 0.2)  # two consumers hold one unacked message each
    ok = ch.queue_declare(q, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (1, 2)
    cconn.close()  # the two go back
    ok = ch.queue_declare(q, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (3, 0)

    purged = ch.queue_purge(q)
    assert purged.method.message_count == 3
    assert ch.basic_get(q) == (None, None, None)
    for _ in range(4):
        ch.basic_publish("", q, b"y")
    deleted = ch.queue_delete(q)
    assert deleted.method.message_count == 4
    assert_queue_gone(conn, q)


# -- consumer cancel notification --------------------------------------------------------------------


def test_consumer_cancel_notification_on_queue_delete(connect, uid):
    q = f"cancel-notify-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"held")
    ch.basic_publish("", q, b"ready")
    ch.basic_qos(prefetch_count=1)
    cancels = []
    got = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame))
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    drain(conn, lambda: got)
    assert [b for _t, b in got] == [b"held"]
    other = connect()
    och = other.channel()
    assert och.queue_delete(q).method.message_count == 1  # the unacked one is not counted
    drain(conn, lambda: cancels)
    assert isinstance(cancels[0].method, Basic.Cancel)
    assert cancels[0].method.consumer_tag == tag
    assert not ch.consumer_tags
    # acking a message of the deleted queue is fine; the channel stays open and usable
    ch.basic_ack(got[0][0])
    assert ch.is_open
    assert ch.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


# -- basic.recover -----------------------------------------------------------------------------


def test_basic_recover_requeue_redelivers(connect, uid):
    q = f"recover-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((int(b), m.redelivered, m.delivery_tag)))
    drain(conn, lambda: len(got) >= 3)
    assert [(b, r) for b, r, _t in got] == [(0, False), (1, False), (2, False)]
    ch.basic_ack(got[0][2])
    ch.basic_recover(requeue=True)
    drain(conn, lambda: len(got) >= 5)
    settle(conn, 0.1)
    assert [(b, r) for b, r, _t in got[3:]] == [(1, True), (2, True)]
    # the new deliveries have new tags; the old ones are gone
    assert {t for _b, _r, t in got[3:]}.isdisjoint({t for _b, _r, t in got[:3]})
    ch.basic_ack(got[4][2], multiple=True)
    other = connect()
    assert passive_count(other, q) == (0, 1)


def test_basic_recover_without_requeue_is_not_implemented(connect, uid):
    # RabbitMQ: basic.recover{requeue=false} -> connection error 540 NOT_IMPLEMENTED "requeue=false"
    q = f"recover-nrq-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"x")
    m, _p, _b = ch.basic_get(q)
    assert m is not None
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        ch.basic_recover(requeue=False)
    assert ei.value.reply_code == 540


# -- channel.flow and headers exchange ------------------------------------------------------------


def test_channel_flow_active(connect):
    conn = connect()
    ch = conn.channel()
    if not hasattr(ch, "flow"):
        pytest.skip("pika lacks channel.flow")
    assert ch.flow(True) is True
    assert ch.is_open


def test_channel_flow_inactive_from_client_is_not_implemented(connect):
    # RabbitMQ (3.3+): channel.flow{active=false} from a client -> connection error 540 "active=false"
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        ch.flow(False)
    assert ei.value.reply_code == 540


def test_headers_exchange_value_types_must_match(connect, uid):
    # RabbitMQ compares header values by type and value: a bool true or a decimal 1
    # is not the integer 1 (rabbit_exchange_type_headers: "PT =/= DT -> no match").
    from decimal import Decimal

    ex = f"headers-types-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, arguments={"x-match": "any", "n": 1})
    q_bool = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_bool, ex, arguments={"x-match": "any", "flag": True})
    for name, headers in [("int", {"n": 1}), ("bool", {"n": True}), ("decimal", {"n": Decimal(1)}),
                          ("str", {"n": "1"}), ("flag-bool", {"flag": True}), ("flag-int", {"flag": 1})]:
        ch.basic_publish(ex, "", name.encode(), properties=pika.BasicProperties(headers=headers))
    assert get_all(ch, q) == [b"int"]
    assert get_all(ch, q_bool) == [b"flag-bool"]
    ch.exchange_delete(ex)


def test_headers_exchange_invalid_x_match_rejected(connect, uid):
    # RabbitMQ validates x-match: only all, any, all-with-x, any-with-x -> else 406 on queue.bind
    ex = f"headers-bad-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_bind(q, ex, arguments={"x-match": "some", "a": "b"})
    assert ei.value.reply_code == 406
    conn.channel().exchange_delete(ex)


def test_headers_exchange(connect, uid):
    ex = f"headers-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(ex, exchange_type="headers")
    q_all = ch.queue_declare("", exclusive=True).method.queue
    q_any = ch.queue_declare("", exclusive=True).method.queue
    q_default = ch.queue_declare("", exclusive=True).method.queue  # no x-match: 'all'
    q_int = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_all, ex, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, ex, arguments={"x-match": "any", "format": "pdf", "type": "log"})
    ch.queue_bind(q_default, ex, arguments={"format": "pdf", "type": "report"})
    ch.queue_bind(q_int, ex, arguments={"x-match": "all", "n": 1})

    msgs = {
        "m1": {"format": "pdf", "type": "report"},
        "m2": {"format": "pdf", "type": "log"},
        "m3": {"format": "zip", "type": "report"},
        "m4": {"format": "pdf"},
        "m5": None,
        "m6": {"format": "pdf", "type": "report", "extra": "x"},
        "m7": {"type": "log"},
        "m8": {"n": 1},
        "m9": {"n": "1"},
        "m10": {"format": "PDF", "type": "report"},
    }
    for name, headers in msgs.items():
        ch.basic_publish(ex, "any-routing-key", name.encode(), properties=pika.BasicProperties(headers=headers))
    assert get_all(ch, q_all) == [b"m1", b"m6"]
    assert get_all(ch, q_default) == [b"m1", b"m6"]
    assert get_all(ch, q_any) == [b"m1", b"m2", b"m4", b"m6", b"m7"]
    assert get_all(ch, q_int) == [b"m8"]

    # x-match all/any ignore binding keys starting with "x-"
    q_xany = ch.queue_declare("", exclusive=True).method.queue
    q_xall = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_xany, ex, arguments={"x-match": "any", "x-tag": "a"})
    ch.queue_bind(q_xall, ex, arguments={"x-match": "all", "x-tag": "a", "k": "v"})
    ch.basic_publish(ex, "", b"x1", properties=pika.BasicProperties(headers={"x-tag": "a"}))
    ch.basic_publish(ex, "", b"x2", properties=pika.BasicProperties(headers={"x-tag": "b", "k": "v"}))
    assert get_all(ch, q_xany) == []
    assert get_all(ch, q_xall) == [b"x2"]
    for q in (q_all, q_any, q_default, q_int):
        get_all(ch, q)

    # unbinding needs the same arguments
    ch.queue_unbind(q_any, ex, arguments={"x-match": "any", "format": "pdf", "type": "log"})
    ch.basic_publish(ex, "", b"after", properties=pika.BasicProperties(headers={"format": "pdf"}))
    assert get_all(ch, q_any) == []
    ch.exchange_delete(ex)


# -- transactions --------------------------------------------------------------------------------------


def test_tx_publish_commit_rollback(connect, uid):
    q = f"tx-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    other = connect()
    ch.tx_select()
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    assert passive_count(other, q) == (0, 0)
    ch.tx_commit()
    assert passive_count(other, q) == (2, 0)
    ch.basic_publish("", q, b"c")
    ch.tx_rollback()
    assert passive_count(other, q) == (2, 0)
    ch.tx_commit()  # nothing pending: "c" is gone for good
    assert passive_count(other, q) == (2, 0)
    och = other.channel()
    assert get_all(och, q) == [b"a", b"b"]
    och.queue_delete(q)


def test_tx_acks_take_effect_on_commit(connect, uid):
    q = f"tx-ack-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    ch.tx_select()
    m0, _p, b0 = ch.basic_get(q)
    m1, _p, b1 = ch.basic_get(q)
    assert (b0, b1) == (b"0", b"1")
    ch.basic_ack(m0.delivery_tag)
    ch.tx_rollback()  # the ack is forgotten: 0 is still unacked on this channel
    ch.basic_ack(m1.delivery_tag)
    ch.tx_commit()  # 1 is acked for good
    ch.close()  # 0 goes back
    other = connect()
    assert passive_count(other, q) == (2, 0)

    ch2 = conn.channel()
    ch2.tx_select()
    m, _p, b = ch2.basic_get(q)
    assert b == b"0" and m.redelivered is True
    ch2.basic_ack(m.delivery_tag)
    assert passive_count(other, q) == (1, 0)
    ch2.tx_commit()
    ch2.close()
    assert passive_count(other, q) == (1, 0)  # the ack counted: 0 is gone
    och = other.channel()
    assert get_all(och, q) == [b"2"]
    och.queue_delete(q)


def test_tx_reject_requeue_on_commit(connect, uid):
    q = f"tx-nack-{uid}"
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    ch.tx_select()
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    other = connect()
    assert passive_count(other, q) == (0, 0)  # not yet requeued
    ch.tx_commit()
    assert passive_count(other, q) == (1, 0)
    m, _p, b = ch.basic_get(q, auto_ack=True)
    assert b == b"x" and m.redelivered is True
    ch.tx_commit()
    ch.queue_delete(q)
