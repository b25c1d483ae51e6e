"""The consumer timeout (RabbitMQ 4.3): a delivery left unacknowledged too long.

Against real brokers started with short timeouts, with pika (advertises
``consumer_cancel_notify``, never answers a server Basic.Cancel), aio-pika
(answers it with Basic.Cancel-Ok when the server advertises
``accept_consumer_cancel_ok``), pika posing as a client without
``consumer_cancel_notify``, and two real Celery workers, one stuck.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import time

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from test_config import run_cli
from test_tutorials import drain, params

TIMEOUT_TEXT = (
    "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: {ms} ms. "
    "This timeout value can be configured, see consumers doc guide to learn more"
)


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    """A broker whose default consumer timeout is 1 s."""
    from conftest import _make

    b = _make(tmp_path_factory.mktemp("ctimeout"), extra=["--consumer-timeout", "1000"]).start()
    yield b
    b.stop()


def _consume_one(conn, ch, queue, arguments=None):
    """Consume without acking; returns (deliveries, cancels) lists filled as frames arrive."""
    got: list = []
    cancels: list = []
    ch.add_on_cancel_callback(lambda frame: cancels.append((time.monotonic(), frame.method.consumer_tag)))
    tag = ch.basic_consume(queue, lambda c, m, p, b: got.append((time.monotonic(), m)), arguments=arguments)
    return tag, got, cancels


def _wait_closed(conn, ch, timeout: float = 10.0):
    """Process I/O until the broker closes ``ch``; returns its (code, text)."""
    reasons: list = []
    ch._impl.add_on_close_callback(lambda _ch, reason: reasons.append(reason))
    drain(conn, lambda: reasons, timeout=timeout)
    return reasons[0].reply_code, reasons[0].reply_text


def test_server_advertises_accept_consumer_cancel_ok(tb):
    conn = pika.BlockingConnection(params(tb))
    try:
        caps = conn._impl.server_capabilities
        assert caps["accept_consumer_cancel_ok"] is True
        assert caps["consumer_cancel_notify"] is True
    finally:
        conn.close()


def test_timed_out_consumer_is_cancelled_and_its_messages_requeued(tb, uid):
    q = f"ct-{uid}"
    conn = pika.BlockingConnection(params(tb))
    other = pika.BlockingConnection(params(tb))
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        ch.basic_qos(prefetch_count=5)
        for i in range(3):
            ch.basic_publish("", q, f"m{i}".encode())
        tag, got, cancels = _consume_one(conn, ch, q)
        drain(conn, lambda: len(got) == 3)
        delivered_at = got[0][0]
        drain(conn, lambda: cancels, timeout=10)
        waited = cancels[0][0] - delivered_at
        assert cancels[0][1] == tag
        assert 0.9 <= waited < 4.0, waited  # 1 s, at most a tick (and a loaded machine) late
        assert ch.is_open and conn.is_open
        # the three deliveries went back to the queue, redelivered, in order
        och = other.channel()
        redone = []
        for _ in range(3):
            m, _p, body = och.basic_get(q, auto_ack=True)
            assert m is not None and m.redelivered
            redone.append(body)
        assert redone == [b"m0", b"m1", b"m2"]
        # a late ack of a timed-out delivery is ignored: the channel stays open
        ch.basic_ack(got[0][1].delivery_tag)
        ch.basic_ack(got[2][1].delivery_tag, multiple=True)
        ch.queue_declare(q, passive=True)
        assert ch.is_open
        # the cancelled consumer gets nothing more
        ch.basic_publish("", q, b"after")
        conn.process_data_events(time_limit=0.5)
        assert len(got) == 3
    finally:
        other.close()
        conn.close()


def test_a_consumer_that_acks_in_time_is_never_cancelled(tb, uid):
    q = f"ct-ok-{uid}"
    conn = pika.BlockingConnection(params(tb))
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        cancels: list = []
        ch.add_on_cancel_callback(cancels.append)
        seen: list = []

        def on_msg(c, m, p, body):
            seen.append(body)
            conn.call_later(0.3, lambda: c.basic_ack(m.delivery_tag))

        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, on_msg)
        for i in range(6):
            ch.basic_publish("", q, str(i).encode())
        drain(conn, lambda: len(seen) == 6, timeout=10)  # 6 x 0.3 s: longer than the 1 s timeout
        conn.process_data_events(time_limit=1.2)
        assert not cancels and ch.is_open
    finally:
        conn.close()


def test_timed_out_consumer_is_forgotten_after_the_wait_without_cancel_ok(tb, uid):
    """pika never answers the server's Basic.Cancel: the tag is freed after the wait."""
    q = f"ct-wait-{uid}"
    conn = pika.BlockingConnection(params(tb))
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        ch.basic_publish("", q, b"x")
        tag, got, cancels = _consume_one(conn, ch, q, arguments=None)
        drain(conn, lambda: cancels, timeout=10)
        conn.process_data_events(time_limit=5.5)
        # the same consumer tag can be used again on the same channel: the old one is gone
        again: list = []
        ch.basic_consume(q, lambda c, m, p, b: again.append(m), consumer_tag=tag, auto_ack=True)
        drain(conn, lambda: again)
        assert again[0].redelivered
    finally:
        conn.close()


