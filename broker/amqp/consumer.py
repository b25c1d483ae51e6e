"""A consumer: one Basic.Consume subscription of a channel on a queue.

A queue hands it messages through two calls, :meth:`Consumer.can_take` (is
there credit?) and :meth:`Consumer.deliver`.  Credit follows RabbitMQ: a
consumer stops taking when its channel is closing or flow-stopped, when the
connection's output is congested, when its own prefetch count is reached, or
when the channel-global prefetch count (``basic.qos(global=True)``) is reached.
The channel-wide counts live in the channel's :class:`UnackedDeliveries`, which
the consumer reads directly (it is on the delivery hot path).
"""

from __future__ import annotations

import base64
import os
from typing import Any, Protocol

from protocol import names

from ..message import Message
from .unacked import UnackedDeliveries


class ConsumerConnection(Protocol):
    """What a consumer reads of its connection to decide whether it may take a message."""

    writing_paused: bool
    out_size: int
    OUT_HIGH: int
    starved: bool


class ConsumerChannel(Protocol):
    """What a consumer needs of the channel it belongs to."""

    active: bool
    unacked_deliveries: UnackedDeliveries

    @property
    def conn(self) -> ConsumerConnection: ...

    def deliver(self, c: "Consumer", queue: Any, msg: Message) -> None: ...


def new_consumer_tag() -> str:
    """A server-chosen consumer tag, in RabbitMQ's ``amq.ctag-...`` form."""
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class Consumer:
    """A basic.consume subscription of one channel on one queue."""

    __slots__ = (
        "channel", "queue", "tag", "tag_raw", "no_ack", "exclusive", "prefetch", "unacked", "arguments", "priority",
        "ledger", "timeout_ms",
    )

    def __init__(
        self, channel: ConsumerChannel, queue: Any, tag: str, no_ack: bool, exclusive: bool, prefetch: int,
        arguments: dict,
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
        self.ledger = channel.unacked_deliveries
        p = arguments.get("x-priority", 0) if arguments else 0
        self.priority = p if isinstance(p, int) and not isinstance(p, bool) else 0
        t = arguments.get("x-consumer-timeout") if arguments else None
        # the consumer's own consumer timeout (ms), over the queue's and the broker's
        self.timeout_ms: int | None = t if isinstance(t, int) and not isinstance(t, bool) else None

    def can_take(self) -> bool:
        """True if this consumer has credit for one more message now."""
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
        led = self.ledger
        if led.global_prefetch and led.global_unacked >= led.global_prefetch:
            return False
        return True

    def deliver(self, queue: Any, msg: Message) -> None:
        """Send ``msg`` from ``queue`` to the client (the channel assigns the delivery tag)."""
        self.channel.deliver(self, queue, msg)
