"""aio-pika (asyncio) against the broker: every exchange type, iterators, confirms, QoS.

Each test has a vhost of its own on the in-process broker of the project's pytest plugin
(``amqp_url``); ``AMQP_BROKER_URL`` runs them against another broker."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message

LIMIT = 8.0  # seconds per test body


async def connect(amqp_url: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(amqp_url, timeout=5)


async def run(coro):
    return await asyncio.wait_for(coro, LIMIT)


async def get_all(queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
    out = []
    while True:
        m = await queue.get(no_ack=True, fail=False, timeout=5)
        if m is None:
            return out
        out.append(m.body)


async def test_default_exchange_properties_round_trip(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(f"aio-default-{uid}", auto_delete=False)
            msg = Message(
                b"payload",
                content_type="text/plain",
                content_encoding="utf-8",
                headers={"a": 1, "b": "two", "c": [1, "x"], "d": {"nested": True}},
                delivery_mode=DeliveryMode.PERSISTENT,
                priority=5,
                correlation_id="corr-1",
                reply_to="nowhere",
                message_id="mid-1",
                type="kind",
                app_id="tests",
            )
            res = await ch.default_exchange.publish(msg, routing_key=q.name)
            assert isinstance(res, aiormq.spec.Basic.Ack)
            got = await q.get(no_ack=True, timeout=5)
            assert got.body == b"payload"
            assert got.routing_key == q.name and got.exchange == ""
            assert got.content_type == "text/plain" and got.content_encoding == "utf-8"
            assert got.headers == {"a": 1, "b": "two", "c": [1, "x"], "d": {"nested": True}}
            assert got.delivery_mode == DeliveryMode.PERSISTENT
            assert got.priority == 5
            assert got.correlation_id == "corr-1" and got.reply_to == "nowhere"
            assert got.message_id == "mid-1" and got.type == "kind" and got.app_id == "tests"
            assert got.redelivered is False
            assert await q.get(fail=False, timeout=5) is None
            assert await q.delete() is not None

    await run(body())


async def test_direct_exchange(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(f"aio-direct-{uid}", ExchangeType.DIRECT, auto_delete=True)
            q1 = await ch.declare_queue(exclusive=True)
            q2 = await ch.declare_queue(exclusive=True)
            await q1.bind(ex, "black")
            await q1.bind(ex, "green")
            await q2.bind(ex, "green")
            await q2.bind(ex, "orange")
            for key in ("black", "green", "orange", "white", "Black"):
                await ex.publish(Message(key.encode()), routing_key=key, mandatory=False)
            assert await get_all(q1) == [b"black", b"green"]
            assert await get_all(q2) == [b"green", b"orange"]
            await q1.unbind(ex, "black")
            await ex.publish(Message(b"black2"), routing_key="black", mandatory=False)
            await ex.publish(Message(b"green2"), routing_key="green", mandatory=False)
            assert await get_all(q1) == [b"green2"]
            assert await get_all(q2) == [b"green2"]

    await run(body())


async def test_fanout_exchange(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(f"aio-fanout-{uid}", ExchangeType.FANOUT, auto_delete=True)
            queues = [await ch.declare_queue(exclusive=True) for _ in range(3)]
            for q in queues:
                await q.bind(ex)
            for i in range(5):
                await ex.publish(Message(f"m{i}".encode()), routing_key=f"k{i}")
            for q in queues:
                assert await get_all(q) == [f"m{i}".encode() for i in range(5)]

    await run(body())


async def test_topic_exchange(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(f"aio-topic-{uid}", ExchangeType.TOPIC, auto_delete=True)
            patterns = ["*.orange.*", "*.*.rabbit", "lazy.#", "#", "a.*", "a.#"]
            qs = {}
            for p in patterns:
                qs[p] = await ch.declare_queue(exclusive=True)
                await qs[p].bind(ex, p)
            keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
                    "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.male.rabbit",
                    "lazy.orange.male.rabbit", "a", "a.b", "a.b.c", ""]
            for k in keys:
                await ex.publish(Message(k.encode()), routing_key=k, mandatory=False)
            expected = {
                "*.orange.*": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
                "*.*.rabbit": ["quick.orange.rabbit", "lazy.pink.rabbit"],
                "lazy.#": ["lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit", "lazy.orange.male.rabbit"],
                "#": keys,
                "a.*": ["a.b"],
                "a.#": ["a", "a.b", "a.b.c"],
            }
            for p in patterns:
                assert [b.decode() for b in await get_all(qs[p])] == expected[p], p

    await run(body())


async def test_headers_exchange(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(f"aio-headers-{uid}", ExchangeType.HEADERS, auto_delete=True)
            q_all = await ch.declare_queue(exclusive=True)
            q_any = await ch.declare_queue(exclusive=True)
            q_present = await ch.declare_queue(exclusive=True)
            await q_all.bind(ex, arguments={"x-match": "all", "os": "linux", "arch": "x86"})
            await q_any.bind(ex, arguments={"x-match": "any", "os": "linux", "arch": "arm"})
            await q_present.bind(ex, arguments={"x-match": "all", "os": None})  # void: presence only
            cases = [
                ("linux-x86", {"os": "linux", "arch": "x86"}),
                ("linux-arm", {"os": "linux", "arch": "arm"}),
                ("mac-arm", {"os": "mac", "arch": "arm"}),
                ("mac-x86", {"os": "mac", "arch": "x86"}),
                ("none", {}),
                ("arch-only", {"arch": "x86"}),
            ]
            for name, headers in cases:
                await ex.publish(Message(name.encode(), headers=headers), routing_key="ignored", mandatory=False)
            assert await get_all(q_all) == [b"linux-x86"]
            assert await get_all(q_any) == [b"linux-x86", b"linux-arm", b"mac-arm"]
            assert await get_all(q_present) == [b"linux-x86", b"linux-arm", b"mac-arm", b"mac-x86"]

    await run(body())


async def test_consume_with_iterator(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=3)
            q = await ch.declare_queue(f"aio-iter-{uid}", auto_delete=False)
            for i in range(20):
                await ch.default_exchange.publish(Message(str(i).encode()), routing_key=q.name)
            got = []
            async with q.iterator() as it:
                async for message in it:
                    async with message.process():
                        got.append(int(message.body))
                        assert message.redelivered is False
                    if len(got) == 20:
                        break
            assert got == list(range(20))
            # everything was acked: nothing left, nothing unacked
            ch2 = await conn.channel()
            q2 = await ch2.declare_queue(q.name, passive=True)
            assert q2.declaration_result.message_count == 0
            assert q2.declaration_result.consumer_count == 0  # the iterator cancelled its consumer
            await q2.delete()

    await run(body())


async def test_consume_callback_reject_requeue(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(f"aio-reject-{uid}", auto_delete=True)
            await ch.default_exchange.publish(Message(b"once"), routing_key=q.name)
            seen: list[tuple[bytes, bool]] = []
            done = asyncio.Event()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage):
                seen.append((message.body, message.redelivered))
                if not message.redelivered:
                    await message.reject(requeue=True)
                else:
                    await message.ack()
                    done.set()

            tag = await q.consume(on_message)
            await done.wait()
            await q.cancel(tag)
            assert seen == [(b"once", False), (b"once", True)]

    await run(body())


async def test_publisher_confirms(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()  # publisher_confirms=True by default
            q = await ch.declare_queue(f"aio-confirm-{uid}", auto_delete=False)
            results = await asyncio.gather(
                *(ch.default_exchange.publish(Message(str(i).encode()), routing_key=q.name) for i in range(200))
            )
            assert all(isinstance(r, aiormq.spec.Basic.Ack) for r in results)
            declared = await ch.declare_queue(q.name, passive=True)
            assert declared.declaration_result.message_count == 200
            assert await get_all(q) == [str(i).encode() for i in range(200)]

            # unroutable + mandatory: returned; with on_return_raises the publish fails
            rch = await conn.channel(on_return_raises=True)
            with pytest.raises(aio_pika.exceptions.PublishError):
                await rch.default_exchange.publish(Message(b"lost"), routing_key=f"no-such-queue-{uid}")
            # unroutable, not mandatory: simply confirmed
            res = await rch.default_exchange.publish(
                Message(b"lost"), routing_key=f"no-such-queue-{uid}", mandatory=False
            )
            assert isinstance(res, aiormq.spec.Basic.Ack)
            # the channel keeps working after the return
            res = await rch.default_exchange.publish(Message(b"ok"), routing_key=q.name)
            assert isinstance(res, aiormq.spec.Basic.Ack)
            assert await get_all(q) == [b"ok"]
            await q.delete()

    await run(body())


async def test_qos_prefetch(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=2)
            q = await ch.declare_queue(f"aio-qos-{uid}", auto_delete=True)
            for i in range(10):
                await ch.default_exchange.publish(Message(str(i).encode()), routing_key=q.name)
            held: list[aio_pika.abc.AbstractIncomingMessage] = []
            arrived = asyncio.Event()

            async def on_message(message):
                held.append(message)
                arrived.set()

            await q.consume(on_message)
            await asyncio.sleep(0.3)
            assert [int(m.body) for m in held] == [0, 1]
            await held[0].ack()
            await asyncio.sleep(0.3)
            assert [int(m.body) for m in held] == [0, 1, 2]
            # a second channel's consumer is not limited by the first channel's qos
            other = await conn.channel()
            await other.set_qos(prefetch_count=5)
            oq = await other.declare_queue(q.name, passive=True)
            got_other = []

            async def on_other(message):
                got_other.append(message)

            await oq.consume(on_other)
            await asyncio.sleep(0.3)
            assert len(got_other) == 5
            assert len(held) == 3
            assert sorted(int(m.body) for m in held + got_other) == list(range(8))

    await run(body())


async def test_transaction_commit_and_rollback(amqp_url, uid):
    async def body():
        async with await connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(f"aio-tx-{uid}", auto_delete=False)
            tx = ch.transaction()
            await tx.select()
            await ch.default_exchange.publish(Message(b"a"), routing_key=q.name)
            await tx.rollback()
            await ch.default_exchange.publish(Message(b"b"), routing_key=q.name)
            check = await conn.channel()
            assert (await check.declare_queue(q.name, passive=True)).declaration_result.message_count == 0
            await tx.commit()
            assert (await check.declare_queue(q.name, passive=True)).declaration_result.message_count == 1
            assert await get_all(q) == [b"b"]
            await q.delete()

    await run(body())


async def test_exclusive_queue_gone_after_connection_close(amqp_url, uid):
    async def body():
        name = f"aio-excl-{uid}"
        conn = await connect(amqp_url)
        ch = await conn.channel()
        await ch.declare_queue(name, exclusive=True)
        async with await connect(amqp_url) as other:
            och = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await och.declare_queue(name, passive=True)
            await conn.close()
            och = await other.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await och.declare_queue(name, passive=True)

    await run(body())
