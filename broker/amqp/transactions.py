"""AMQP transactions (tx.select) of one channel: what is buffered until commit.

Theory of operation
-------------------
On a transactional channel a completed publish is not routed but buffered
(:meth:`Transaction.publish`), and an ack, nack or reject is not applied but
buffered with its deliveries (:meth:`Transaction.settle`); the deliveries leave
the channel's unacked map at once (so that a second ack of the same tag is an
``unknown delivery tag``) but keep their consumer's credit.

``tx.commit`` (:meth:`Transaction.commit`) hands everything over, in arrival
order, and starts a new transaction: the channel routes the publishes (to
exchanges that still exist), gives the credit back and applies the settlements
grouped as acks, requeues and rejects.  ``tx.rollback`` (:meth:`Transaction.rollback`)
drops the publishes and hands back the taken deliveries, to be outstanding
again in tag order.  A closing channel rolls back.
"""

from __future__ import annotations

from typing import Any

from ..message import Message
from .unacked import Entry

BufferedPublish = tuple[Any, Message, int]  # (exchange, message, mandatory/immediate bits)
BufferedSettle = tuple[int, Entry, "bool | None"]  # (tag, delivery, requeue: None ack / True / False)


class Transaction:
    """The publishes and settlements of the current transaction."""

    __slots__ = ("publishes", "acks")

    def __init__(self) -> None:
        self.publishes: list[BufferedPublish] = []
        self.acks: list[BufferedSettle] = []

    def publish(self, exchange: Any, msg: Message, bits: int) -> None:
        """Buffer a completed publish."""
        self.publishes.append((exchange, msg, bits))

    def settle(self, taken: list[tuple[int, Entry]], requeue: bool | None) -> None:
        """Buffer an ack (``requeue`` None), a requeue (True) or a reject (False) of taken deliveries."""
        self.acks.extend((t, e, requeue) for t, e in taken)

    def commit(self) -> tuple[list[BufferedPublish], list[BufferedSettle]]:
        """Everything buffered, in order; the next transaction starts empty."""
        out = (self.publishes, self.acks)
        self.publishes, self.acks = [], []
        return out

    def rollback(self) -> list[tuple[int, Entry]]:
        """Drop the publishes; return the taken deliveries as (tag, delivery) pairs."""
        taken = [(t, e) for t, e, _r in self.acks]
        self.publishes, self.acks = [], []
        return taken


def settle_groups(acks: list[BufferedSettle]) -> list[tuple[bool | None, list[Entry]]]:
    """Committed settlements grouped as acks, then requeues, then rejects (each group in order)."""
    out = []
    for requeue in (None, True, False):
        group = [e for _t, e, r in acks if r is requeue]
        if group:
            out.append((requeue, group))
    return out
