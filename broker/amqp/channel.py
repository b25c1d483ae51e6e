"""A channel: one AMQP channel of a connection, dispatching its frames and methods.

Theory of operation
-------------------
The connection hands each frame for this channel to one of ``on_publish``,
``on_header``, ``on_body`` (content assembly, :mod:`broker.amqp.content`), ``on_ack``
(the hot-path ack, parsed by hand) or ``handle_method`` (everything else,
decoded by pamqp and dispatched through ``HANDLERS``).  A publish is complete
when its header (body size 0) or its last body frame arrives; ``_complete``
then validates it, routes it and pushes it into queues.

The channel's state is kept by small pieces, each with its own module:

- :class:`~broker.amqp.content.ContentAssembler`: the publish being assembled;
- :class:`~broker.amqp.unacked.UnackedDeliveries`: delivery tags, the unacked map,
  per-consumer and channel-global prefetch (RabbitMQ's ``global`` flag);
- :class:`~broker.amqp.confirms.Confirms`: publisher confirm sequence numbers and
  what waits for the disk; the channel asks it what to send and sends it;
- :class:`~broker.amqp.transactions.Transaction`: publishes and acks buffered
  until tx.commit;
- :class:`~broker.amqp.direct_reply.ReplyConsumer`: the direct reply-to consumer;
- :class:`~broker.amqp.consumer.Consumer`: one subscription on a queue;
- :mod:`broker.amqp.topology_methods`: the exchange and queue classes;
- :class:`~broker.amqp.ack_timeout.AckTimer`: the consumer timeout.

When a consumer's delivery times out and the client understands ``basic.cancel``
(and the broker answers timeouts with ``notify-consumer``), the consumer is
detached from its queue, its unacked deliveries are requeued and Basic.Cancel
is sent; the consumer is forgotten when the client's Basic.Cancel-Ok comes
(RabbitMQ's ``accept_consumer_cancel_ok``) or after :data:`CANCEL_OK_WAIT`
seconds.  Otherwise the channel is closed with RabbitMQ's 406.

Coalesced publisher acks are sent when the connection flushes its output
(``emit_confirms``), so that a Basic.Return always precedes the ack of the same
message.  On close (``teardown``) consumers are cancelled, a transaction is
rolled back and unacked deliveries are requeued in their original order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pamqp import commands as C

from protocol import errors, framing, methods
from protocol.errors import ChannelError, ConnectionError

from ..flow import PublisherFlow, QueueFlow
from ..message import Message
from ..publishing import CHECKED_FLAGS, check_properties
from ..queues import PUSH_REJECTED, PUSH_SYNC, Queue
from ..services import Services
from ..topic_permissions import WRITE
from . import basic_methods, topology_methods
from .ack_timeout import NOTIFY_CONSUMER, AckTimer, timed_out_text
from .confirms import ACK, COMMIT_OK, NACK, Confirms, Signal
from .consumer import Consumer
from .content import ContentAssembler, Publish
from .direct_reply import ReplyConsumer, reply_frames
from .transactions import Transaction, settle_groups
from .unacked import Entry, UnackedDeliveries, by_queue, unknown_tag

__all__ = ["HANDLERS", "Channel"]

log = logging.getLogger("broker.amqp.channel")

CANCEL_OK_WAIT = 5.0  # seconds a timed-out consumer waits for the client's Basic.Cancel-Ok


class ChannelConnection(Protocol):
    """What a channel uses of its connection (the connection implements it; the
    channel never imports the connection module)."""

    services: Services
    vhost: Any
    username: str
    name: str
    capabilities: dict
    max_body: int
    confirm_dirty: set
    writing_paused: bool
    out_size: int
    OUT_HIGH: int
    starved: bool
    flow: PublisherFlow

    def write(self, data: bytes) -> None: ...

    def write_parts(self, parts: list) -> None: ...

    def schedule_flush(self) -> None: ...

    def channel_error(self, chn: int, e: ChannelError) -> None: ...

    def close_channel(self, ch: "Channel", reply: bool) -> None: ...

    def channel_closed(self, ch: "Channel") -> None: ...


class Counters(Protocol):
    """The broker-wide message counters a channel adds to."""

    published: int
    routed: int
    delivered: int
    redelivered: int
    acked: int
    confirmed: int


class Channel:
    """State of one open channel of a connection."""

    def __init__(self, conn: ChannelConnection, number: int) -> None:
        self.conn = conn
        services = conn.services
        self.number = number
        self.vhost = conn.vhost
        self.services = conn.services
        self.stats = conn.services.stats
        self.topics = services.users.topics
        self.closing = False
        self.flow = True
        self.active = True  # flow on and not closing
        self.content = ContentAssembler(self._complete)
        # the connection calls these directly for every publish (hot path)
        self.on_publish = self.content.start
        self.on_header = self.content.header
        self.on_body = self.content.body
        self.unacked_deliveries = UnackedDeliveries()
        self.consumers: dict[str, Consumer] = {}
        self.confirm = False
        self.confirms = Confirms()
        self.tx = False
        self.txn = Transaction()
        self.last_queue: str | None = None
        self.reply: ReplyConsumer | None = None
        # Basic.Cancel of our own consumers, held while this channel deletes their
        # queue: RabbitMQ sends Queue.Delete-Ok first (py-amqp relies on it)
        self.held_cancels: list[str] | None = None
        notify = services.consumer_timeout_response == NOTIFY_CONSUMER \
            and bool(conn.capabilities.get("consumer_cancel_notify"))
        assert services.loop is not None, "channels open once the broker runs"
        self.ack_timer = AckTimer(self, services.loop, services.consumer_timeout_ms, notify)
        # timed-out consumers waiting for the client's Basic.Cancel-Ok: tag -> (consumer, timer)
        self.cancelling: dict[str, tuple[Consumer, Any]] = {}

    # -- views of the pieces' state (management API, direct reply-to) --------------
    @property
    def unacked(self) -> dict[int, Entry]:
        return self.unacked_deliveries.by_tag

    @property
    def prefetch(self) -> int:
        return self.unacked_deliveries.prefetch

    @property
    def global_prefetch(self) -> int:
        return self.unacked_deliveries.global_prefetch

    @property
    def pending(self) -> Any:
        """Confirms (and a tx.commit) waiting for the disk, in order."""
        return self.confirms.waiting

    @property
    def tx_publishes(self) -> list:
        return self.txn.publishes

    @property
    def tx_acks(self) -> list:
        return self.txn.acks

    @property
    def reply_consumer(self) -> str | None:
        """The consumer tag of this channel's direct reply-to consumer, if any."""
        return self.reply.tag if self.reply is not None else None

    @property
    def reply_token(self) -> str:
        return self.reply.token if self.reply is not None else ""

    # -- helpers ---------------------------------------------------------------
    def check(self, what: str, kind: str, name: str) -> None:
        """RabbitMQ's configure/write/read permission check (403 on the channel)."""
        if not self.services.users.allowed(self.conn.username, self.vhost.name, what, name):
            raise ChannelError(
                errors.ACCESS_REFUSED,
                f"access to {self.vhost.what(kind, name)} refused for user '{self.conn.username}'",
            )

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    def send(self, method: Any) -> None:
        self.conn.write(framing.method_frame(self.number, method))

    def queue_name(self, name: str) -> str:
        """'' means the queue last declared on this channel, as in RabbitMQ."""
        if name:
            return name
        if self.last_queue is None:
            raise ChannelError(errors.NOT_FOUND, "no previously declared queue")
        return self.last_queue

    def _store(self) -> Any:
        """The message store (there is one whenever a queue is durable, which is when it is asked for)."""
        store = self.services.store
        assert store is not None, "a persistent publish was routed to a durable queue without a store"
        return store

    def find_queue(self, name: str) -> Queue:
        q = self.vhost.get_queue(self.queue_name(name))
        self.vhost.check_exclusive(q, self.conn)
        return q

    # -- publish completion ----------------------------------------------------
    def _complete(self, pub: Publish, header: bytes, body: bytes) -> None:
        ex_raw, rk_raw, bits = pub
        try:
            exchange = ex_raw[1:].decode()
            rk = rk_raw[1:].decode()
        except UnicodeDecodeError:
            raise ConnectionError(errors.FRAME_ERROR, "cannot decode basic.publish frame: invalid UTF-8") from None
        self.check("write", "exchange", exchange or "amq.default")
        x = self.vhost.exchanges.get(exchange)
        if x is None or x.internal:
            x = self.vhost.exchange_for_publish(exchange)  # raises 404 / 403
        if bits & 2:
            raise ConnectionError(errors.NOT_IMPLEMENTED, "immediate=true", 60, 40)
        if self.topics.rules and x.type_name == "topic":
            self.topics.check(WRITE, self.conn.username, self.vhost.name, exchange, rk)
        msg = Message(exchange, rk, ex_raw, rk_raw, header, body)
        if framing.property_flags(header) & CHECKED_FLAGS:  # the common publish skips the call
            check_properties(msg, self.conn.username, None if self.reply_consumer is None else self.reply_token)
        if self.tx:
            self.txn.publish(x, msg, bits)
            return
        status = self.route(x, msg, bits & 1)
        if self.confirm:
            self._confirm_routed(status)

    def route(self, x: Any, msg: Message, mandatory: int) -> int:
        """Publish through the vhost; Basic.Return if mandatory and unroutable.  Returns
        the queues' worst answer (PUSH_SYNC: confirm after the fsync; PUSH_REJECTED: nack)."""
        vhost = self.vhost
        out = vhost.publish(x, msg, mandatory == 1)
        if vhost.tracer is not None:
            vhost.tracer.published(msg, out.queues, self.conn.name, self.number, self.conn.username)
        if QueueFlow.behind_count:  # some queue is behind: is it one of ours? (see broker.flow)
            self.conn.flow.charge(out.queues, self.conn)
        if out.returned:
            self._return(msg)
        return out.status

    def _return(self, msg: Message) -> None:
        """Basic.Return 312 NO_ROUTE with the message's content."""
        parts = [framing.return_frame(self.number, errors.NO_ROUTE, "NO_ROUTE", msg.ex_raw, msg.rk_raw)]
        parts += framing.content_frames(self.number, msg.header, msg.body, self.conn.max_body)
        self.conn.write_parts(parts)


    # -- publisher confirms ------------------------------------------------------
    def _confirm_routed(self, status: int) -> None:
        """Number a routed publish and confirm it now, after the disk, or nack it."""
        c = self.confirms
        seq = c.next_seq()
        if status == PUSH_SYNC:
            store = self._store()
            c.wait_for_disk(seq, store.want_sync())
            store.sync_waiters.add(self)
        elif status == PUSH_REJECTED:  # x-overflow reject-publish: a nack, in order
            self._send_signals(c.refused(seq))
        elif c.routed(seq):
            self.conn.confirm_dirty.add(self)

    def synced(self, epoch: int) -> bool:
        """The store made ``epoch`` durable: confirm what waited for it.
        Returns True while more is still waiting."""
        c = self.confirms
        self._send_signals(c.synced(epoch))
        if c.ack_upto > c.ack_sent:
            self.conn.confirm_dirty.add(self)
        self.conn.schedule_flush()
        return bool(c.waiting)

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        """Nack what waited for a failed write or fsync (ack what did not need it)."""
        self._send_signals(self.confirms.failed(epoch), exc)
        return bool(self.confirms.waiting)

    def emit_confirms(self) -> None:
        """Send the coalesced Basic.Ack due now, if any (the connection calls this when it flushes)."""
        a = self.confirms.take_ack()
        if a is not None:
            self.stats.confirmed += a[2]
            self.conn.write(framing.confirm_frame(self.number, a[1], a[2] > 1))

    def _send_signals(self, signals: list[Signal], exc: Exception | None = None) -> None:
        """Write what the confirm tracker says to send now, in order."""
        out = []
        for kind, tag, n in signals:
            if kind == ACK:
                self.stats.confirmed += n
                out.append(framing.confirm_frame(self.number, tag, n > 1))
            elif kind == NACK:
                out.append(framing.confirm_frame(self.number, tag, False, nack=True))
            elif kind == COMMIT_OK:
                out.append(framing.method_frame(self.number, C.Tx.CommitOk()))
            else:  # COMMIT_FAILED
                if out:
                    self.conn.write_parts(out)
                self.conn.channel_error(
                    self.number, ChannelError(errors.INTERNAL_ERROR, f"commit failed: cannot write to disk ({exc})")
                )
                return
        if out:
            self.conn.write_parts(out)

    # -- delivery (hot path) -------------------------------------------------------
    def deliver(self, c: Consumer, q: Queue, msg: Message) -> None:
        """Basic.Deliver of ``msg`` from ``q`` to consumer ``c``, with the next delivery tag."""
        led = self.unacked_deliveries
        led.next_tag = tag = led.next_tag + 1
        st = self.stats
        st.delivered += 1
        if msg.redelivered:
            st.redelivered += 1
        if c.no_ack:
            q.settle(msg)
        else:
            if self.ack_timer.handle is None:
                self.ack_timer.start(tag - 1)
            led.by_tag[tag] = (msg, q, c)
            c.unacked += 1
            led.global_unacked += 1
        n = self.number
        conn = self.conn
        parts = framing.content_frames(n, msg.header, msg.body, conn.max_body)
        parts.insert(0, framing.deliver_frame(n, c.tag_raw, tag, msg.redelivered, msg.ex_raw, msg.rk_raw))
        conn.write_parts(parts)
        if self.vhost.tracer is not None:
            self.vhost.tracer.delivered(msg, q.name, msg.redelivered, conn.name, n, conn.username)

    def on_ack(self, payload: bytes) -> None:
        """Basic.Ack, parsed by hand; a single ack outside a transaction is settled inline."""
        tag, multiple = framing.parse_ack(payload)
        if multiple or self.tx:
            self._settle(tag, multiple, None, 60, 80)
            return
        led = self.unacked_deliveries
        entry = led.by_tag.pop(tag, None)
        if entry is None:
            if led.expired.pop(tag, 0) is None:  # its consumer timed out: already requeued
                return
            raise unknown_tag(tag, 60, 80)
        msg, q, c = entry
        if c is not None:
            c.unacked -= 1
            led.global_unacked -= 1
        q.settle(msg)
        self.stats.acked += 1
        if c is not None:
            if led.global_prefetch:
                self.kick_all()
            elif q.consumers:
                q.dispatch()

    def _settle(self, tag: int, multiple: bool, requeue: bool | None, class_id: int, method_id: int) -> None:
        """Ack (``requeue`` None), requeue (True) or drop (False) the deliveries a method names;
        in a transaction, only take them and buffer the settlement until the commit."""
        led = self.unacked_deliveries
        if self.tx:
            self.txn.settle(led.take_held(tag, multiple, class_id, method_id), requeue)
            return
        self._apply(led.take(tag, multiple, class_id, method_id), requeue)

    def _apply(self, entries: list[Entry], requeue: bool | None) -> None:
        touched = by_queue(entries)
        for q, msgs in touched.items():
            if requeue:
                q.requeue(msgs)
            elif requeue is None:
                for m in msgs:
                    q.settle(m)
                self.stats.acked += len(msgs)
            else:
                for m in msgs:
                    q.reject(m)
        if self.unacked_deliveries.global_prefetch:
            self.kick_all()
        else:
            for q in touched:
                if q.consumers:
                    q.dispatch()

    def kick_all(self) -> None:
        for c in list(self.consumers.values()):
            c.queue.dispatch()

    # -- methods -----------------------------------------------------------------
    def handle_method(self, m: Any) -> None:
        h = HANDLERS.get(type(m))
        if h is None:
            raise ConnectionError(errors.COMMAND_INVALID, f"unexpected method {m.name} on channel {self.number}")
        h(self, m)

    # channel class
    def m_close(self, m: C.Channel.Close) -> None:
        self.conn.close_channel(self, reply=True)

    def m_close_ok(self, m: C.Channel.CloseOk) -> None:
        self.conn.channel_closed(self)

    def m_flow(self, m: C.Channel.Flow) -> None:
        if not m.active:
            # RabbitMQ (since 3.3) refuses client-initiated flow control; so do we
            raise ConnectionError(errors.NOT_IMPLEMENTED, "active=false", 20, 20)
        self.flow = bool(m.active)
        self.active = self.flow and not self.closing
        self.send(C.Channel.FlowOk(active=self.flow))
        if self.active:
            self.kick_all()

    def m_flow_ok(self, m: C.Channel.FlowOk) -> None:
        pass

    # basic class (qos, consume, cancel and get are in broker/amqp/basic_methods.py)
    def drop_consumer(self, c: Consumer, kick: bool) -> None:
        """Detach ``c`` from its queue; an auto-delete queue that lost its last consumer goes."""
        q = c.queue
        q.remove_consumer(c)
        if q.auto_delete and q.had_consumers and not q.consumers and not q.deleted:
            self.vhost.delete_queue(q)
        elif kick and q.consumers:
            q.dispatch()

    def queue_deleted(self, c: Consumer) -> None:
        """Our consumer's queue is gone: tell the client if it understands."""
        c.queue.remove_consumer(c)
        if self.consumers.pop(c.tag, None) is not None and not self.closing:
            if self.conn.capabilities.get("consumer_cancel_notify"):
                if self.held_cancels is not None:
                    self.held_cancels.append(c.tag)
                else:
                    self.write(methods.basic_cancel(self.number, c.tag))

    # consumer timeout (the timer is broker.amqp.ack_timeout.AckTimer)
    def consumer_timed_out(self, c: Consumer, timeout_ms: int) -> None:
        """``c`` kept a delivery too long: cancel it, requeue what it holds."""
        if self.consumers.get(c.tag) is not c or c.tag in self.cancelling:
            return
        log.warning(
            "consumer %s on channel %s timed out after %s ms: cancelled, its unacked messages requeued",
            c.tag, self.number, timeout_ms,
        )
        c.queue.remove_consumer(c)
        self.write(methods.basic_cancel(self.number, c.tag))
        self._apply(self.unacked_deliveries.expire_consumer(c), True)
        assert self.services.loop is not None
        handle = self.services.loop.call_later(CANCEL_OK_WAIT, self._forget_consumer, c.tag)
        self.cancelling[c.tag] = (c, handle)

    def _forget_consumer(self, tag: str) -> None:
        """A timed-out consumer's Basic.Cancel-Ok came, or the wait for it is over."""
        entry = self.cancelling.pop(tag, None)
        if entry is None:
            return
        c, handle = entry
        handle.cancel()
        if self.consumers.get(tag) is c:
            del self.consumers[tag]
            self.drop_consumer(c, kick=True)

    def m_basic_cancel_ok(self, m: C.Basic.CancelOk) -> None:
        """The client's answer to our Basic.Cancel; any other is ignored, as RabbitMQ does."""
        self._forget_consumer(m.consumer_tag or "")

    def ack_timed_out(self, timeout_ms: int) -> None:
        """A delivery timed out and its consumer cannot be cancelled: close the channel."""
        self.conn.channel_error(
            self.number, ChannelError(errors.PRECONDITION_FAILED, timed_out_text(self.number, timeout_ms))
        )

    def m_basic_reject(self, m: C.Basic.Reject) -> None:
        self._settle(m.delivery_tag or 0, False, bool(m.requeue), 60, 90)

    def m_basic_nack(self, m: C.Basic.Nack) -> None:
        self._settle(m.delivery_tag, bool(m.multiple), bool(m.requeue), 60, 120)

    def m_basic_ack(self, m: C.Basic.Ack) -> None:  # only reached if decoded by pamqp
        self._settle(m.delivery_tag, bool(m.multiple), None, 60, 80)

    def m_basic_recover(self, m: Any) -> None:
        if not m.requeue:
            raise ConnectionError(errors.NOT_IMPLEMENTED, "requeue=false", 60, 110)
        self._apply(self.unacked_deliveries.take(0, True, 60, 110), True)
        if isinstance(m, C.Basic.Recover):
            self.send(C.Basic.RecoverOk())

    # direct reply-to (the consumer is set up in broker/amqp/basic_methods.py)
    def deliver_reply(self, msg: Message) -> None:
        """A reply published to amq.rabbitmq.reply-to.<our token>."""
        if self.reply is None or self.closing:
            return
        tag = self.unacked_deliveries.new_tag()
        self.conn.write_parts(reply_frames(self.number, self.reply, tag, msg, self.conn.max_body))

    def drop_reply_consumer(self) -> None:
        if self.reply is not None:
            self.services.replies.pop(self.reply.token, None)
            self.reply = None

    # confirm / tx
    def m_confirm_select(self, m: C.Confirm.Select) -> None:
        if self.tx:
            raise ChannelError(errors.PRECONDITION_FAILED, "cannot switch from tx to confirm mode", 85, 10)
        self.confirm = True
        if not m.nowait:
            self.send(C.Confirm.SelectOk())

    def m_tx_select(self, m: C.Tx.Select) -> None:
        if self.confirm:
            raise ChannelError(errors.PRECONDITION_FAILED, "cannot switch from confirm to tx mode", 90, 10)
        self.tx = True
        self.send(C.Tx.SelectOk())

    def m_tx_commit(self, m: C.Tx.Commit) -> None:
        if not self.tx:
            raise ChannelError(errors.PRECONDITION_FAILED, "channel is not transactional", 90, 20)
        pubs, acks = self.txn.commit()
        sync = False
        for x, msg, bits in pubs:
            if self.vhost.exchanges.get(x.name) is x:
                sync = self.route(x, msg, bits & 1) == PUSH_SYNC or sync
        self.unacked_deliveries.release([e for _t, e, _r in acks])
        for requeue, group in settle_groups(acks):
            self._apply(group, requeue)
        if sync:
            store = self._store()
            self.confirms.commit_waits(store.want_sync())
            store.sync_waiters.add(self)
        else:
            self.send(C.Tx.CommitOk())

    def m_tx_rollback(self, m: C.Tx.Rollback) -> None:
        if not self.tx:
            raise ChannelError(errors.PRECONDITION_FAILED, "channel is not transactional", 90, 30)
        # acks taken in the transaction go back to being unacked, in tag order
        self.unacked_deliveries.restore(self.txn.rollback())
        self.send(C.Tx.RollbackOk())

    # -- teardown ----------------------------------------------------------------
    def teardown(self) -> None:
        """The channel is going: cancel consumers, roll back, requeue unacked deliveries in order."""
        self.closing = True
        self.active = False
        self.conn.confirm_dirty.discard(self)
        self.confirms.clear()
        self.drop_reply_consumer()
        self.ack_timer.stop()
        for _c, handle in self.cancelling.values():
            handle.cancel()
        self.cancelling.clear()
        for c in list(self.consumers.values()):
            self.drop_consumer(c, kick=False)
        self.consumers.clear()
        led = self.unacked_deliveries
        led.restore(self.txn.rollback())
        for q, msgs in by_queue(led.take_all()).items():
            q.requeue(msgs)