def test_aio_pika_answers_cancel_ok_and_the_consumer_is_gone_at_once(tb, uid):
    async def main() -> None:
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{tb.port}/")
        try:
            ch = await conn.channel()
            q = await ch.declare_queue(f"ct-aio-{uid}")
            await ch.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=q.name)
            first: asyncio.Future = asyncio.get_running_loop().create_future()

            async def hold(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                if not first.done():
                    first.set_result(msg)

            underlay = await ch.get_underlay_channel()
            cancelled = asyncio.Event()
            underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.set())
            tag = await q.consume(hold, consumer_tag="worker-1")
            await asyncio.wait_for(first, 5)
            # after 1 s the server cancels; aiormq answers Basic.Cancel-Ok before it runs the
            # callbacks, so the tag is free again at once, long before the server's 5 s wait
            await asyncio.wait_for(cancelled.wait(), 10)
            cancelled_at = time.monotonic()
            again: asyncio.Future = asyncio.get_running_loop().create_future()

            async def take(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                if not again.done():
                    again.set_result(msg)

            assert await q.consume(take, consumer_tag=tag, no_ack=True) == tag
            assert time.monotonic() - cancelled_at < 2
            msg = await asyncio.wait_for(again, 5)
            assert msg.redelivered and msg.body == b"hello"
            assert not ch.is_closed
        finally:
            await conn.close()

    asyncio.run(main())


def test_client_without_cancel_notify_gets_its_channel_closed(tb, uid):
    q = f"ct-nocap-{uid}"
    caps = {"publisher_confirms": True, "basic.nack": True, "exchange_exchange_bindings": True,
            "connection.blocked": True, "authentication_failure_close": True}
    conn = pika.BlockingConnection(params(tb, client_properties={"capabilities": caps}))
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        ch.basic_publish("", q, b"x")
        _tag, got, _c = _consume_one(conn, ch, q)
        assert _wait_closed(conn, ch) == (406, TIMEOUT_TEXT.format(ms=1000))
        assert conn.is_open
        ch2 = conn.channel()
        m, _p, _b = ch2.basic_get(q, auto_ack=True)
        assert m is not None and m.redelivered
    finally:
        conn.close()


def test_basic_get_unacked_closes_the_channel(tb, uid):
    q = f"ct-get-{uid}"
    conn = pika.BlockingConnection(params(tb))
    try:
        ch = conn.channel()
        ch.queue_declare(q, arguments={"x-consumer-timeout": 500})
        ch.basic_publish("", q, b"x")
        m, _p, _b = ch.basic_get(q)
        assert m is not None
        assert _wait_closed(conn, ch) == (406, TIMEOUT_TEXT.format(ms=500))
        assert conn.is_open
    finally:
        conn.close()


def test_consumer_argument_wins_over_queue_argument(broker, uid):
    """Default broker (30 min): the queue says 60 s, the consumer says 700 ms."""
    q = f"ct-arg-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        ch.queue_declare(q, arguments={"x-consumer-timeout": 60_000})
        ch.basic_publish("", q, b"x")
        tag, got, cancels = _consume_one(conn, ch, q, arguments={"x-consumer-timeout": 700})
        drain(conn, lambda: got)
        drain(conn, lambda: cancels, timeout=10)
        assert 0.6 <= cancels[0][0] - got[0][0] < 4.0
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("where", "value", "detail"),
    [
        ("queue", -5, "{value_negative,-5}"),
        ("queue", "soon", '"expected integer, got longstr"'),
        ("consumer", -1, "{value_negative,-1}"),
        ("consumer", "soon", '"expected integer, got longstr"'),
    ],
)
def test_bad_x_consumer_timeout_is_refused(broker, uid, where, value, detail):
    q = f"ct-bad-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            if where == "queue":
                ch.queue_declare(q, arguments={"x-consumer-timeout": value})
            else:
                ch.queue_declare(q, auto_delete=True)
                ch.basic_consume(q, lambda *a: None, arguments={"x-consumer-timeout": value})
        assert e.value.reply_code == 406
        assert e.value.reply_text == (
            f"PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue '{q}' in vhost '/': {detail}"
        )
    finally:
        conn.close()


