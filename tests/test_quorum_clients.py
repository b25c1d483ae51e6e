"""kombu and aio-pika against quorum queues: declare, publish with confirms, consume,
requeue with the delivery count, dead-lettering past the delivery limit."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Producer, Queue

QQ = {"x-queue-type": "quorum"}


# -- kombu ----------------------------------------------------------------------------------------
@pytest.fixture
def kconn(broker):
    c = Connection(f"amqp://guest:guest@127.0.0.1:{broker.port}//", connect_timeout=5, heartbeat=0,
                   transport_options={"confirm_publish": True})
    c.connect()
    yield c
    c.release()


def test_kombu_quorum_queue_round_trip_and_requeue(kconn, uid):
    ex = Exchange(f"kq-x-{uid}", "direct", durable=True)
    q = Queue(f"kq-{uid}", ex, routing_key="k", durable=True, queue_arguments=dict(QQ, **{"x-delivery-limit": 1}))
    ch = kconn.channel()
    bound = q(ch)
    bound.declare()
    Producer(ch, exchange=ex).publish({"n": 1}, routing_key="k", serializer="json", delivery_mode=1)
    m = bound.get(no_ack=False)
    assert m.payload == {"n": 1} and not m.delivery_info["redelivered"]
    m.requeue()
    m = bound.get(no_ack=False)
    assert m.delivery_info["redelivered"] and m.headers["x-delivery-count"] == 1
    m.requeue()  # second return: over the limit of 1, dropped (no dead-letter exchange)
    assert bound.get(no_ack=False) is None
    # a queue of another type under the same name is refused
    with pytest.raises(PreconditionFailed) as e:
        Queue(f"kq-{uid}", ex, routing_key="k", durable=True)(kconn.channel()).declare()
    assert "inequivalent arg 'x-queue-type'" in str(e.value)
    ch = kconn.channel()
    bound = q(ch)
    bound.delete()
    ex(ch).delete()


# -- aio-pika -------------------------------------------------------------------------------------
async def test_aiopika_quorum_consume_reject_and_dead_letter(broker, uid):
    async def body():
        async with await aio_pika.connect(host="127.0.0.1", port=broker.port, timeout=5) as conn:
            ch = await conn.channel()  # publisher confirms on by default
            dlq = await ch.declare_queue(f"aq-dlq-{uid}", durable=True, arguments=QQ)
            q = await ch.declare_queue(f"aq-{uid}", durable=True, arguments=dict(QQ, **{
                "x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq.name}))
            res = await ch.default_exchange.publish(aio_pika.Message(b"job"), routing_key=q.name)
            assert isinstance(res, aiormq.spec.Basic.Ack)
            counts = []
            async with q.iterator() as it:
                async for msg in it:
                    counts.append((msg.headers or {}).get("x-delivery-count", 0))
                    await msg.reject(requeue=True)
                    if len(counts) == 3:
                        break
            assert counts == [0, 1, 2]
            dead = await dlq.get(timeout=5)
            assert dead.body == b"job"
            assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
            await dead.ack()
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as e:
                ch2 = await conn.channel()
                await ch2.declare_queue(f"aq-bad-{uid}", durable=False, arguments=QQ)
            assert "invalid property 'non-durable'" in str(e.value)
            ch3 = await conn.channel()
            await ch3.queue_delete(q.name)
            await ch3.queue_delete(dlq.name)

    await asyncio.wait_for(body(), 15)
