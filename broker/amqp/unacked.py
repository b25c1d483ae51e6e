"""Unacknowledged deliveries of one channel: delivery tags, credit, settling.

Theory of operation
-------------------
Every delivery on a channel (Basic.Deliver, Basic.GetOk, a direct reply) takes
the next delivery tag, counting from 1.  A delivery the client must ack is kept
in ``by_tag`` (tag -> (message, queue, consumer or None for Basic.Get)), a plain
dict in tag order, until an ack, nack or reject names it; ``multiple`` names
every tag up to and including the one given (tag 0 with ``multiple``: all).  A
tag that is not there is RabbitMQ's ``PRECONDITION_FAILED - unknown delivery
tag N``, which closes the channel.

Credit: each consumer counts its own unacked deliveries (``Consumer.unacked``,
limited by its prefetch) and the channel counts them all in ``global_unacked``
(limited by ``global_prefetch``, RabbitMQ's ``basic.qos(global=True)``).  Taking
a delivery gives its credit back.  Inside a transaction the deliveries are taken
but their credit is kept until the commit (:meth:`take_held`, :meth:`release`);
a rollback puts them back in tag order (:meth:`restore`).

A consumer whose deliveries timed out (:mod:`broker.amqp.ack_timeout`) loses
them: they go back to their queue and their tags are remembered in ``expired``
(the most recent :data:`EXPIRED_KEPT` of them), so that a late ack, nack or
reject of one is ignored instead of closing the channel, as RabbitMQ does.

The channel reads and writes ``by_tag``, ``next_tag`` and ``global_unacked``
directly on the delivery and single-ack hot paths; everything else goes through
the methods here.  Nothing here touches a queue: callers settle what they took.
"""

from __future__ import annotations

from typing import Any, Protocol

from protocol import errors
from protocol.errors import ChannelError

from ..message import Message


class Credit(Protocol):
    """A consumer as far as credit goes: how many of its deliveries are unacked."""

    unacked: int


EXPIRED_KEPT = 65536  # timed-out tags remembered per channel, for late acks

Entry = tuple[Message, Any, "Credit | None"]  # (message, its queue, its consumer; None for Basic.Get)


def unknown_tag(tag: int, class_id: int, method_id: int) -> ChannelError:
    """RabbitMQ's error for an ack/nack/reject of a tag that is not outstanding."""
    return ChannelError(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}", class_id, method_id)


def by_queue(entries: list[Entry]) -> dict[Any, list[Message]]:
    """Group taken deliveries by their queue, keeping their order within each queue."""
    out: dict[Any, list[Message]] = {}
    for m, q, _c in entries:
        out.setdefault(q, []).append(m)
    return out


class UnackedDeliveries:
    """Delivery tags and the deliveries awaiting an ack on one channel."""

    __slots__ = ("by_tag", "next_tag", "prefetch", "global_prefetch", "global_unacked", "expired")

    def __init__(self) -> None:
        self.by_tag: dict[int, Entry] = {}
        self.next_tag = 0  # the last tag handed out
        self.prefetch = 0  # basic.qos(global=False): for consumers started from now on
        self.global_prefetch = 0  # basic.qos(global=True): for the whole channel
        self.global_unacked = 0
        self.expired: dict[int, None] = {}  # tags taken back by a consumer timeout, oldest first

    def __len__(self) -> int:
        return len(self.by_tag)

    def new_tag(self) -> int:
        """The next delivery tag."""
        self.next_tag += 1
        return self.next_tag

    def track(self, tag: int, msg: Message, queue: Any, consumer: Credit | None) -> None:
        """Remember a delivery that needs an ack (the consumer's credit is used up by one)."""
        self.by_tag[tag] = (msg, queue, consumer)
        if consumer is not None:
            consumer.unacked += 1
            self.global_unacked += 1

    def tags(self, tag: int, multiple: bool, class_id: int, method_id: int) -> list[int]:
        """The outstanding tags an ack/nack/reject of ``tag`` names, in tag order."""
        u = self.by_tag
        if multiple and tag == 0:
            return list(u)
        if tag not in u:
            if self.expired.pop(tag, 0) is None:  # timed out already: nothing left to settle
                if not multiple:
                    return []
            else:
                raise unknown_tag(tag, class_id, method_id)
        if not multiple:
            return [tag]
        keys = []
        for t in u:
            if t > tag:
                break
            keys.append(t)
        return keys

    def take(self, tag: int, multiple: bool, class_id: int, method_id: int) -> list[Entry]:
        """Remove the deliveries an ack/nack/reject names and give their credit back."""
        u = self.by_tag
        if not multiple:
            e = u.pop(tag, None)
            if e is None:
                if self.expired.pop(tag, 0) is None:
                    return []
                raise unknown_tag(tag, class_id, method_id)
            out = [e]
        else:
            out = [u.pop(t) for t in self.tags(tag, multiple, class_id, method_id)]
        self.release(out)
        return out

    def take_held(self, tag: int, multiple: bool, class_id: int, method_id: int) -> list[tuple[int, Entry]]:
        """Remove the deliveries an ack/nack/reject names inside a transaction:
        their credit stays used until :meth:`release` (commit) or :meth:`restore` (rollback)."""
        u = self.by_tag
        return [(t, u.pop(t)) for t in self.tags(tag, multiple, class_id, method_id)]

    def release(self, entries: list[Entry]) -> None:
        """Give back the credit of taken deliveries."""
        n = 0
        for _m, _q, c in entries:
            if c is not None:
                c.unacked -= 1
                n += 1
        self.global_unacked -= n

    def restore(self, pairs: list[tuple[int, Entry]]) -> None:
        """Put taken (tag, delivery) pairs back as outstanding, everything in tag order."""
        if not pairs:
            return
        merged = dict(self.by_tag)
        merged.update(pairs)
        self.by_tag.clear()
        self.by_tag.update(sorted(merged.items()))

    def expire_consumer(self, consumer: Credit) -> list[Entry]:
        """Take back every delivery of ``consumer`` (its consumer timeout fired); a late
        settlement of one of their tags will be ignored."""
        u = self.by_tag
        tags = [t for t, e in u.items() if e[2] is consumer]
        out = [u.pop(t) for t in tags]
        self.release(out)
        expired = self.expired
        for t in tags:
            expired[t] = None
        while len(expired) > EXPIRED_KEPT:
            del expired[next(iter(expired))]
        return out

    def take_all(self) -> list[Entry]:
        """Remove every outstanding delivery (the channel is going; credit no longer matters)."""
        out = list(self.by_tag.values())
        self.by_tag.clear()
        self.expired.clear()
        return out
