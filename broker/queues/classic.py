"""The classic queue: a FIFO of messages, the subscribers that take from it, dispatch.

Theory of operation
-------------------
A queue hands messages to subscribers round-robin, skipping any that has no
credit (prefetch reached, channel flow off, socket congested).  Whenever credit
may have come back (an ack, a resumed socket, a new consumer), the party that
freed it calls :meth:`ClassicQueue.dispatch`.  Requeued messages go back to
their original place (ordered by the queue's sequence numbers) and are marked
redelivered.

A durable queue writes every message to its log (``self.log``); the entry kept
in ``messages`` is the :class:`Message` while the queue is short and just the
int ref (its place in the log) once it holds a backlog (``KEEP_IN_MEMORY``
messages or ``KEEP_BYTES``), so memory stays flat.  A queue without a log of
its own keeps its messages in memory until it holds such a backlog; then it
*pages*: it opens a log in the broker's scratch store (``use_scratch``) and
works like a durable queue until it is empty with nothing unacked, when that
log is dropped and the queue is back in memory.
At start-up :meth:`ClassicQueue.recover` rebuilds the ready messages from the
log; a failed write tells the queue which refs it lost (``_records_lost``).

RabbitMQ's queue arguments (``x-message-ttl``, ``x-expires``, ``x-max-length``,
``x-max-length-bytes``, ``x-overflow``, ``x-dead-letter-*``, ``x-max-priority``,
``x-single-active-consumer``) and consumer priorities switch the queue off its
fast path (``self.plain``).  Expiry is checked at the head, as in RabbitMQ: a
message expires when it reaches the head past its deadline (absolute ms since
the epoch, so a restart does not extend it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from protocol import framing
from storage.log import LogStore

from .. import deadletter
from ..logsafe import printable
from ..message import Message
from .arguments import int_arg, str_arg
from .base import PUSH_OK, PUSH_REJECTED, PUSH_SYNC, Queue, QueueHost, Recovered, Subscriber
from .priority import PriorityMessages, merge_sorted, seq_of

log = logging.getLogger("broker.queue")

KEEP_IN_MEMORY = 4096  # ready messages kept as objects; beyond, only refs to the log
KEEP_BYTES = 16 * 1024 * 1024  # ... and beyond this many ready body bytes


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (message deadlines use it)."""
    return int(time.time() * 1000)


