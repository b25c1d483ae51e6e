"""Consumer-side methods of the basic class on a channel: qos, consume, cancel, get.

Each handler takes the channel and the decoded method, like the exchange and
queue handlers in broker/amqp/topology_methods.py; the channel's dispatch table maps
each method class to one of these.  Acks, nacks, rejects and recover stay on the
channel, next to the unacked deliveries they settle.

A Basic.Consume on ``amq.rabbitmq.reply-to`` is direct reply-to: no queue, one
:class:`~broker.amqp.direct_reply.ReplyConsumer` per channel, registered under its
token with the broker.
"""

from __future__ import annotations

from typing import Any, Protocol

from pamqp import commands as C

from protocol import errors, framing, methods
from protocol.errors import ChannelError, ConnectionError

from ..message import Message
from ..queues.arguments import validate_consumer_arguments
from ..reply_to import REPLY_TO
from .ack_timeout import AckTimer
from .consumer import Consumer, ConsumerChannel, new_consumer_tag
from .direct_reply import ReplyConsumer, check_consume, new_reply_token
from .topology_methods import MethodChannel
from .unacked import UnackedDeliveries


class BasicChannel(ConsumerChannel, MethodChannel, Protocol):
    """What the basic-class handlers use of a channel (and what a Consumer needs of it)."""

    stats: Any
    consumers: dict[str, Consumer]
    unacked_deliveries: UnackedDeliveries
    reply: ReplyConsumer | None
    ack_timer: AckTimer

    @property
    def conn(self) -> Any: ...

    def kick_all(self) -> None: ...

    def drop_consumer(self, c: Consumer, kick: bool) -> None: ...

    def drop_reply_consumer(self) -> None: ...

    # what the direct reply-to registry needs of the channel (broker.reply_to.ReplyTarget)
    @property
    def closing(self) -> bool: ...

    @property
    def reply_consumer(self) -> str | None: ...

    def deliver_reply(self, msg: Message) -> None: ...


def basic_qos(ch: BasicChannel, m: C.Basic.Qos) -> None:
    """Prefetch count per consumer started from now on, or (global) for the whole channel."""
    if m.prefetch_size:
        raise ConnectionError(errors.NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
    if m.global_:
        ch.unacked_deliveries.global_prefetch = m.prefetch_count
        ch.write(framing.reply_frame(ch.number, C.Basic.QosOk))
        ch.kick_all()
    else:
        ch.unacked_deliveries.prefetch = m.prefetch_count
        ch.write(framing.reply_frame(ch.number, C.Basic.QosOk))


def _consumer_tag(ch: BasicChannel, m: C.Basic.Consume) -> str:
    tag = m.consumer_tag or new_consumer_tag()
    if tag in ch.consumers:
        raise ConnectionError(errors.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
    return tag


def basic_consume(ch: BasicChannel, m: C.Basic.Consume) -> None:
    if m.queue == REPLY_TO:
        _consume_reply_to(ch, m)
        return
    ch.check("read", "queue", ch.queue_name(m.queue))
    q = ch.find_queue(m.queue)
    validate_consumer_arguments(m.arguments or {}, ch.vhost.what("queue", q.name))
    led = ch.unacked_deliveries
    q.check_consume(bool(m.no_ack), led.prefetch, led.global_prefetch, m.arguments or {})
    tag = _consumer_tag(ch, m)
    if q.exclusive_consumer is not None or (m.exclusive and q.consumers):
        raise ChannelError(errors.ACCESS_REFUSED, f"{ch.vhost.what('queue', q.name)} in exclusive use", 60, 20)
    c = Consumer(ch, q, tag, bool(m.no_ack), bool(m.exclusive), ch.unacked_deliveries.prefetch, m.arguments or {})
    ch.consumers[tag] = c
    if not m.nowait:
        ch.write(methods.basic_consume_ok(ch.number, tag))
    q.add_consumer(c)
    q.dispatch()


def _consume_reply_to(ch: BasicChannel, m: C.Basic.Consume) -> None:
    """Direct reply-to: a consumer on the pseudo-queue amq.rabbitmq.reply-to."""
    check_consume(bool(m.no_ack), ch.reply)
    tag = _consumer_tag(ch, m)
    ch.reply = reply = ReplyConsumer(tag, new_reply_token())
    ch.services.replies[reply.token] = ch
    if not m.nowait:
        ch.write(methods.basic_consume_ok(ch.number, tag))


def basic_cancel(ch: BasicChannel, m: C.Basic.Cancel) -> None:
    tag = m.consumer_tag or ""
    if ch.reply is not None and tag == ch.reply.tag:
        ch.drop_reply_consumer()
        if not m.nowait:
            ch.write(methods.basic_cancel_ok(ch.number, tag))
        return
    c = ch.consumers.pop(tag, None)
    if not m.nowait:
        ch.write(methods.basic_cancel_ok(ch.number, tag))
    if c is not None:
        ch.drop_consumer(c, kick=True)


def basic_get(ch: BasicChannel, m: C.Basic.Get) -> None:
    ch.check("read", "queue", ch.queue_name(m.queue))
    q = ch.find_queue(m.queue)
    msg = q.get()
    if msg is None:
        ch.send(C.Basic.GetEmpty())
        return
    led = ch.unacked_deliveries
    tag = led.new_tag()
    ch.stats.delivered += 1
    if msg.redelivered:
        ch.stats.redelivered += 1
    if m.no_ack:
        q.settle(msg)
    else:
        timer = ch.ack_timer
        timer.get_queues.add(q)
        if timer.handle is None:
            timer.start(tag - 1)
        led.track(tag, msg, q, None)
    parts = framing.content_frames(ch.number, msg.header, msg.body, ch.conn.max_body)
    parts.insert(0, framing.get_ok_frame(ch.number, tag, msg.redelivered, msg.ex_raw, msg.rk_raw, q.ready))
    ch.conn.write_parts(parts)
    if ch.vhost.tracer is not None:
        ch.vhost.tracer.delivered(msg, q.name, msg.redelivered, ch.conn.name, ch.number, ch.conn.username)
