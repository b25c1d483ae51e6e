"""The exchange and queue classes of AMQP on a channel: declare, bind, purge, delete.

Each handler takes the channel and the decoded method, checks permissions the
way RabbitMQ does (configure for declare/delete, write on the destination and
read on the source for bind/unbind, read for purge), asks the vhost to do the
work and answers unless ``nowait``.  Errors are raised as
:class:`~protocol.errors.ChannelError` and close the channel.  The channel's
dispatch table (broker/amqp/channel.py) maps each method class to one of these.
"""

from __future__ import annotations

from typing import Any, Protocol

from pamqp import commands as C

from protocol import errors, methods
from protocol.errors import ChannelError

from ..reply_to import REPLY_TO
from ..services import Services
from ..topic_permissions import READ
from .direct_reply import reply_token


class MethodChannel(Protocol):
    """What every method handler uses of a channel."""

    number: int
    vhost: Any
    services: Services

    def check(self, what: str, kind: str, name: str) -> None: ...

    def send(self, method: Any) -> None: ...

    def write(self, data: bytes) -> None: ...

    def queue_name(self, name: str) -> str: ...

    def find_queue(self, name: str) -> Any: ...


class TopologyChannel(MethodChannel, Protocol):
    """What the exchange and queue handlers use of a channel."""

    conn: Any
    last_queue: str | None
    held_cancels: list[str] | None


def _no_default_exchange(*names: str) -> None:
    if "" in names:
        raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")


# -- exchange class --------------------------------------------------------------
def exchange_declare(ch: TopologyChannel, m: C.Exchange.Declare) -> None:
    vh = ch.vhost
    if m.passive:
        vh.check_exchange_passive(m.exchange)
    else:
        if m.exchange:
            ch.check("configure", "exchange", m.exchange)
        vh.declare_exchange(m.exchange, m.exchange_type, m.durable, m.auto_delete, m.internal, m.arguments or {})
    if not m.nowait:
        ch.send(C.Exchange.DeclareOk())


def exchange_delete(ch: TopologyChannel, m: C.Exchange.Delete) -> None:
    if m.exchange:
        ch.check("configure", "exchange", m.exchange)
    ch.vhost.delete_exchange(m.exchange, m.if_unused)
    if not m.nowait:
        ch.send(C.Exchange.DeleteOk())


def _check_topic_read(ch: TopologyChannel, source: Any, routing_key: str) -> None:
    """RabbitMQ's topic read check of a binding key on a topic source exchange."""
    topics = ch.services.users.topics
    if topics.rules and source is not None and source.type_name == "topic":
        topics.check(READ, ch.conn.username, ch.vhost.name, source.name, routing_key)


def exchange_bind(ch: TopologyChannel, m: C.Exchange.Bind) -> None:
    _no_default_exchange(m.destination, m.source)
    ch.check("write", "exchange", m.destination)
    ch.check("read", "exchange", m.source)
    dest = ch.vhost.get_exchange(m.destination)
    src = ch.vhost.get_exchange(m.source)
    _check_topic_read(ch, src, m.routing_key)
    ch.vhost.bind(src, dest, m.routing_key, m.arguments or {})
    if not m.nowait:
        ch.send(C.Exchange.BindOk())


def exchange_unbind(ch: TopologyChannel, m: C.Exchange.Unbind) -> None:
    # like RabbitMQ, unbinding what does not exist succeeds
    _no_default_exchange(m.destination, m.source)
    ch.check("write", "exchange", m.destination)
    ch.check("read", "exchange", m.source)
    src = ch.vhost.exchanges.get(m.source)
    dest = ch.vhost.exchanges.get(m.destination)
    _check_topic_read(ch, src, m.routing_key)
    if src is not None and dest is not None:
        ch.vhost.unbind(src, dest, m.routing_key, m.arguments or {})
    if not m.nowait:
        ch.send(C.Exchange.UnbindOk())


