"""Queues: a FIFO of messages, the consumers that take from it, dispatch.

A queue hands messages to consumers round-robin, skipping any consumer that
has no credit (prefetch reached, channel flow off, socket congested).  Whenever
credit may have come back (an ack, a resumed socket, a new consumer), the party
that freed it calls :meth:`Queue.dispatch`.  Requeued messages go back to
their original place (ordered by the queue's sequence numbers) and are marked
redelivered.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from .message import Message

if TYPE_CHECKING:
    from .channel import Consumer
    from .exchange import Binding


KEEP_IN_MEMORY = 4096


def _seq(e: Any) -> int:
    return e if type(e) is int else e.seq


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
        self.messages: deque[Message] = deque()
        self.consumers: list["Consumer"] = []
        self.exclusive_consumer: "Consumer | None" = None
        self.bindings: dict[tuple, "Binding"] = {}
        self.seq = 0
        self.rr = 0
        self.unacked = 0
        self.had_consumers = False
        self.deleted = False
        self.log: Any = None  # storage.log.QueueLog of a durable queue
        self.redeliver_upto = 0  # recovered refs at or below this were delivered before
        # counters for stats
        self.published = 0
        self.delivered = 0
        self.acked = 0

    # -- messages ------------------------------------------------------------
    def push(self, msg: Message, persistent: bool = False) -> bool:
        """Enqueue; True if the message went to the log and needs an fsync to be safe."""
        self.published += 1
        qlog = self.log
        if qlog is None:
            self.seq += 1
            msg.seq = self.seq
            self.messages.append(msg)
            if self.consumers:
                self.dispatch()
            return False
        ref = qlog.append(persistent, msg.ex_raw, msg.rk_raw, msg.header, msg.body)
        msg.ref = msg.seq = ref
        # a short queue keeps its messages in memory; a backlog keeps only refs
        self.messages.append(msg if len(self.messages) < KEEP_IN_MEMORY else ref)
        if self.consumers:
            self.dispatch()
        return persistent

    def _load(self, ref: int) -> Message:
        """A message that is only on disk, read back for delivery."""
        _p, ex_raw, rk_raw, header, body = self.log.read(ref)
        m = Message(ex_raw[1:].decode(), rk_raw[1:].decode(), ex_raw, rk_raw, header, body)
        m.ref = m.seq = ref
        m.redelivered = ref <= self.redeliver_upto
        return m

    def _take(self) -> Message:
        m = self.messages.popleft()
        if type(m) is int:
            m = self._load(m)
        if self.log is not None:
            self.log.mark_delivered(m.ref)
        self.unacked += 1
        self.delivered += 1
        return m

    def get(self) -> Message | None:
        if not self.messages:
            return None
        return self._take()

    def settle(self, msg: Message) -> None:
        """An unacked message was acked (or dropped): it is gone for good."""
        self.unacked -= 1
        self.acked += 1
        if msg.ref is not None and self.log is not None:
            self.log.settle(msg.ref)

    def requeue(self, msgs: Iterable[Message]) -> None:
        """Put delivered messages back in their original order, redelivered."""
        back = sorted(msgs, key=_seq)
        if not back:
            return
        if self.deleted:
            return
        q = self.messages
        for m in back:
            m.redelivered = True
            self.unacked -= 1
        if not q or back[-1].seq < _seq(q[0]):
            q.extendleft(reversed(back))
        else:
            seqs = [_seq(m) for m in q]
            for m in reversed(back):
                i = bisect.bisect_left(seqs, m.seq)
                q.insert(i, m)
                seqs.insert(i, m.seq)
        if self.consumers:
            self.dispatch()

    def purge(self) -> int:
        n = len(self.messages)
        qlog = self.log
        if qlog is not None:
            for e in self.messages:
                qlog.settle(e if type(e) is int else e.ref)
        self.messages.clear()
        return n

    @property
    def ready(self) -> int:
        return len(self.messages)

    # -- consumers -----------------------------------------------------------
    def add_consumer(self, c: "Consumer") -> None:
        self.consumers.append(c)
        self.had_consumers = True
        if c.exclusive:
            self.exclusive_consumer = c

    def remove_consumer(self, c: "Consumer") -> None:
        try:
            self.consumers.remove(c)
        except ValueError:
            return
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
