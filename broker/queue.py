"""Queues: a FIFO of messages, the consumers that take from it, dispatch.

Theory of operation
-------------------
A queue hands messages to consumers round-robin, skipping any consumer that
has no credit (prefetch reached, channel flow off, socket congested).  Whenever
credit may have come back (an ack, a resumed socket, a new consumer), the party
that freed it calls :meth:`Queue.dispatch`.  Requeued messages go back to
their original place (ordered by the queue's sequence numbers) and are marked
redelivered.

A durable queue writes every message to its log (``self.log``); the entry kept
in ``messages`` is the :class:`Message` while the queue is short and just the
int ref (its place in the log) once it holds a backlog, so memory stays flat.

RabbitMQ's queue arguments (``x-message-ttl``, ``x-expires``, ``x-max-length``,
``x-max-length-bytes``, ``x-overflow``, ``x-dead-letter-*``, ``x-max-priority``,
``x-single-active-consumer``) and consumer priorities switch the queue off its
fast path (``self.plain``).  Expiry is checked at the head, as in RabbitMQ: a
message expires when it reaches the head past its deadline (absolute ms since
the epoch, so a restart does not extend it).
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from itertools import chain
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from protocol import errors, fields, framing
from protocol.errors import ChannelError
from protocol.names import name_problem

from . import deadletter
from .message import Message

if TYPE_CHECKING:
    from .channel import Consumer
    from .exchange import Binding


KEEP_IN_MEMORY = 4096

PUSH_OK = 0
PUSH_SYNC = 1  # in the log, an fsync makes it safe
PUSH_REJECTED = 2  # refused (x-overflow reject-publish): nack the publisher

OVERFLOW_VALUES = ("drop-head", "reject-publish", "reject-publish-dlx")


def _seq(e: Any) -> int:
    return e if type(e) is int else e.seq


def now_ms() -> int:
    return int(time.time() * 1000)


class PriorityMessages:
    """The ready messages of an x-max-priority queue: one FIFO per priority."""

    def __init__(self, max_priority: int) -> None:
        self.max = max_priority
        self.levels: list[deque[Message]] = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def level(self, m: Message) -> int:
        return min(m.priority, self.max)

    def append(self, m: Message) -> None:
        self.levels[self.level(m)].append(m)
        self.n += 1

    def popleft(self) -> Message:
        for lv in reversed(self.levels):
            if lv:
                self.n -= 1
                return lv.popleft()
        raise IndexError("pop from an empty queue")

    def __getitem__(self, i: int) -> Message:
        if i != 0:
            raise IndexError(i)
        for lv in reversed(self.levels):
            if lv:
                return lv[0]
        raise IndexError(i)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Message]:
        return chain.from_iterable(reversed(self.levels))

    def clear(self) -> None:
        for lv in self.levels:
            lv.clear()
        self.n = 0

    def requeue(self, back: list[Message]) -> None:
        by: dict[int, list[Message]] = {}
        for m in back:
            by.setdefault(self.level(m), []).append(m)
        for p, msgs in by.items():
            _merge_sorted(self.levels[p], msgs)
            self.n += len(msgs)

    def remove_if(self, pred: Any) -> int:
        n = 0
        for i, lv in enumerate(self.levels):
            keep = deque(m for m in lv if not pred(m))
            n += len(lv) - len(keep)
            self.levels[i] = keep
        self.n -= n
        return n


def _merge_sorted(q: Any, back: list[Message]) -> None:
    """Insert ``back`` (sorted by seq) into ``q`` at their sequence places."""
    if not q or back[-1].seq < _seq(q[0]):
        q.extendleft(reversed(back))
        return
    seqs = [_seq(m) for m in q]
    for m in reversed(back):
        i = bisect.bisect_left(seqs, m.seq)
        q.insert(i, m)
        seqs.insert(i, m.seq)


def _int_arg(args: dict, key: str) -> int | None:
    v = args.get(key)
    if v is None or isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


class Queue:
    """One queue of one vhost."""

    def __init__(
        self,
        vhost: Any,
        name: str,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
        owner: Any = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.owner = owner  # the connection of an exclusive queue
        self.messages: Any = deque()
        self.consumers: list["Consumer"] = []
        self.exclusive_consumer: "Consumer | None" = None
        self.bindings: dict[tuple, "Binding"] = {}
        self.seq = 0
        self.rr = 0
        self.unacked = 0
        self.bytes_ready = 0
        self.had_consumers = False
        self.deleted = False
        self.log: Any = None  # storage.log.QueueLog of a durable queue
        self.redeliver_upto = 0  # recovered refs at or below this were delivered before
        self.expiry_timer: Any = None
        self.expires_timer: Any = None
        self.last_used = time.monotonic()
        self.consumer_priorities = False
        # counters for stats
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.configure()

    def configure(self) -> None:
        a = self.arguments
        self.ttl = _int_arg(a, "x-message-ttl")
        self.expires = _int_arg(a, "x-expires")
        self.max_length = _int_arg(a, "x-max-length")
        self.max_bytes = _int_arg(a, "x-max-length-bytes")
        ov = a.get("x-overflow", "drop-head")
        self.overflow = ov.decode() if isinstance(ov, bytes) else ov
        dlx = a.get("x-dead-letter-exchange")
        self.dlx = dlx.decode() if isinstance(dlx, bytes) else dlx
        dlrk = a.get("x-dead-letter-routing-key")
        self.dlrk = dlrk.decode() if isinstance(dlrk, bytes) else dlrk
        self.max_priority = _int_arg(a, "x-max-priority")
        self.sac = bool(a.get("x-single-active-consumer"))
        if self.max_priority is not None:
            self.messages = PriorityMessages(self.max_priority)
        self.plain_args = (
            self.ttl is None
            and self.max_length is None
            and self.max_bytes is None
            and self.max_priority is None
            and not self.sac
        )
        self.plain = self.plain_args and not self.consumer_priorities

    # -- messages ------------------------------------------------------------
    def push(self, msg: Message, persistent: bool = False) -> int:
        """Enqueue; PUSH_SYNC if it went to the log and needs an fsync to be
        safe, PUSH_REJECTED if the queue refused it (reject-publish)."""
        self.published += 1
        if msg.exp_deadline and self.plain:
            self.plain = False  # a message with its own TTL: expiry checks from now on
        if not self.plain and not self._admit(msg):
            return PUSH_REJECTED
        qlog = self.log
        self.bytes_ready += len(msg.body)
        if qlog is None:
            self.seq += 1
            msg.seq = self.seq
            self.messages.append(msg)
            status = PUSH_OK
        else:
            try:
                ref = qlog.append(persistent, msg.ex_raw, msg.rk_raw, msg.header, msg.body, msg.deadline)
            except OSError as exc:  # e.g. no space for a new segment file
                self.bytes_ready -= len(msg.body)
                qlog.store.append_failed(qlog, exc)
                return PUSH_REJECTED
            msg.ref = msg.seq = ref
            # a short queue keeps its messages in memory; a backlog keeps only refs
            if len(self.messages) < KEEP_IN_MEMORY or self.max_priority is not None:
                self.messages.append(msg)
            else:
                self.messages.append(ref)
            status = PUSH_SYNC if persistent else PUSH_OK
        if self.consumers:
            if self.plain:
                self.dispatch()
            else:
                # a message that arrives at the head goes to a waiting consumer before
                # any expiry check: with a TTL of 0 that is its only chance (RabbitMQ)
                self._dispatch_special(expire_first=len(self.messages) > 1)
        if not self.plain:
            self._after_push()
        return status

    def _admit(self, msg: Message) -> bool:
        """TTL deadline, priority and the reject-publish overflow check."""
        if self.max_priority is not None:
            msg.priority = framing.priority(msg.header)
        deadline = msg.deadline
        if self.ttl is not None:
            d = now_ms() + self.ttl
            deadline = d if not deadline else min(deadline, d)
        msg.deadline = deadline
        if self.overflow != "drop-head" and self._full(len(msg.body)):
            if self.overflow == "reject-publish-dlx":
                self._dead_letter(msg, "maxlen")
            return False
        return True

    def _full(self, incoming: int) -> bool:
        if self.max_length is not None and len(self.messages) + 1 > self.max_length:
            return True
        if self.max_bytes is not None and self.bytes_ready + incoming > self.max_bytes:
            return True
        return False

    def _after_push(self) -> None:
        if self.overflow == "drop-head":
            while self.messages and (
                (self.max_length is not None and len(self.messages) > self.max_length)
                or (self.max_bytes is not None and self.bytes_ready > self.max_bytes)
            ):
                self._drop(self._pop(), "maxlen")
        self.expire()

    def _load(self, ref: int) -> Message:
        """A message that is only on disk, read back for delivery."""
        _p, deadline, ex_raw, rk_raw, header, body = self.log.read_full(ref)
        m = Message(ex_raw[1:].decode(), rk_raw[1:].decode(), ex_raw, rk_raw, header, body)
        m.ref = m.seq = ref
        m.deadline = deadline
        m.redelivered = ref <= self.redeliver_upto
        return m

    def _pop(self) -> Message:
        m = self.messages.popleft()
        if type(m) is int:
            m = self._load(m)
        self.bytes_ready -= len(m.body)
        return m

    def _take(self) -> Message:
        m = self._pop()
        if self.log is not None:
            self.log.mark_delivered(m.ref)
        self.unacked += 1
        self.delivered += 1
        return m

    def get(self) -> Message | None:
        self.last_used = time.monotonic()
        if not self.plain:
            self.expire()
        if not self.messages:
            return None
        return self._take()

    def settle(self, msg: Message) -> None:
        """An unacked message was acked (or dropped): it is gone for good."""
        self.unacked -= 1
        self.acked += 1
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)

    def reject(self, msg: Message) -> None:
        """Rejected or nacked without requeue: gone, or dead-lettered."""
        self.unacked -= 1
        self._drop(msg, "rejected")

    def _drop(self, msg: Message, reason: str) -> None:
        """A message leaves the queue without being acked: dead-letter it if we can."""
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)
        if self.dlx is not None:
            self._dead_letter(msg, reason)

    def _dead_letter(self, msg: Message, reason: str) -> None:
        vh = self.vhost
        x = vh.exchanges.get(self.dlx)
        if x is None:
            return
        dead, names, rejected = deadletter.dead_letter(msg, self.name, reason, self.dlx, self.dlrk)
        persistent = None
        for q in vh.route_all(x, dead):
            # a cycle with no rejection in it is dropped, as RabbitMQ does
            if q.name in names and not rejected and q is not self and reason != "rejected":
                continue
            if q is self and reason != "rejected":
                continue
            if q.log is not None and persistent is None:
                persistent = framing.delivery_mode(dead.header) == 2
            q.push(dead.copy(), bool(persistent))

    def requeue(self, msgs: Iterable[Message]) -> None:
        """Put delivered messages back in their original order, redelivered."""
        back = sorted(msgs, key=_seq)
        if not back or self.deleted:
            return
        for m in back:
            m.redelivered = True
            self.unacked -= 1
            self.bytes_ready += len(m.body)
            if m.deadline:
                self.plain = False
        if isinstance(self.messages, PriorityMessages):
            self.messages.requeue(back)
        else:
            _merge_sorted(self.messages, back)
        if self.consumers:
            self.dispatch()
        if not self.plain:
            self.expire()

    def purge(self) -> int:
        n = len(self.messages)
        qlog = self.log
        if qlog is not None:
            for e in self.messages:
                qlog.settle(e if type(e) is int else e.ref)
        self.messages.clear()
        self.bytes_ready = 0
        return n

    def drop_where(self, pred: Any) -> int:
        """Remove ready messages matching ``pred`` (used after a failed write)."""
        if isinstance(self.messages, PriorityMessages):
            return self.messages.remove_if(pred)
        before = len(self.messages)
        self.messages = deque(e for e in self.messages if not pred(e))
        return before - len(self.messages)

    @property
    def ready(self) -> int:
        return len(self.messages)

    # -- expiry -----------------------------------------------------------------
    def expire(self) -> None:
        """Drop (or dead-letter) expired messages at the head; arm the timer."""
        msgs = self.messages
        if not msgs:
            # messages with their own TTL are gone: back to the fast path
            if self.plain_args and not self.consumer_priorities:
                self.plain = True
            return
        now = now_ms()
        while msgs:
            head = msgs[0]
            if type(head) is int:
                head = self._load(head)
                msgs[0] = head
            d = head.deadline
            if not d:
                return
            if d > now:
                self._arm_expiry(d - now)
                return
            self._drop(self._pop(), "expired")

    def _arm_expiry(self, delay_ms: int) -> None:
        loop = self.vhost.broker.loop if self.vhost.broker is not None else None
        if loop is None:
            return
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
        self.expiry_timer = loop.call_later(delay_ms / 1000.0 + 0.001, self._expiry_fired)

    def _expiry_fired(self) -> None:
        self.expiry_timer = None
        if not self.deleted:
            self.expire()

    def arm_expires(self) -> None:
        """x-expires: delete the queue once unused (no consumers, no get, no redeclare)."""
        if self.expires is None or self.vhost.broker is None or self.vhost.broker.loop is None:
            return
        loop = self.vhost.broker.loop
        if self.expires_timer is not None:
            self.expires_timer.cancel()
        due = self.last_used + self.expires / 1000.0 - time.monotonic()
        self.expires_timer = loop.call_later(max(due, 0.0), self._expires_fired)

    def _expires_fired(self) -> None:
        self.expires_timer = None
        if self.deleted:
            return
        if self.consumers:
            self.last_used = time.monotonic()
        elif time.monotonic() - self.last_used >= self.expires / 1000.0 - 0.001:
            self.vhost.delete_queue(self, reason="expired")
            return
        self.arm_expires()

    def cancel_timers(self) -> None:
        for t in (self.expiry_timer, self.expires_timer):
            if t is not None:
                t.cancel()
        self.expiry_timer = self.expires_timer = None

    # -- consumers -----------------------------------------------------------
    def add_consumer(self, c: "Consumer") -> None:
        self.last_used = time.monotonic()
        if c.priority:
            self.consumer_priorities = True
            self.plain = False
        if self.consumer_priorities:
            # highest priority first, arrival order within a priority
            i = 0
            while i < len(self.consumers) and self.consumers[i].priority >= c.priority:
                i += 1
            self.consumers.insert(i, c)
        else:
            self.consumers.append(c)
        self.had_consumers = True
        if c.exclusive:
            self.exclusive_consumer = c

    def remove_consumer(self, c: "Consumer") -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
        self.last_used = time.monotonic()
        if self.exclusive_consumer is c:
            self.exclusive_consumer = None
        if self.rr >= len(self.consumers):
            self.rr = 0

    def dispatch(self) -> None:
        """Hand ready messages to consumers with credit, round-robin."""
        msgs = self.messages
        consumers = self.consumers
        if not msgs or not consumers:
            return
        if not self.plain:
            self._dispatch_special()
            return
        n = len(consumers)
        take = self._take
        if n == 1:
            c = consumers[0]
            while msgs and c.can_take():
                c.deliver(self, take())
            return
        idle = 0
        i = self.rr
        while msgs and idle < n:
            if i >= n:
                i = 0
            c = consumers[i]
            i += 1
            if c.can_take():
                c.deliver(self, take())
                idle = 0
                if n != len(consumers):  # a delivery may cancel a consumer
                    n = len(consumers)
                    if not n:
                        break
            else:
                idle += 1
        self.rr = i if i < n else 0

    def _dispatch_special(self, expire_first: bool = True) -> None:
        """Dispatch with TTL, single active consumer and consumer priorities."""
        if expire_first:
            self.expire()
        msgs = self.messages
        while msgs and self.consumers:
            c = self._pick()
            if c is None:
                break
            c.deliver(self, self._take())
            if msgs and not self.plain:
                self.expire()

    def _pick(self) -> "Consumer | None":
        cs = self.consumers
        if self.sac:
            c = cs[0]
            return c if c.can_take() else None
        # consumers are sorted by priority: round-robin within the highest
        # priority that has a consumer with credit
        i = 0
        n = len(cs)
        while i < n:
            p = cs[i].priority
            j = i
            while j < n and cs[j].priority == p:
                j += 1
            group = j - i
            start = self.rr % group if group else 0
            for k in range(group):
                c = cs[i + (start + k) % group]
                if c.can_take():
                    self.rr = start + k + 1
                    return c
            i = j
        return None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "arguments": self.arguments,
            "messages_ready": self.ready,
            "messages_unacknowledged": self.unacked,
            "messages": self.ready + self.unacked,
            "consumers": len(self.consumers),
        }


# -- argument validation (RabbitMQ's texts) -------------------------------------

_INT_ARGS_MIN = {
    "x-message-ttl": 0,
    "x-expires": 1,
    "x-max-length": 0,
    "x-max-length-bytes": 0,
    "x-max-priority": 0,
}


def validate_queue_arguments(args: dict, what: str) -> None:
    """RabbitMQ's checks of queue arguments (406 PRECONDITION_FAILED, RabbitMQ's texts)."""

    def bad(key: str, detail: str) -> ChannelError:
        return ChannelError(errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what}: {detail}")

    for key, lo in _INT_ARGS_MIN.items():
        if key not in args:
            continue
        v = args[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(key, f'"expected integer, got {_erl_type(v)}"')
        if v < lo:
            if lo == 1 and v == 0:
                raise bad(key, f"{{value_zero,{v}}}")
            raise bad(key, f"{{value_negative,{v}}}")
    if "x-max-priority" in args and args["x-max-priority"] > 255:
        raise bad("x-max-priority", f"{{max_value_exceeded,{args['x-max-priority']}}}")
    if "x-overflow" in args:
        v = args["x-overflow"]
        v = v.decode() if isinstance(v, bytes) else v
        if v not in OVERFLOW_VALUES:
            raise bad("x-overflow", "invalid_overflow")
    if "x-single-active-consumer" in args and not isinstance(args["x-single-active-consumer"], bool):
        raise bad("x-single-active-consumer", f"{{unacceptable_type,{_erl_type(args['x-single-active-consumer'])}}}")
    for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        if key not in args:
            continue
        v = args[key]
        if not isinstance(v, (str, bytes)):
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid type '{_erl_type(v)}' for arg '{key}' in {what}")
        if problem := name_problem(v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v):
            raise bad(key, f"the name {problem}")
    if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
        raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")


def validate_new_queue_type(args: dict, what: str) -> None:
    """x-queue-type of a queue about to be created: 'classic' only."""
    if "x-queue-type" not in args:
        return
    v = args["x-queue-type"]
    v = v.decode() if isinstance(v, bytes) else v
    if v in ("quorum", "stream"):
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"invalid arg 'x-queue-type' for {what}: {v} queues are not supported by BurrowMQ; "
            "declare a durable classic queue",
        )
    if v != "classic":
        raise ChannelError(
            errors.PRECONDITION_FAILED, f"invalid arg 'x-queue-type' for {what}: \"unsupported queue type '{v}'\""
        )


def validate_consumer_arguments(args: dict, what: str) -> None:
    if "x-priority" in args:
        v = args["x-priority"]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ChannelError(
                errors.PRECONDITION_FAILED, f'invalid arg \'x-priority\' for {what}: "expected integer, got {_erl_type(v)}"'
            )


def _erl_type(v: Any) -> str:
    from .exchange import field_type_name

    return field_type_name(v)


__all__ = ["Queue", "PUSH_OK", "PUSH_SYNC", "PUSH_REJECTED", "validate_queue_arguments", "fields"]
