"""A channel: content assembly, consumers, delivery tags, acks, qos, confirms, tx.

Theory of operation
-------------------
The connection hands each frame for this channel to one of ``on_publish``
(the hot path, parsed by hand), ``on_ack`` (also by hand), ``on_header``,
``on_body`` or ``handle_method`` (everything else, decoded by pamqp).  A
publish is complete when its header (body size 0) or its last body frame
arrives; it is then routed and pushed into queues.

Deliveries get consecutive delivery tags; an unacked delivery is remembered in
``unacked`` (tag -> (message, queue, consumer)) in tag order until it is acked,
rejected or the channel goes, in which case it is requeued.  Credit follows
RabbitMQ: ``basic.qos(global=False)`` limits each consumer started afterwards,
``global=True`` limits the whole channel.

Publisher confirms are sequence numbers; the highest confirmed one is sent as
one Basic.Ack(multiple) when the connection flushes its output, so that a
Basic.Return always precedes the ack of the same message.
"""

from __future__ import annotations

import base64
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from pamqp import commands as C

from protocol import errors, framing, methods, names
from protocol.errors import ChannelError, ConnectionError

from .message import Message
from .publishing import CHECKED_FLAGS, check_properties
from .queues import PUSH_REJECTED, PUSH_SYNC, Queue
from .queues.arguments import validate_consumer_arguments
from .reply_to import REPLY_TO, REPLY_TO_PREFIX

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("broker.channel")

MAX_MESSAGE_SIZE = 128 * 1024 * 1024