def test_close_channel_response(broker_factory, uid):
    b = broker_factory(extra=["--consumer-timeout-response", "close-channel"],
                       env={"BROKER_CONSUMER_TIMEOUT": "800"})
    conn = pika.BlockingConnection(params(b))
    try:
        ch = conn.channel()
        cancels: list = []
        ch.add_on_cancel_callback(cancels.append)
        ch.queue_declare("q")
        ch.basic_publish("", "q", b"x")
        ch.basic_consume("q", lambda *a: None)
        assert _wait_closed(conn, ch) == (406, TIMEOUT_TEXT.format(ms=800))
        assert not cancels and conn.is_open
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--consumer-timeout", "0"], {}, "'--consumer-timeout'"),
        (["--consumer-timeout-response", "drop"], {}, "'--consumer-timeout-response'"),
        ([], {"BROKER_CONSUMER_TIMEOUT": "soon"}, "BROKER_CONSUMER_TIMEOUT"),
    ],
)
def test_bad_consumer_timeout_settings_stop_the_start(tmp_path, args, env, needle):
    r = run_cli(["serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--management-port", "-1",
                 "--metrics-port", "-1", *args], env=env)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


CELERY_TASKS = '''
import os
import time

from celery import Celery

app = Celery("{module}", broker="amqp://guest:guest@127.0.0.1:{port}//", backend="rpc://")
app.conf.update(
    task_default_queue="{queue}",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    broker_heartbeat=0,
    worker_hijack_root_logger=False,
)


@app.task(bind=True)
def work(self, marker):
    """The first run hangs (a stuck worker); later runs finish."""
    with open(marker, "a") as f:
        f.write(f"{{os.getpid()}} {{int(bool(self.request.delivery_info.get('redelivered')))}}\\n")
    if len(open(marker).read().splitlines()) == 1:
        time.sleep(60)
    return os.getpid()
'''


@pytest.mark.slow
def test_celery_stuck_worker_task_goes_to_another_worker(broker_factory, tmp_path, uid):
    pytest.importorskip("celery")
    from test_celery import Workers

    b = broker_factory(extra=["--consumer-timeout", "2000"])
    module, queue = f"cttasks_{uid}", f"ct-celery-{uid}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(CELERY_TASKS.format(module=module, port=b.port,
                                                                                queue=queue)))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(module)
    finally:
        sys.path.remove(str(tmp_path))
    workers = Workers(tmp_path, module, queue)
    marker = tmp_path / "runs.txt"
    try:
        w1 = workers.start("stuck")
        r = mod.work.delay(str(marker))
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline, "task did not start"
            time.sleep(0.05)
        w2 = workers.start("spare")
        assert r.get(timeout=30) == w2.pid
        runs = [line.split() for line in marker.read_text().splitlines()]
        assert [int(p) for p, _ in runs] == [w1.pid, w2.pid]
        assert runs[1][1] == "1"  # redelivered
    except BaseException:
        print("worker logs:\n" + workers.log_tail())
        raise
    finally:
        workers.stop_all()
        mod.app.close()
        sys.modules.pop(module, None)


def test_consumer_timeout_policy_applies_to_an_existing_queue(broker, uid):
    """The consumer-timeout policy key reaches the queue through its effective settings."""
    from test_management_api import Http, mgmt_url

    api = Http(mgmt_url(broker))
    q = f"ctp-{uid}"
    conn = pika.BlockingConnection(params(broker))
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        api.ok("PUT", f"/api/policies/%2F/ct-{uid}", {"pattern": f"^{q}$", "apply-to": "queues",
                                                      "definition": {"consumer-timeout": 700}})
        ch.basic_publish("", q, b"x")
        _tag, got, cancels = _consume_one(conn, ch, q)
        drain(conn, lambda: got)
        drain(conn, lambda: cancels, timeout=10)
        assert 0.6 <= cancels[0][0] - got[0][0] < 4.0  # the broker's default is 30 min
    finally:
        api.delete(f"/api/policies/%2F/ct-{uid}")
        conn.close()


def test_quorum_queue_consumer_timeout(tb, uid):
    """The timeout lives on the channel side, so every queue type has it."""
    q = f"ct-quorum-{uid}"
    conn = pika.BlockingConnection(params(tb))
    try:
        ch = conn.channel()
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum", "x-consumer-timeout": 600})
        ch.confirm_delivery()
        ch.basic_publish("", q, b"q", pika.BasicProperties(delivery_mode=2))
        _tag, got, cancels = _consume_one(conn, ch, q)
        drain(conn, lambda: cancels, timeout=10)
        assert 0.5 <= cancels[0][0] - got[0][0] < 4.0
        m, _p, body = ch.basic_get(q, auto_ack=True)
        assert m is not None and m.redelivered and body == b"q"
    finally:
        conn.close()