B, T = basic_methods, topology_methods
HANDLERS: dict[type, Callable[[Channel, Any], None]] = {
    C.Channel.Close: Channel.m_close,
    C.Channel.CloseOk: Channel.m_close_ok,
    C.Channel.Flow: Channel.m_flow,
    C.Channel.FlowOk: Channel.m_flow_ok,
    C.Exchange.Declare: T.exchange_declare,
    C.Exchange.Delete: T.exchange_delete,
    C.Exchange.Bind: T.exchange_bind,
    C.Exchange.Unbind: T.exchange_unbind,
    C.Queue.Declare: T.queue_declare,
    C.Queue.Bind: T.queue_bind,
    C.Queue.Unbind: T.queue_unbind,
    C.Queue.Purge: T.queue_purge,
    C.Queue.Delete: T.queue_delete,
    C.Basic.Qos: B.basic_qos,
    C.Basic.Consume: B.basic_consume,
    C.Basic.Cancel: B.basic_cancel,
    C.Basic.CancelOk: Channel.m_basic_cancel_ok,
    C.Basic.Get: B.basic_get,
    C.Basic.Ack: Channel.m_basic_ack,
    C.Basic.Reject: Channel.m_basic_reject,
    C.Basic.Nack: Channel.m_basic_nack,
    C.Basic.Recover: Channel.m_basic_recover,
    C.Basic.RecoverAsync: Channel.m_basic_recover,
    C.Confirm.Select: Channel.m_confirm_select,
    C.Tx.Select: Channel.m_tx_select,
    C.Tx.Commit: Channel.m_tx_commit,
    C.Tx.Rollback: Channel.m_tx_rollback,
}