class Consumer:
    """A basic.consume subscription of one channel on one queue."""

    __slots__ = (
        "channel", "queue", "tag", "tag_raw", "no_ack", "exclusive", "prefetch", "unacked", "arguments", "priority",
    )

    def __init__(
        self, channel: "Channel", queue: Queue, tag: str, no_ack: bool, exclusive: bool, prefetch: int, arguments: dict
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.tag_raw = names.shortstr(tag)
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments
        p = arguments.get("x-priority", 0) if arguments else 0
        self.priority = p if isinstance(p, int) and not isinstance(p, bool) else 0

    def can_take(self) -> bool:
        ch = self.channel
        if not ch.active:
            return False
        conn = ch.conn
        if conn.writing_paused or conn.out_size > conn.OUT_HIGH:
            conn.starved = True
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        if ch.global_prefetch and ch.global_unacked >= ch.global_prefetch:
            return False
        return True

    def deliver(self, queue: Queue, msg: Message) -> None:
        self.channel.deliver(self, queue, msg)


def _new_tag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class Channel:
    """State of one open channel of a connection."""

    def __init__(self, conn: "Connection", number: int) -> None:
        self.conn = conn
        self.number = number
        self.vhost = conn.vhost
        self.services = conn.services
        self.stats = conn.services.stats
        self.closing = False
        self.flow = True
        self.active = True  # flow on and not closing
        # content assembly
        self._pub: tuple[bytes, bytes, int] | None = None
        self._hdr: bytes | None = None
        self._parts: list[bytes] = []
        self._remaining = 0
        # deliveries
        self.next_tag = 0
        self.unacked: dict[int, tuple[Message, Queue, Consumer | None]] = {}
        self.consumers: dict[str, Consumer] = {}
        self.prefetch = 0
        self.global_prefetch = 0
        self.global_unacked = 0
        # confirms
        self.confirm = False
        self.pending: deque[tuple[int, int]] = deque()  # (publish seq, fsync epoch or 0)
        self.publish_seq = 0
        self.ack_upto = 0
        self.ack_sent = 0
        # transactions
        self.tx = False
        self.tx_publishes: list[tuple[Any, Message, int]] = []
        self.tx_acks: list[tuple[int, tuple, bool | None]] = []
        self._tx_taken: list[tuple[int, tuple]] = []
        self.last_queue: str | None = None
        # direct reply-to
        self.reply_consumer: str | None = None
        self.reply_token = ""
        # Basic.Cancel of our own consumers, held while this channel deletes their
        # queue: RabbitMQ sends Queue.Delete-Ok first (py-amqp relies on it)
        self.held_cancels: list[str] | None = None

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

    def find_queue(self, name: str) -> Queue:
        q = self.vhost.get_queue(self.queue_name(name))
        self.vhost.check_exclusive(q, self.conn)
        return q

    # -- content (hot path) ----------------------------------------------------
    def on_publish(self, payload: bytes) -> None:
        self._pub = framing.parse_publish(payload)
        if self.confirm:
            self.publish_seq += 1

    def on_header(self, payload: bytes) -> None:
        if self._pub is None:
            raise ConnectionError(errors.UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
        if self._hdr is not None:
            raise ConnectionError(
                errors.UNEXPECTED_FRAME, "expected content body, got non content body frame instead", 60, 40
            )
        class_id, size = framing.header_body_size(payload)
        if class_id != 60:
            raise ConnectionError(
                errors.UNEXPECTED_FRAME,
                f"expected content header for class 60, got one for class {class_id} instead",
                60,
                40,
            )
        if size > MAX_MESSAGE_SIZE:
            self._pub = None
            raise ChannelError(
                errors.PRECONDITION_FAILED,
                f"message size {size} is larger than configured max size {MAX_MESSAGE_SIZE}",
                60,
                40,
            )
        if size == 0:
            self._complete(payload, b"")
            return
        self._hdr = payload
        self._remaining = size

    def on_body(self, payload: bytes) -> None:
        if self._hdr is None:
            if self._pub is None:
                raise ConnectionError(errors.UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
            raise ConnectionError(
                errors.UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
                60,
                40,
            )
        rem = self._remaining - len(payload)
        if rem > 0:
            self._remaining = rem
            self._parts.append(payload)
            return
        if rem < 0:
            raise ConnectionError(errors.FRAME_ERROR, "content body is longer than the size its header declared")
        if self._parts:
            self._parts.append(payload)
            body = b"".join(self._parts)
            self._parts = []
        else:
            body = payload
        hdr = self._hdr
        self._hdr = None
        self._complete(hdr, body)

    def _complete(self, header: bytes, body: bytes) -> None:
        ex_raw, rk_raw, bits = self._pub  # type: ignore[misc]
        self._pub = None
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
        msg = Message(exchange, rk, ex_raw, rk_raw, header, body)
        if framing.property_flags(header) & CHECKED_FLAGS:  # the common publish skips the call
            check_properties(msg, self.conn.username, None if self.reply_consumer is None else self.reply_token)
        if self.tx:
            self.tx_publishes.append((x, msg, bits))
            return
        status = self.route(x, msg, bits & 1)
        if self.confirm:
            seq = self.publish_seq
            if status == PUSH_REJECTED:
                # x-overflow reject-publish: nack this one (in order, after what came before)
                if self.pending:
                    self.pending.append((seq, -1))
                else:
                    self.emit_confirms()
                    self.conn.write(framing.confirm_frame(self.number, seq, False, nack=True))
                    self.ack_sent = self.ack_upto = seq
            elif status == PUSH_SYNC:
                store = self.services.store
                assert store is not None
                self.pending.append((seq, store.want_sync()))
                store.sync_waiters.add(self)
            elif self.pending:
                self.pending.append((seq, 0))
            else:
                self.ack_upto = seq
                self.conn.confirm_dirty.add(self)

    def route(self, x: Any, msg: Message, mandatory: int) -> int:
        """Publish through the vhost; Basic.Return if mandatory and unroutable.  Returns
        the queues' worst answer (PUSH_SYNC: confirm after the fsync; PUSH_REJECTED: nack)."""
        out = self.vhost.publish(x, msg, mandatory == 1)
        if out.returned:
            self._return(msg)
        return out.status

    def _return(self, msg: Message) -> None:
        """Basic.Return 312 NO_ROUTE with the message's content."""
        parts = [framing.return_frame(self.number, errors.NO_ROUTE, "NO_ROUTE", msg.ex_raw, msg.rk_raw)]
        parts += framing.content_frames(self.number, msg.header, msg.body, self.conn.max_body)
        self.conn.write_parts(parts)

    def synced(self, epoch: int) -> bool:
        """The store made ``epoch`` durable: confirm what waited for it.
        Returns True while more is still waiting."""
        p = self.pending
        upto = 0
        while p and p[0][1] <= epoch:
            seq, e = p.popleft()
            if seq < 0:  # a tx.commit that waited for the disk
                self.send(C.Tx.CommitOk())
            elif e < 0:  # refused by a queue: a nack, in order
                if upto:
                    self.ack_upto = upto
                    self.emit_confirms()
                    upto = 0
                self.conn.write(framing.confirm_frame(self.number, seq, False, nack=True))
                self.ack_sent = self.ack_upto = seq
            else:
                upto = seq
        if upto:
            self.ack_upto = upto
            self.conn.confirm_dirty.add(self)
        self.conn.schedule_flush()
        return bool(p)

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        """Nack what waited for a failed write or fsync (ack what did not need it)."""
        p = self.pending
        out = []
        self.emit_confirms()
        while p and p[0][1] <= epoch:
            seq, e = p.popleft()
            if seq < 0:
                self.conn.channel_error(
                    self.number, ChannelError(errors.INTERNAL_ERROR, f"commit failed: cannot write to disk ({exc})")
                )
                continue
            out.append(framing.confirm_frame(self.number, seq, False, nack=(e != 0)))
            self.ack_sent = self.ack_upto = seq
        if out:
            self.conn.write_parts(out)
        return bool(p)

    def emit_confirms(self) -> None:
        upto = self.ack_upto
        if upto > self.ack_sent:
            self.stats.confirmed += upto - self.ack_sent
            self.conn.write(framing.confirm_frame(self.number, upto, upto - self.ack_sent > 1))
            self.ack_sent = upto

    # -- delivery --------------------------------------------------------------
    def deliver(self, c: Consumer, q: Queue, msg: Message) -> None:
        self.next_tag = tag = self.next_tag + 1
        st = self.stats
        st.delivered += 1
        if msg.redelivered:
            st.redelivered += 1
        if c.no_ack:
            q.settle(msg)
        else:
            self.unacked[tag] = (msg, q, c)
            c.unacked += 1
            self.global_unacked += 1
        n = self.number
        conn = self.conn
        parts = framing.content_frames(n, msg.header, msg.body, conn.max_body)
        parts.insert(0, framing.deliver_frame(n, c.tag_raw, tag, msg.redelivered, msg.ex_raw, msg.rk_raw))
        conn.write_parts(parts)

    def on_ack(self, payload: bytes) -> None:
        tag, multiple = framing.parse_ack(payload)
        if not multiple:
            entry = self.unacked.pop(tag, None)
            if entry is None:
                raise ChannelError(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}", 60, 80)
            msg, q, c = entry
            if self.tx:
                self.tx_acks.append((tag, entry, None))
                return
            if c is not None:
                c.unacked -= 1
                self.global_unacked -= 1
            q.settle(msg)
            self.stats.acked += 1
            if c is not None:
                if self.global_prefetch:
                    self._kick_all()
                elif c.queue.consumers:
                    c.queue.dispatch()
            return
        entries = self._take(tag, True, 60, 80)
        self._settle_many(entries, None)

    def _take(self, tag: int, multiple: bool, class_id: int, method_id: int) -> list:
        """Remove and return the deliveries an ack/nack/reject names."""
        u = self.unacked
        if self.tx:
            keys = self._tags(tag, multiple, class_id, method_id)
            self._tx_taken = [(t, u.pop(t)) for t in keys]
            return []
        if multiple:
            if tag == 0:
                out = list(u.values())
                u.clear()
            else:
                if tag not in u:
                    raise ChannelError(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}", class_id, method_id)
                keys = []
                for t in u:
                    if t > tag:
                        break
                    keys.append(t)
                out = [u.pop(t) for t in keys]
        else:
            e = u.pop(tag, None)
            if e is None:
                raise ChannelError(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}", class_id, method_id)
            out = [e]
        for _m, _q, c in out:
            if c is not None:
                c.unacked -= 1
                self.global_unacked -= 1
        return out

    def _tags(self, tag: int, multiple: bool, class_id: int, method_id: int) -> list[int]:
        u = self.unacked
        if multiple and tag == 0:
            return list(u)
        if tag not in u:
            raise ChannelError(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}", class_id, method_id)
        if not multiple:
            return [tag]
        keys = []
        for t in u:
            if t > tag:
                break
            keys.append(t)
        return keys

    def _settle_many(self, entries: list, requeue: bool | None) -> None:
        """Ack (requeue None), requeue (True) or drop (False) taken deliveries."""
        if self.tx:
            self.tx_acks.extend((t, e, requeue) for t, e in self._tx_taken)
            self._tx_taken = []
            return
        self._apply(entries, requeue)

    def _apply(self, entries: list, requeue: bool | None) -> None:
        touched: dict[Queue, list[Message]] = {}
        for m, q, _c in entries:
            touched.setdefault(q, []).append(m)
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
        if self.global_prefetch:
            self._kick_all()
        else:
            for q in touched:
                if q.consumers:
                    q.dispatch()

    def _kick_all(self) -> None:
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
            self._kick_all()

    def m_flow_ok(self, m: C.Channel.FlowOk) -> None:
        pass

    # exchange class
    def m_exchange_declare(self, m: C.Exchange.Declare) -> None:
        vh = self.vhost
        if m.passive:
            vh.check_exchange_passive(m.exchange)
        else:
            if m.exchange:
                self.check("configure", "exchange", m.exchange)
            vh.declare_exchange(m.exchange, m.exchange_type, m.durable, m.auto_delete, m.internal, m.arguments or {})
        if not m.nowait:
            self.send(C.Exchange.DeclareOk())

    def m_exchange_delete(self, m: C.Exchange.Delete) -> None:
        if m.exchange:
            self.check("configure", "exchange", m.exchange)
        self.vhost.delete_exchange(m.exchange, m.if_unused)
        if not m.nowait:
            self.send(C.Exchange.DeleteOk())

    def _e2e(self, m: Any) -> tuple[Any, Any]:
        vh = self.vhost
        for name in (m.destination, m.source):
            if name == "":
                raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.check("write", "exchange", m.destination)
        self.check("read", "exchange", m.source)
        dest = vh.get_exchange(m.destination)
        src = vh.get_exchange(m.source)
        return src, dest

    def m_exchange_bind(self, m: C.Exchange.Bind) -> None:
        src, dest = self._e2e(m)
        self.vhost.bind(src, dest, m.routing_key, m.arguments or {})
        if not m.nowait:
            self.send(C.Exchange.BindOk())

    def m_exchange_unbind(self, m: C.Exchange.Unbind) -> None:
        # like RabbitMQ, unbinding what does not exist succeeds
        for name in (m.destination, m.source):
            if name == "":
                raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.check("write", "exchange", m.destination)
        self.check("read", "exchange", m.source)
        src = self.vhost.exchanges.get(m.source)
        dest = self.vhost.exchanges.get(m.destination)
        if src is not None and dest is not None:
            self.vhost.unbind(src, dest, m.routing_key, m.arguments or {})
        if not m.nowait:
            self.send(C.Exchange.UnbindOk())

    # queue class
    def m_queue_declare(self, m: C.Queue.Declare) -> None:
        vh = self.vhost
        if m.passive and m.queue.startswith(REPLY_TO):
            self._declare_reply_to(m)
            return
        if m.passive:
            # no "last declared queue" shortcut here, as in RabbitMQ
            q = self.vhost.get_queue(m.queue)
            self.vhost.check_exclusive(q, self.conn)
        else:
            name = m.queue or vh.generate_queue_name()
            self.check("configure", "queue", name)
            q, _created = vh.declare_queue(
                name, m.durable, m.exclusive, m.auto_delete, m.arguments or {}, self.conn, server_named=not m.queue
            )
        self.last_queue = q.name
        if not m.nowait:
            self.write(methods.queue_declare_ok(self.number, q.name, q.ready, len(q.consumers)))

    def _declare_reply_to(self, m: C.Queue.Declare) -> None:
        """Passive declare of the direct reply-to pseudo-queue (or one reply name)."""
        if m.queue == REPLY_TO:
            count = 1  # as RabbitMQ answers
        else:
            ch = self.services.replies.get(m.queue[len(REPLY_TO_PREFIX) :])
            if ch is None or not m.queue.startswith(REPLY_TO_PREFIX):
                raise ChannelError(errors.NOT_FOUND, f"no {self.vhost.what('queue', m.queue)}", 50, 10)
            count = 1
        if not m.nowait:
            self.write(methods.queue_declare_ok(self.number, m.queue, 0, count))

    def _bind_args(self, m: Any) -> tuple[Queue, Any]:
        if m.exchange == "":
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.check("write", "queue", self.queue_name(m.queue))
        self.check("read", "exchange", m.exchange)
        x = self.vhost.get_exchange(m.exchange)
        q = self.find_queue(m.queue)
        return q, x

    def m_queue_bind(self, m: C.Queue.Bind) -> None:
        q, x = self._bind_args(m)
        self.vhost.bind(x, q, m.routing_key, m.arguments or {})
        if not m.nowait:
            self.send(C.Queue.BindOk())

    def m_queue_unbind(self, m: C.Queue.Unbind) -> None:
        # like RabbitMQ: no exclusivity check, and a missing queue/exchange/binding is fine
        if m.exchange == "":
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.check("write", "queue", self.queue_name(m.queue))
        self.check("read", "exchange", m.exchange)
        q = self.vhost.queues.get(self.queue_name(m.queue))
        x = self.vhost.exchanges.get(m.exchange)
        if q is not None and x is not None:
            self.vhost.unbind(x, q, m.routing_key, m.arguments or {})
        self.send(C.Queue.UnbindOk())

    def m_queue_purge(self, m: C.Queue.Purge) -> None:
        self.check("read", "queue", self.queue_name(m.queue))
        q = self.find_queue(m.queue)
        n = q.purge()
        if not m.nowait:
            self.send(C.Queue.PurgeOk(message_count=n))

    def m_queue_delete(self, m: C.Queue.Delete) -> None:
        name = self.queue_name(m.queue)
        self.check("configure", "queue", name)
        q = self.vhost.queues.get(name)
        n = 0
        if q is not None:
            self.vhost.check_exclusive(q, self.conn)
            if m.if_unused and q.consumers:
                raise ChannelError(errors.PRECONDITION_FAILED, f"{self.vhost.what('queue', name)} in use")
            if m.if_empty and q.ready:
                raise ChannelError(errors.PRECONDITION_FAILED, f"{self.vhost.what('queue', name)} not empty")
            held: list[str] = []
            self.held_cancels = held
            try:
                n = self.vhost.delete_queue(q)
            finally:
                self.held_cancels = None
        else:
            held = []
        if not m.nowait:
            self.send(C.Queue.DeleteOk(message_count=n))
        for tag in held:
            self.write(methods.basic_cancel(self.number, tag))

    # basic class
    def m_basic_qos(self, m: C.Basic.Qos) -> None:
        if m.prefetch_size:
            raise ConnectionError(errors.NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
        if m.global_:
            self.global_prefetch = m.prefetch_count
            self.send(C.Basic.QosOk())
            self._kick_all()
        else:
            self.prefetch = m.prefetch_count
            self.send(C.Basic.QosOk())

    def m_basic_consume(self, m: C.Basic.Consume) -> None:
        if m.queue == REPLY_TO:
            self._consume_reply_to(m)
            return
        self.check("read", "queue", self.queue_name(m.queue))
        q = self.find_queue(m.queue)
        validate_consumer_arguments(m.arguments or {}, self.vhost.what("queue", q.name))
        tag = m.consumer_tag or _new_tag()
        if tag in self.consumers:
            raise ConnectionError(errors.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if q.exclusive_consumer is not None or (m.exclusive and q.consumers):
            raise ChannelError(errors.ACCESS_REFUSED, f"{self.vhost.what('queue', q.name)} in exclusive use", 60, 20)
        c = Consumer(self, q, tag, bool(m.no_ack), bool(m.exclusive), self.prefetch, m.arguments or {})
        self.consumers[tag] = c
        if not m.nowait:
            self.write(methods.basic_consume_ok(self.number, tag))
        q.add_consumer(c)
        q.dispatch()

    def _consume_reply_to(self, m: C.Basic.Consume) -> None:
        """Direct reply-to: a consumer on the pseudo-queue amq.rabbitmq.reply-to."""
        if not m.no_ack:
            raise ChannelError(errors.PRECONDITION_FAILED, "reply consumer cannot acknowledge", 60, 20)
        if self.reply_consumer is not None:
            raise ChannelError(errors.PRECONDITION_FAILED, "reply consumer already set", 60, 20)
        tag = m.consumer_tag or _new_tag()
        if tag in self.consumers:
            raise ConnectionError(errors.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        self.reply_consumer = tag
        self.reply_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.services.replies[self.reply_token] = self
        if not m.nowait:
            self.write(methods.basic_consume_ok(self.number, tag))

    def deliver_reply(self, msg: Message) -> None:
        """A reply published to amq.rabbitmq.reply-to.<our token>."""
        if self.reply_consumer is None or self.closing:
            return
        self.next_tag = tag = self.next_tag + 1
        parts = framing.content_frames(self.number, msg.header, msg.body, self.conn.max_body)
        parts.insert(
            0,
            framing.deliver_frame(
                self.number, names.shortstr(self.reply_consumer), tag, False, msg.ex_raw, msg.rk_raw
            ),
        )
        self.conn.write_parts(parts)

    def m_basic_cancel(self, m: C.Basic.Cancel) -> None:
        if self.reply_consumer is not None and m.consumer_tag == self.reply_consumer:
            self._drop_reply_consumer()
            if not m.nowait:
                self.write(methods.basic_cancel_ok(self.number, m.consumer_tag))
            return
        c = self.consumers.pop(m.consumer_tag, None)
        if not m.nowait:
            self.write(methods.basic_cancel_ok(self.number, m.consumer_tag))
        if c is not None:
            self._drop_consumer(c)

    def _drop_reply_consumer(self) -> None:
        if self.reply_token:
            self.services.replies.pop(self.reply_token, None)
        self.reply_consumer = None

    def _drop_consumer(self, c: Consumer) -> None:
        q = c.queue
        q.remove_consumer(c)
        if q.auto_delete and q.had_consumers and not q.consumers and not q.deleted:
            self.vhost.delete_queue(q)
        elif q.consumers:
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

    def m_basic_get(self, m: C.Basic.Get) -> None:
        self.check("read", "queue", self.queue_name(m.queue))
        q = self.find_queue(m.queue)
        msg = q.get()
        if msg is None:
            self.send(C.Basic.GetEmpty())
            return
        self.next_tag = tag = self.next_tag + 1
        self.stats.delivered += 1
        if msg.redelivered:
            self.stats.redelivered += 1
        if m.no_ack:
            q.settle(msg)
        else:
            self.unacked[tag] = (msg, q, None)
        parts = framing.content_frames(self.number, msg.header, msg.body, self.conn.max_body)
        parts.insert(0, framing.get_ok_frame(self.number, tag, msg.redelivered, msg.ex_raw, msg.rk_raw, q.ready))
        self.conn.write_parts(parts)

    def m_basic_reject(self, m: C.Basic.Reject) -> None:
        entries = self._take(m.delivery_tag, False, 60, 90)
        self._settle_many(entries, bool(m.requeue))

    def m_basic_nack(self, m: C.Basic.Nack) -> None:
        entries = self._take(m.delivery_tag, bool(m.multiple), 60, 120)
        self._settle_many(entries, bool(m.requeue))

    def m_basic_ack(self, m: C.Basic.Ack) -> None:  # only reached if decoded by pamqp
        entries = self._take(m.delivery_tag, bool(m.multiple), 60, 80)
        self._settle_many(entries, None)

    def m_basic_recover(self, m: Any) -> None:
        if not m.requeue:
            raise ConnectionError(errors.NOT_IMPLEMENTED, "requeue=false", 60, 110)
        entries = self._take(0, True, 60, 110)
        self._apply(entries, True)
        if isinstance(m, C.Basic.Recover):
            self.send(C.Basic.RecoverOk())

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
        pubs, acks = self.tx_publishes, self.tx_acks
        self.tx_publishes, self.tx_acks = [], []
        sync = False
        for x, msg, bits in pubs:
            if self.vhost.exchanges.get(x.name) is x:
                sync = self.route(x, msg, bits & 1) == PUSH_SYNC or sync
        for _t, (_m, _q, c), _r in acks:
            if c is not None:
                c.unacked -= 1
                self.global_unacked -= 1
        for requeue in (None, True, False):
            group = [e for _t, e, r in acks if r is requeue]
            if group:
                self._apply(group, requeue)
        if sync:
            store = self.services.store
            assert store is not None
            self.pending.append((-1, store.want_sync()))
            store.sync_waiters.add(self)
        else:
            self.send(C.Tx.CommitOk())

    def m_tx_rollback(self, m: C.Tx.Rollback) -> None:
        if not self.tx:
            raise ChannelError(errors.PRECONDITION_FAILED, "channel is not transactional", 90, 30)
        self.tx_publishes = []
        # acks taken in the transaction go back to being unacked, in tag order
        if self.tx_acks:
            merged = dict(self.unacked)
            merged.update((t, e) for t, e, _r in self.tx_acks)
            self.unacked = dict(sorted(merged.items()))
        self.tx_acks = []
        self.send(C.Tx.RollbackOk())

    # -- teardown ----------------------------------------------------------------
    def teardown(self) -> None:
        """The channel is going: cancel consumers, requeue unacked deliveries."""
        self.closing = True
        self.active = False
        self.conn.confirm_dirty.discard(self)
        self.pending.clear()
        self._drop_reply_consumer()
        for c in list(self.consumers.values()):
            self._drop_consumer_quiet(c)
        self.consumers.clear()
        if self.tx_acks:
            for t, e, _r in self.tx_acks:
                self.unacked[t] = e
            self.tx_acks = []
        if self.unacked:
            entries = list(self.unacked.values())
            self.unacked.clear()
            byq: dict[Queue, list[Message]] = {}
            for m, q, _c in entries:
                byq.setdefault(q, []).append(m)
            for q, msgs in byq.items():
                q.requeue(msgs)
        self.tx_publishes = []
        self.tx_acks = []

    def _drop_consumer_quiet(self, c: Consumer) -> None:
        q = c.queue
        q.remove_consumer(c)
        if q.auto_delete and q.had_consumers and not q.consumers and not q.deleted:
            self.vhost.delete_queue(q)


HANDLERS: dict[type, Callable[[Channel, Any], None]] = {
    C.Channel.Close: Channel.m_close,
    C.Channel.CloseOk: Channel.m_close_ok,
    C.Channel.Flow: Channel.m_flow,
    C.Channel.FlowOk: Channel.m_flow_ok,
    C.Exchange.Declare: Channel.m_exchange_declare,
    C.Exchange.Delete: Channel.m_exchange_delete,
    C.Exchange.Bind: Channel.m_exchange_bind,
    C.Exchange.Unbind: Channel.m_exchange_unbind,
    C.Queue.Declare: Channel.m_queue_declare,
    C.Queue.Bind: Channel.m_queue_bind,
    C.Queue.Unbind: Channel.m_queue_unbind,
    C.Queue.Purge: Channel.m_queue_purge,
    C.Queue.Delete: Channel.m_queue_delete,
    C.Basic.Qos: Channel.m_basic_qos,
    C.Basic.Consume: Channel.m_basic_consume,
    C.Basic.Cancel: Channel.m_basic_cancel,
    C.Basic.Get: Channel.m_basic_get,
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