class ClassicQueue(Queue):
    """RabbitMQ's classic queue: FIFO (or per priority), in memory, logged when durable."""

    type_name = "classic"

    def __init__(
        self,
        vhost: QueueHost,
        name: str,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
        owner: Any = None,
    ) -> None:
        super().__init__(vhost, name, durable, exclusive, auto_delete, arguments, owner)
        self.messages: Any = deque()  # ready entries: Message, or int ref (see module doc)
        self.seq = 0
        self.rr = 0
        self.redeliver_upto = 0  # recovered refs at or below this were delivered before
        self.expiry_timer: asyncio.TimerHandle | None = None
        self.expires_timer: asyncio.TimerHandle | None = None
        self.consumer_priorities = False
        self._store: LogStore | None = None
        self._scratch: LogStore | None = None  # where a backlog is paged when the queue has no log
        self.paging = False  # self.log is a scratch log
        self.configure()
        if self.max_priority is not None:
            self.messages = PriorityMessages(self.max_priority)

    def configure(self) -> None:
        """Read the settings this type acts on (arguments merged with policies)."""
        a = self.effective
        self.ttl = int_arg(a, "x-message-ttl")
        self.expires = int_arg(a, "x-expires")
        self.max_length = int_arg(a, "x-max-length")
        self.max_bytes = int_arg(a, "x-max-length-bytes")
        self.overflow = str_arg(a, "x-overflow", "drop-head")
        self.dlx = str_arg(a, "x-dead-letter-exchange")
        self.dlrk = str_arg(a, "x-dead-letter-routing-key")
        self.max_priority = int_arg(self.arguments, "x-max-priority")  # fixed at declare: no policy key
        self.sac = bool(a.get("x-single-active-consumer"))
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
        if qlog is None and self._scratch is not None and (
            len(self.messages) >= KEEP_IN_MEMORY or self.bytes_ready > KEEP_BYTES
        ):
            qlog = self._start_paging()
        if qlog is None:
            self.seq += 1
            msg.seq = self.seq
            self.messages.append(msg)
            status = PUSH_OK
        else:
            if self.paging:
                persistent = False  # a scratch log is never recovered: nothing to wait for
            try:
                ref = qlog.append(
                    persistent, msg.ex_raw, msg.rk_raw, msg.header, msg.body, msg.deadline, self._marked(msg)
                )
            except OSError as exc:  # e.g. no space for a new segment file
                self.bytes_ready -= len(msg.body)
                qlog.store.append_failed(qlog, exc)
                return PUSH_REJECTED
            msg.ref = msg.seq = ref
            if self._keep_in_memory(msg):
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
        if len(self.messages) > self.flow.high and self.consumers:
            self.flow.check_behind(self.delivered)
        return status

    def _marked(self, msg: Message) -> bool:
        """Whether its log record is marked, for recovery to list (see storage.records)."""
        return False

    def _keep_in_memory(self, msg: Message) -> bool:
        """A short queue keeps its logged messages in memory; a backlog keeps only refs."""
        short = len(self.messages) < KEEP_IN_MEMORY and self.bytes_ready <= KEEP_BYTES
        return short or self.max_priority is not None

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
        assert self.log is not None
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
        if self.log is not None and m.ref is not None:  # a paging queue's first messages have no ref
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
        m = self._take()
        if self.flow.behind:
            self.flow.check_caught_up(len(self.messages))
        return m

    def peek(self, offset: int, count: int) -> list[Message]:
        """Ready messages in delivery order, read back from the log where only a ref is
        kept; the queue is not changed (the walk to ``offset`` is O(offset))."""
        return [self._load(e) if type(e) is int else e for e in islice(self.messages, offset, offset + count)]

    def settle(self, msg: Message) -> None:
        """An unacked message was acked (or dropped): it is gone for good."""
        self.unacked -= 1
        self.acked += 1
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)
        if self.paging and not self.unacked and not self.messages:
            self._stop_paging()

    def reject(self, msg: Message) -> None:
        """Rejected or nacked without requeue: gone, or dead-lettered."""
        self.unacked -= 1
        self._drop(msg, "rejected")
        if self.paging and not self.unacked and not self.messages:
            self._stop_paging()

    def _drop(self, msg: Message, reason: str) -> None:
        """A message leaves the queue without being acked: dead-letter it if we can."""
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)
            self.remember_drop(msg.ref, reason)
        if self.dlx is not None:
            self._dead_letter(msg, reason)

    def _dead_letter(self, msg: Message, reason: str) -> int | None:
        """Publish the dead-lettered copy of ``msg``: the push status, None if no queue took it."""
        assert self.dlx is not None
        dead, history, rejected = deadletter.dead_letter(msg, self.name, reason, self.dlx, self.dlrk)

        def skip(q: Queue) -> bool:
            # never back into this queue, and a cycle with no rejection in it is dropped (RabbitMQ)
            if reason == "rejected":
                return False
            return q is self or (q.name in history and not rejected)

        return self.vhost.publish_dead_letter(self.dlx, dead, skip)

    def requeue(self, msgs: Iterable[Message]) -> None:
        """Put delivered messages back in their original order, redelivered."""
        back = sorted(msgs, key=seq_of)
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
            merge_sorted(self.messages, back)
        if self.consumers:
            self.dispatch()
        if not self.plain:
            self.expire()

    def purge(self) -> int:
        n = len(self.messages)
        qlog = self.log
        if qlog is not None:
            for e in self.messages:
                ref = e if type(e) is int else e.ref
                if ref is not None:
                    qlog.settle(ref)
        self.messages.clear()
        self.bytes_ready = 0
        self.flow.caught_up()
        if self.paging and not self.unacked:
            self._stop_paging()
        return n

    def _records_lost(self, lo: int, hi: int) -> None:
        """The log lost the records with refs in [lo, hi) (a failed write): they leave
        the ready list (their publishers get nacks from the store)."""

        def lost(e: Any) -> bool:
            return lo <= seq_of(e) < hi

        if isinstance(self.messages, PriorityMessages):
            n = self.messages.remove_if(lost)
        else:
            before = len(self.messages)
            self.messages = deque(e for e in self.messages if not lost(e))
            n = before - len(self.messages)
        log.error("queue '%s': %d messages dropped after a failed write", printable(self.name), n)

    def delete(self) -> int:
        self.deleted = True
        self.cancel_timers()
        self.flow.caught_up()
        n = self.ready
        qlog, self.log = self.log, None
        if qlog is not None and self._store is not None:
            self.messages.clear()
            self._store.drop_queue_log(qlog)
        else:
            self.purge()
        return n

    # -- the store ---------------------------------------------------------------
    def open_store(self, store: LogStore) -> None:
        qlog = store.queue_log(self.vhost.name, self.name)
        qlog.on_lost = self._records_lost
        self.log = qlog
        self._store = store

    def use_scratch(self, store: LogStore) -> None:
        if self.log is None:
            self._scratch = store

    def _start_paging(self) -> Any:
        """A backlog in a queue without a log: from now on messages go to a scratch log."""
        assert self._scratch is not None
        try:
            qlog = self._scratch.queue_log(self.vhost.name, self.name)
        except OSError as exc:
            log.error("queue '%s': cannot page its backlog to disk (%s); it stays in memory",
                      printable(self.name), exc)
            self._scratch = None
            return None
        qlog.on_lost = self._records_lost
        self.log = qlog
        self._store = self._scratch
        self.paging = True
        return qlog

    def _stop_paging(self) -> None:
        """The paged queue is empty with nothing unacked: drop its scratch log."""
        qlog, self.log = self.log, None
        self.paging = False
        if qlog is not None and self._store is not None:
            self._store.drop_queue_log(qlog)
        self._store = None

    def recover(self) -> Recovered | None:
        """Rebuild the ready messages from the log, in order; those at or below the
        delivery watermark go out redelivered."""
        if self.log is None:
            return None
        refs, upto, problems = self.log.recover()
        self.redeliver_upto = upto
        self.bytes_ready = self.log.recovered_bytes
        if self.max_priority is not None:
            for r in refs:
                m = self._load(r)
                m.priority = framing.priority(m.header)
                self.messages.append(m)
        else:
            self.messages = deque(refs)
        if refs:
            self.plain = False  # recovered messages may carry deadlines
            self.expire()
        redelivered = sum(1 for r in refs if r <= upto) if upto else 0
        return Recovered(len(refs), redelivered, problems)

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
        loop = self.vhost.loop
        if loop is None:
            return
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
        self.expiry_timer = loop.call_later(delay_ms / 1000.0 + 0.001, self._expiry_fired)

    def _expiry_fired(self) -> None:
        self.expiry_timer = None
        if not self.deleted:
            self.expire()

    def start(self) -> None:
        self.arm_expires()

    def policies_applied(self) -> None:
        """A new max-length trims now, a new x-expires re-arms; expiry is checked at the head."""
        if self.deleted:
            return
        if self.expires is None and self.expires_timer is not None:
            self.expires_timer.cancel()
            self.expires_timer = None
        self.arm_expires()
        self._after_push()

    def arm_expires(self) -> None:
        """x-expires: delete the queue once unused (no consumers, no get, no redeclare)."""
        loop = self.vhost.loop
        if self.expires is None or loop is None:
            return
        if self.expires_timer is not None:
            self.expires_timer.cancel()
        due = self.last_used + self.expires / 1000.0 - time.monotonic()
        self.expires_timer = loop.call_later(max(due, 0.0), self._expires_fired)

    def _expires_fired(self) -> None:
        self.expires_timer = None
        if self.deleted:
            return
        assert self.expires is not None
        if self.consumers:
            self.last_used = time.monotonic()
        elif time.monotonic() - self.last_used >= self.expires / 1000.0 - 0.001:
            self.vhost.delete_queue(self, reason="expired")
            return
        self.arm_expires()

    def cancel_timers(self) -> None:
        """Stop the expiry and x-expires timers."""
        for t in (self.expiry_timer, self.expires_timer):
            if t is not None:
                t.cancel()
        self.expiry_timer = self.expires_timer = None

    # -- consumers -----------------------------------------------------------
    def add_consumer(self, c: Subscriber) -> None:
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

    def remove_consumer(self, c: Subscriber) -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
        self.last_used = time.monotonic()
        if self.exclusive_consumer is c:
            self.exclusive_consumer = None
        if self.rr >= len(self.consumers):
            self.rr = 0
        if not self.consumers:
            self.flow.caught_up()  # a queue without consumers absorbs its backlog

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
            if self.flow.behind:
                self.flow.check_caught_up(len(msgs))
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
        if self.flow.behind:
            self.flow.check_caught_up(len(msgs))

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
        if self.flow.behind:
            self.flow.check_caught_up(len(msgs))

    def _pick(self) -> Subscriber | None:
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