# -- queue class -------------------------------------------------------------------
def queue_declare(ch: TopologyChannel, m: C.Queue.Declare) -> None:
    vh = ch.vhost
    if m.passive and m.queue.startswith(REPLY_TO):
        _declare_reply_to(ch, m)
        return
    if m.passive:
        # no "last declared queue" shortcut here, as in RabbitMQ
        q = vh.get_queue(m.queue)
        vh.check_exclusive(q, ch.conn)
    else:
        name = m.queue or vh.generate_queue_name()
        ch.check("configure", "queue", name)
        q, _created = vh.declare_queue(
            name, m.durable, m.exclusive, m.auto_delete, m.arguments or {}, ch.conn, server_named=not m.queue
        )
    ch.last_queue = q.name
    if not m.nowait:
        ch.write(methods.queue_declare_ok(ch.number, q.name, q.ready, len(q.consumers)))


def _declare_reply_to(ch: TopologyChannel, m: C.Queue.Declare) -> None:
    """Passive declare of the direct reply-to pseudo-queue (or one reply name)."""
    if m.queue != REPLY_TO:
        token = reply_token(m.queue)
        if token is None or token not in ch.services.replies:
            raise ChannelError(errors.NOT_FOUND, f"no {ch.vhost.what('queue', m.queue)}", 50, 10)
    if not m.nowait:
        ch.write(methods.queue_declare_ok(ch.number, m.queue, 0, 1))  # one consumer, as RabbitMQ answers


def queue_bind(ch: TopologyChannel, m: C.Queue.Bind) -> None:
    _no_default_exchange(m.exchange)
    ch.check("write", "queue", ch.queue_name(m.queue))
    ch.check("read", "exchange", m.exchange)
    x = ch.vhost.get_exchange(m.exchange)
    _check_topic_read(ch, x, m.routing_key)
    q = ch.find_queue(m.queue)
    ch.vhost.bind(x, q, m.routing_key, m.arguments or {})
    if not m.nowait:
        ch.send(C.Queue.BindOk())


def queue_unbind(ch: TopologyChannel, m: C.Queue.Unbind) -> None:
    # like RabbitMQ: no exclusivity check, and a missing queue/exchange/binding is fine
    _no_default_exchange(m.exchange)
    ch.check("write", "queue", ch.queue_name(m.queue))
    ch.check("read", "exchange", m.exchange)
    q = ch.vhost.queues.get(ch.queue_name(m.queue))
    x = ch.vhost.exchanges.get(m.exchange)
    _check_topic_read(ch, x, m.routing_key)
    if q is not None and x is not None:
        ch.vhost.unbind(x, q, m.routing_key, m.arguments or {})
    ch.send(C.Queue.UnbindOk())


def queue_purge(ch: TopologyChannel, m: C.Queue.Purge) -> None:
    ch.check("read", "queue", ch.queue_name(m.queue))
    q = ch.find_queue(m.queue)
    n = q.purge()
    if not m.nowait:
        ch.send(C.Queue.PurgeOk(message_count=n))


def queue_delete(ch: TopologyChannel, m: C.Queue.Delete) -> None:
    """Queue.Delete; Basic.Cancel of this channel's own consumers on the queue is
    held back until after Delete-Ok, as RabbitMQ orders them (py-amqp relies on it)."""
    name = ch.queue_name(m.queue)
    ch.check("configure", "queue", name)
    vh = ch.vhost
    q = vh.queues.get(name)
    n = 0
    held: list[str] = []
    if q is not None:
        vh.check_exclusive(q, ch.conn)
        if m.if_unused and q.consumers:
            raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', name)} in use")
        if m.if_empty and q.ready:
            raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', name)} not empty")
        ch.held_cancels = held
        try:
            n = vh.delete_queue(q)
        finally:
            ch.held_cancels = None
    if not m.nowait:
        ch.send(C.Queue.DeleteOk(message_count=n))
    for tag in held:
        ch.write(methods.basic_cancel(ch.number, tag))
