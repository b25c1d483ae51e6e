"""Publisher flow control, paging of transient backlogs, and the connection limits.

Real brokers and real clients (pika, raw sockets, the management API); the flow objects of
broker/flow.py are also driven in-process at the end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqp_raw import broker_socket_buffers
from broker.flow import FLOW_THRESHOLD, NO_FLOW, STALL_AFTER, PublisherFlow, QueueFlow
from protocol import framing

ROOT = Path(__file__).resolve().parent.parent
MGMT_LINE = re.compile(r"management API listening on http://([^:\s]+):(\d+)")


def mgmt_base(b) -> str:
    """The management API's base URL; the broker's log tells its port."""
    deadline = time.monotonic() + 10
    found = []
    while time.monotonic() < deadline and not found:
        found = MGMT_LINE.findall(b.log_text())
        time.sleep(0.02 if not found else 0)
    assert found, "no management API in the log"
    host, port = found[-1]
    return f"http://{host}:{port}"


def api(b, path: str):
    """GET a management API path as guest."""
    req = urllib.request.Request(mgmt_base(b) + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def connect(b, **kw) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, connection_attempts=1, **kw))


def scratch_dir(b, queue: str, vhost: str = "/") -> Path:
    h = hashlib.sha256(f"{vhost}\x00{queue}".encode()).hexdigest()[:32]
    return Path(b.data_dir) / "scratch" / "queues" / h


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- flow control ---------------------------------------------------------------


def test_fast_publisher_is_held_in_flow_until_its_consumer_catches_up(fresh_broker):
    b = fresh_broker
    n = 12_000
    setup = connect(b)
    setup.channel().queue_declare("flowq")
    setup.close()

    fast = threading.Event()
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            conn = connect(b)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=20)
            deadline = time.monotonic() + 120
            for method, _props, body in ch.consume("flowq", inactivity_timeout=0.1):
                if time.monotonic() > deadline or len(received) >= n:
                    break
                if method is None:
                    continue
                received.append(int(body))
                ch.basic_ack(method.delivery_tag)
                if not fast.is_set():
                    time.sleep(0.005)  # about 200 messages a second
            conn.close()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def publish() -> None:
        try:
            conn = connect(b)
            ch = conn.channel()
            for i in range(n):
                ch.basic_publish("", "flowq", str(i).encode())
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    tc = threading.Thread(target=consume)
    tc.start()
    wait_for(lambda: api(b, "/api/queues/%2F/flowq")["consumers"] == 1, 10, "the consumer")
    tp = threading.Thread(target=publish)
    tp.start()
    try:
        states: set[str] = set()
        most_ready = 0

        def in_flow() -> bool:
            nonlocal most_ready
            for c in api(b, "/api/connections"):
                states.add(c["state"])
            most_ready = max(most_ready, api(b, "/api/queues/%2F/flowq")["messages_ready"])
            return "flow" in states

        wait_for(in_flow, 30, "a connection in the 'flow' state")
        wait_for(lambda: cli_shows_flow(b), 30, "list-connections to show a connection in flow")
        # held: the queue does not grow much past the mark while the consumer is slow
        for _ in range(10):
            most_ready = max(most_ready, api(b, "/api/queues/%2F/flowq")["messages_ready"])
            time.sleep(0.1)
        assert tp.is_alive(), "the publisher finished although its consumer was slow"
        assert most_ready <= FLOW_THRESHOLD + 300, most_ready
    finally:
        fast.set()
    tp.join(120)
    tc.join(120)
    assert not errors, errors
    assert received == list(range(n))
    assert all(c["state"] == "running" for c in api(b, "/api/connections"))


def cli_shows_flow(b) -> bool:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BROKER_URL=mgmt_base(b))
    r = subprocess.run([sys.executable, "-m", "cli", "list-connections", "name", "state"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return any(line.split()[-1:] == ["flow"] for line in r.stdout.splitlines()[1:])


def test_queue_without_consumers_is_not_behind(fresh_broker):
    """A queue with no consumer absorbs a backlog: its publisher is never held."""
    b = fresh_broker
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("absorb")
    for _i in range(FLOW_THRESHOLD * 3):
        ch.basic_publish("", "absorb", b"x")
    states = {c["state"] for c in api(b, "/api/connections")}
    assert states == {"running"}, states
    assert ch.queue_declare("absorb", passive=True).method.message_count == FLOW_THRESHOLD * 3
    conn.close()


@pytest.mark.parametrize("threshold", [0, 3000])
def test_flow_threshold_option(broker_factory, threshold):
    """``--flow-threshold`` moves the mark (0 turns flow control off): a queue whose consumer
    takes 50 messages a second fills to 5 times the default mark and its publisher is never
    held (at the default it would wait about 40 s for the consumer to catch up)."""
    b = broker_factory(extra=["--flow-threshold", str(threshold)])
    done = threading.Event()

    def slow_consumer() -> None:
        conn = connect(b)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        for method, _props, _body in ch.consume("held", inactivity_timeout=0.05):
            if done.is_set():
                break
            if method is not None:
                time.sleep(0.02)
                ch.basic_ack(method.delivery_tag)
        conn.close()

    pub = connect(b)
    pch = pub.channel()
    pch.queue_declare("held")
    tc = threading.Thread(target=slow_consumer)
    tc.start()
    try:
        wait_for(lambda: api(b, "/api/queues/%2F/held")["consumers"] == 1, 10, "the consumer")
        n = FLOW_THRESHOLD * 5
        started = time.monotonic()
        for i in range(n):
            pch.basic_publish("", "held", str(i).encode())
        ready = pch.queue_declare("held", passive=True).method.message_count  # a round trip
        took = time.monotonic() - started
        assert took < 15, f"the publisher was held for {took:.1f} s"
        assert ready > FLOW_THRESHOLD * 3, ready
        assert {c["state"] for c in api(b, "/api/connections")} == {"running"}
    finally:
        done.set()
        tc.join(30)
    pub.close()


def test_tcp_buffer_options_apply_to_every_connection(broker_factory):
    """``--tcp-recbuf`` / ``--tcp-sndbuf`` (RabbitMQ's tcp_listen_options) size the broker's side
    of each AMQP connection; Linux reports twice the value set."""
    b = broker_factory(extra=["--tcp-recbuf", "16384", "--tcp-sndbuf", "32768"])
    conns = [connect(b) for _ in range(2)]
    assert broker_socket_buffers(b.port) == [(32768, 65536)] * 2
    for c in conns:
        c.close()


# -- paging of transient backlogs --------------------------------------------------


def test_transient_backlog_is_paged_to_scratch_log_and_dropped_once_drained(fresh_broker):
    b = fresh_broker
    n = 6000  # past the 4096 messages a queue keeps as objects
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare("backlog")  # not durable
    for i in range(n - 50):
        ch.basic_publish("", "backlog", f"m{i:05d}".encode())
    # persistent messages into a paging transient queue are confirmed (pika raises on a nack)
    ch.confirm_delivery()
    for i in range(n - 50, n):
        ch.basic_publish("", "backlog", f"m{i:05d}".encode(), pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare("backlog", passive=True).method.message_count == n
    d = scratch_dir(b, "backlog")
    segs = wait_for(lambda: [p for p in d.glob("*.seg") if p.stat().st_size > 0], 10, "a scratch segment")
    # the messages past the in-memory part are on disk, not in the broker's memory
    assert sum(p.stat().st_size for p in segs) >= (n - 4096) * 20
    ch.basic_qos(prefetch_count=500)
    got = []
    for method, _p, body in ch.consume("backlog", inactivity_timeout=5):
        assert method is not None, f"stalled after {len(got)} messages"
        got.append(body.decode())
        if len(got) % 250 == 0 or len(got) == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if len(got) == n:
            break
    ch.cancel()
    assert got == [f"m{i:05d}" for i in range(n)]
    wait_for(lambda: not d.exists(), 10, "the drained queue's scratch log to go")
    conn.close()


def test_large_transient_messages_are_paged_by_bytes(broker, uid):
    b = broker
    name = f"big-{uid}"
    conn = connect(b)
    ch = conn.channel()
    ch.queue_declare(name)
    body = b"b" * (1024 * 1024)
    for _ in range(24):  # 24 MiB: past the 16 MiB a queue keeps in memory
        ch.basic_publish("", name, body)
    d = scratch_dir(b, name)
    wait_for(lambda: any(p.stat().st_size >= 1024 * 1024 for p in d.glob("*.seg")), 10, "a scratch segment")
    ch.queue_purge(name)
    wait_for(lambda: not d.exists(), 10, "the purged queue's scratch log to go")
    conn.close()


def test_scratch_store_is_emptied_at_start(fresh_broker):
    b = fresh_broker
    b.stop()
    stale = Path(b.data_dir) / "scratch" / "queues" / ("0" * 32)
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "00000001.seg").write_bytes(b"left by an earlier process")
    b.start()
    assert not stale.exists()
    conn = connect(b)
    conn.channel().queue_declare("after-restart")
    conn.close()


# -- connection limits ----------------------------------------------------------------


def test_max_connections_refuses_the_next_one_with_rabbitmqs_text(broker_factory):
    b = broker_factory(extra=["--max-connections", "3", "--management-port", "-1"])
    conns = [connect(b) for _ in range(3)]
    # pika reports a close during the handshake as a probable access refusal, with the broker's words
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as err:
        connect(b)
    assert "(530) 'NOT_ALLOWED - connection refused: node connection limit (3) is reached'" in str(err.value)
    assert all(c.is_open for c in conns)
    conns.pop().close()
    again = wait_for(lambda: _try_connect(b), 10, "a free slot after a close")
    again.close()
    for c in conns:
        c.close()


def _try_connect(b):
    try:
        return connect(b)
    except pika.exceptions.AMQPConnectionError:
        return None


def test_client_sending_a_byte_at_a_time_is_dropped_at_the_handshake_timeout(broker_factory):
    b = broker_factory(extra=["--handshake-timeout", "2", "--management-port", "-1"])
    s = socket.create_connection(("127.0.0.1", b.port))
    s.settimeout(0.25)
    start_ok = framing.PROTOCOL_HEADER + bytes(range(256)) * 4  # whatever: it never completes
    t0 = time.monotonic()
    closed_at = None
    try:
        for byte in start_ok:
            try:
                s.send(bytes([byte]))
            except OSError:
                closed_at = time.monotonic()
                break
            try:
                if s.recv(65536) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_at = time.monotonic()
                break
            if time.monotonic() - t0 > 15:
                break
    finally:
        s.close()
    assert closed_at is not None, "a client trickling bytes held its connection past the handshake timeout"
    assert 1.5 <= closed_at - t0 <= 8.0, closed_at - t0
    assert "handshake timeout" in b.log_text()


def test_frames_before_tune_ok_are_held_to_8192_bytes(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    try:
        s.sendall(framing.PROTOCOL_HEADER)
        s.recv(65536)  # Connection.Start
        payload = b"\x00\x0a\x00\x0b" + b"\x00" * 9000  # a Start-Ok far over the pre-auth limit
        s.sendall(bytes([1, 0, 0]) + len(payload).to_bytes(4, "big") + payload + b"\xce")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data[:1] == b"\x01" and b"FRAME_ERROR" in data, data[:200]


# -- the flow objects, in-process -------------------------------------------------------


class FakeQueue:
    def __init__(self) -> None:
        self.flow = QueueFlow()
        self.delivered = 0
        self.consumers: list = []


class FakeConsumer:
    def __init__(self, conn: object) -> None:
        self.channel = type("Ch", (), {"conn": conn})()


def test_flow_threshold_zero_is_never_behind():
    assert QueueFlow(0).high == NO_FLOW
    f = QueueFlow(100)
    assert (f.high, f.low) == (100, 50)


def test_flow_objects_hysteresis_and_stall():
    async def run() -> None:
        loop = asyncio.get_running_loop()
        events: list[str] = []
        pf = PublisherFlow(loop, lambda: events.append("pause"), lambda: events.append("resume"))
        q = FakeQueue()
        base = QueueFlow.behind_count
        pf.charge([q])
        assert events == [] and not pf.throttled  # nothing behind: no charge
        q.flow.check_behind(q.delivered)
        assert q.flow.behind and QueueFlow.behind_count == base + 1
        pf.charge([q])
        pf.charge([q])
        assert events == ["pause"] and pf.throttled
        q.flow.check_caught_up(FLOW_THRESHOLD // 2 + 1)
        assert pf.throttled  # hysteresis: not yet
        q.flow.check_caught_up(FLOW_THRESHOLD // 2)
        assert events == ["pause", "resume"] and not pf.throttled
        assert QueueFlow.behind_count == base
        # a queue that delivers nothing is stalled, not behind: the publisher goes on
        q.flow.check_behind(q.delivered)
        pf.charge([q])
        await asyncio.sleep(STALL_AFTER + 0.3)
        assert events == ["pause", "resume", "pause", "resume"]
        q.flow.check_behind(q.delivered)
        assert not q.flow.behind  # until it delivers again
        q.delivered += 1
        q.flow.check_behind(q.delivered)
        assert q.flow.behind
        pf.charge([q])
        pf.close()
        assert not q.flow.waiters
        # a connection that consumes from the behind queue is not held back by it
        me = object()
        q.consumers.append(FakeConsumer(me))
        pf2 = PublisherFlow(loop, lambda: events.append("pause2"), lambda: events.append("resume2"))
        pf2.charge([q], me)
        assert not pf2.throttled and "pause2" not in events
        pf2.charge([q], object())
        assert pf2.throttled
        pf2.close()
        q.flow.caught_up()
        assert QueueFlow.behind_count == base

    asyncio.run(run())
