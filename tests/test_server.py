"""The broker process as a whole: CLI, shutdown, embedding, flow control, no-wait methods."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pika
import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from conftest import ROOT


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def params(port: int, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, **kw)


def test_version():
    out = subprocess.run([sys.executable, "-m", "cli", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    assert "0.1.0" in out.stdout


def test_sigterm_closes_clients_with_320(fresh_broker):
    conn = pika.BlockingConnection(params(fresh_broker.port))
    ch = conn.channel()
    ch.queue_declare("q")
    fresh_broker.proc.send_signal(signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        for _ in range(100):
            conn.process_data_events(0.1)
    assert ei.value.reply_code == 320
    assert ei.value.reply_text == "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    assert fresh_broker.proc.wait(10) == 0
    assert "stopping" in fresh_broker.log_text()


def test_sigint_stops_cleanly(fresh_broker):
    fresh_broker.proc.send_signal(signal.SIGINT)
    assert fresh_broker.proc.wait(10) == 0


def test_port_in_use_says_what_to_do(broker, broker_factory):
    b = broker_factory(start=False)
    with pytest.raises(RuntimeError) as ei:
        b.start(port=broker.port)
    assert "cannot listen" in str(ei.value)


def test_embedded_broker(tmp_path):
    """broker.server.Broker runs inside an existing loop, on port 0."""
    from broker.server import Broker

    async def main() -> tuple[bytes, int]:
        b = Broker(host="127.0.0.1", port=0, data_dir=str(tmp_path / "data"))
        await b.start()
        assert b.port > 0
        import aio_pika

        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{b.port}/")
        ch = await conn.channel()
        q = await ch.declare_queue("embedded")
        await ch.default_exchange.publish(aio_pika.Message(b"inside"), routing_key="embedded")
        msg = await q.get(timeout=5)
        await msg.ack()
        await conn.close()
        await b.stop()
        return msg.body, b.port

    body, port = asyncio.run(main())
    assert body == b"inside"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_default_user_from_environment(broker_factory):
    b = broker_factory(env={"BROKER_DEFAULT_USER": "envuser", "BROKER_DEFAULT_PASS": "envpass"})
    conn = pika.BlockingConnection(params(b.port, credentials=pika.PlainCredentials("envuser", "envpass")))
    assert conn.is_open
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params(b.port))


def test_nowait_methods(broker, uid):
    """Every method with a no-wait form works without a reply (then a round trip checks it)."""
    from pika import spec as S

    conn = pika.BlockingConnection(params(broker.port))
    ch = conn.channel()
    send = ch._impl._send_method
    x, x2, q = f"nw-x-{uid}", f"nw-x2-{uid}", f"nw-q-{uid}"
    send(S.Exchange.Declare(exchange=x, type="fanout", nowait=True))
    send(S.Exchange.Declare(exchange=x2, type="fanout", nowait=True))
    send(S.Exchange.Bind(destination=x2, source=x, nowait=True))
    send(S.Queue.Declare(queue=q, nowait=True))
    send(S.Queue.Bind(queue=q, exchange=x2, nowait=True))
    ok = ch.queue_declare(q, passive=True)  # a round trip: all of the above were applied
    assert ok.method.message_count == 0
    ch.basic_publish(x, "", b"through two exchanges")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    send(S.Queue.Purge(queue=q, nowait=True))
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    send(S.Exchange.Unbind(destination=x2, source=x, nowait=True))
    ch.basic_publish(x, "", b"not routed any more")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    send(S.Basic.Consume(queue=q, consumer_tag="nw-ctag", no_ack=True, nowait=True))
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    send(S.Basic.Cancel(consumer_tag="nw-ctag", nowait=True))
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0
    send(S.Queue.Delete(queue=q, nowait=True))
    send(S.Exchange.Delete(exchange=x, nowait=True))
    send(S.Exchange.Delete(exchange=x2, nowait=True))
    ch_c = conn.channel()
    ch_c._impl._send_method(S.Confirm.Select(nowait=True))
    ch2 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch2.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    ch3 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch3.exchange_declare(x, passive=True)
    conn.close()


def test_update_secret(broker):
    conn = pika.BlockingConnection(params(broker.port))
    conn.update_secret("new-token", "rotation")
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)
    conn.close()


def test_slow_consumer_is_not_buffered_without_bound(fresh_broker):
    """Deliveries to a consumer that does not read wait in the queue, not in broker buffers."""
    n, size = 4000, 20_000
    pub = pika.BlockingConnection(params(fresh_broker.port))
    pch = pub.channel()
    pch.queue_declare("slow")
    body = os.urandom(size)
    for _ in range(n):
        pch.basic_publish("", "slow", body)
    assert pch.queue_declare("slow", passive=True).method.message_count == n
    pid = fresh_broker.proc.pid
    before = rss_kb(pid)

    con = pika.BlockingConnection(params(fresh_broker.port))
    cch = con.channel()
    got = []
    cch.basic_consume("slow", lambda c, m, p, b: got.append(len(b)), auto_ack=True)
    # the consumer now reads nothing for a while; the broker must not copy the backlog into buffers
    time.sleep(2.0)
    during = rss_kb(pid)
    assert during - before < 30_000, f"broker RSS grew by {during - before} kB while the consumer stalled"
    remaining = pch.queue_declare("slow", passive=True).method.message_count
    assert remaining > n // 2, f"only {remaining} of {n} still queued: deliveries were buffered"
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        con.process_data_events(0.2)
    assert len(got) == n and set(got) == {size}
    con.close()
    pub.close()


def _raw_open(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"AMQP\x00\x00\x09\x01")
    buf = b""

    def read_method():
        nonlocal buf
        while True:
            if len(buf) >= 7:
                size = struct.unpack(">I", buf[3:7])[0]
                if len(buf) >= size + 8:
                    used, _ch, fr = pframe.unmarshal(buf[: size + 8])
                    buf = buf[size + 8 :]
                    return fr
            chunk = s.recv(65536)
            assert chunk
            buf += chunk

    assert isinstance(read_method(), C.Connection.Start)
    s.sendall(pframe.marshal(C.Connection.StartOk(client_properties={}, response="\0guest\0guest"), 0))
    tune = read_method()
    s.sendall(pframe.marshal(C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0))
    s.sendall(pframe.marshal(C.Connection.Open(virtual_host="/"), 0))
    assert isinstance(read_method(), C.Connection.OpenOk)
    s.sendall(pframe.marshal(C.Channel.Open(), 1))
    assert isinstance(read_method(), C.Channel.OpenOk)
    s.sendall(pframe.marshal(C.Confirm.Select(), 1))
    assert isinstance(read_method(), C.Confirm.SelectOk)
    return s


def test_publisher_that_does_not_read_is_throttled(fresh_broker):
    """A publisher that never reads what the broker sends it (here: the returns of
    its mandatory unroutable publishes) is read more slowly, and the broker's
    memory stays flat instead of buffering its output."""
    s = _raw_open(fresh_broker.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    body = b"x" * 4000
    one = b"".join(
        (
            pframe.marshal(C.Basic.Publish(exchange="amq.fanout", routing_key="", mandatory=True), 1),
            pframe.marshal(pheader.ContentHeader(body_size=len(body)), 1),
            pframe.marshal(pbody.ContentBody(body), 1),
        )
    )
    batch = one * 64
    s.setblocking(False)
    sent = 0
    deadline = time.time() + 4.0
    stalled_since = None
    pending = memoryview(b"")
    while time.time() < deadline:
        if not pending:
            pending = memoryview(batch)
        try:
            n = s.send(pending)
            pending = pending[n:]
            sent += n
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 1.0:
                break
            time.sleep(0.01)
    assert stalled_since is not None, f"sent {sent} bytes without ever being throttled"
    before = rss_kb(fresh_broker.proc.pid)
    time.sleep(0.5)
    assert rss_kb(fresh_broker.proc.pid) - before < 20_000
    assert rss_kb(fresh_broker.proc.pid) < 200_000
    # once the client reads again, the broker carries on: all returns arrive
    s.setblocking(True)
    s.settimeout(5)
    got = 0
    try:
        while got < sent:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except TimeoutError:
        pass
    assert got >= sent * 0.9  # returns carry the whole message back
    s.close()


def _raw_tune(port: int, user: str = "guest", password: str = "guest") -> int:
    """The heartbeat a broker offers in Connection.Tune (raw handshake)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        buf = b""
        frames = []
        while len(frames) < 2:
            buf += s.recv(65536)
            while len(buf) >= 7:
                size = struct.unpack(">I", buf[3:7])[0]
                if len(buf) < size + 8:
                    break
                frames.append(pframe.unmarshal(buf[: size + 8])[2])
                buf = buf[size + 8 :]
            if len(frames) == 1 and isinstance(frames[0], C.Connection.Start):
                s.sendall(pframe.marshal(C.Connection.StartOk(client_properties={}, response=f"\0{user}\0{password}"), 0))
        assert isinstance(frames[1], C.Connection.Tune)
        return frames[1].heartbeat
    finally:
        s.close()
