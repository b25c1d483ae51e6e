"""The consumer timeout of one channel: deliveries left unacknowledged for too long.

Theory of operation
-------------------
A delivery that waits for an ack may not wait forever (RabbitMQ's consumer
timeout).  Its limit is, first found: the consumer's ``x-consumer-timeout``
argument, the queue's effective ``x-consumer-timeout`` (argument or
``consumer-timeout`` policy, see :mod:`broker.queues.settings`), or the broker's
``--consumer-timeout``.

Nothing is stored per delivery.  Delivery tags grow with time, so a sparse list
of *marks* ``(tag, time)`` taken by a coarse timer says enough: a tag not above
a mark's tag was delivered no later than the mark's time.  The timer runs only
while the channel has unacked deliveries; each tick adds a mark (when tags moved),
drops the marks older than the oldest unacked tag, and walks the unacked
deliveries from the oldest while they are old enough to have expired under the
shortest limit in use on the channel.  A timeout therefore fires at most one tick
late and never early; the tick is a tenth of that shortest limit, between 50 ms
and 1 s.

When a delivery has timed out, the channel is told (:meth:`TimeoutTarget.consumer_timed_out`
for a consumer whose client understands ``basic.cancel``, else
:meth:`TimeoutTarget.ack_timed_out`, which closes the channel with RabbitMQ's
406); the channel does the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from .unacked import UnackedDeliveries

# RabbitMQ's defaults: 30 minutes; 4.3's response to a timeout
DEFAULT_TIMEOUT_MS = 1_800_000
NOTIFY_CONSUMER = "notify-consumer"
CLOSE_CHANNEL = "close-channel"
RESPONSES = (NOTIFY_CONSUMER, CLOSE_CHANNEL)

MIN_TICK = 0.05
MAX_TICK = 1.0


def timed_out_text(channel: int, timeout_ms: int) -> str:
    """RabbitMQ's text of the 406 that closes a channel whose delivery timed out."""
    return (
        f"delivery acknowledgement on channel {channel} timed out. Timeout value used: {timeout_ms} ms. "
        "This timeout value can be configured, see consumers doc guide to learn more"
    )


def queue_timeout(queue: Any, default_ms: int) -> int:
    """A queue's effective ``x-consumer-timeout``, or the broker's default."""
    v = queue.effective.get("x-consumer-timeout")
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    return default_ms


class TimeoutTarget(Protocol):
    """What the timer needs of its channel."""

    number: int
    unacked_deliveries: UnackedDeliveries
    consumers: dict[str, Any]

    def consumer_timed_out(self, consumer: Any, timeout_ms: int) -> None: ...

    def ack_timed_out(self, timeout_ms: int) -> None: ...


class AckTimer:
    """Marks and the coarse timer that finds timed-out deliveries on one channel."""

    __slots__ = ("channel", "loop", "default_ms", "notify", "marks", "handle", "get_queues")

    def __init__(self, channel: TimeoutTarget, loop: asyncio.AbstractEventLoop, default_ms: int,
                 notify: bool) -> None:
        self.channel = channel
        self.loop = loop
        self.default_ms = default_ms
        self.notify = notify  # notify-consumer (and the client understands basic.cancel)
        self.marks: deque[tuple[int, float]] = deque()
        self.handle: asyncio.TimerHandle | None = None
        self.get_queues: set[Any] = set()  # queues this channel took Basic.Get deliveries from

    @property
    def idle(self) -> bool:
        return self.handle is None

    def start(self, last_tag: int) -> None:
        """A delivery needing an ack is about to take tag ``last_tag + 1``: start ticking."""
        self.marks.clear()
        self.marks.append((last_tag, self.loop.time()))
        self.handle = self.loop.call_later(self._tick_interval(), self.tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.marks.clear()

    def timeout_of(self, queue: Any, consumer: Any) -> int:
        """The limit of a delivery from ``queue`` to ``consumer`` (None: Basic.Get)."""
        if consumer is not None and consumer.timeout_ms is not None:
            return int(consumer.timeout_ms)
        return queue_timeout(queue, self.default_ms)

    def shortest(self) -> int:
        """The shortest limit any delivery on the channel can have."""
        low = self.default_ms
        for c in self.channel.consumers.values():
            low = min(low, self.timeout_of(c.queue, c))
        for q in self.get_queues:
            low = min(low, queue_timeout(q, self.default_ms))
        return low

    def _tick_interval(self, shortest: int | None = None) -> float:
        ms = self.shortest() if shortest is None else shortest
        return min(MAX_TICK, max(MIN_TICK, ms / 10_000))

    def tick(self) -> None:
        # ``handle`` stays set while this runs: deliveries made meanwhile (requeued messages
        # going to other consumers) must not restart the marks
        ch = self.channel
        led = ch.unacked_deliveries
        by_tag = led.by_tag
        if not by_tag:
            self.stop()
            self.get_queues.clear()
            return
        now = self.loop.time()
        marks = self.marks
        if marks[-1][0] != led.next_tag:
            marks.append((led.next_tag, now))
        oldest = next(iter(by_tag))
        while len(marks) > 1 and marks[0][0] < oldest:
            marks.popleft()
        shortest = self.shortest()
        expired: dict[Any, int] = {}
        i = 0
        for tag, (_m, q, c) in by_tag.items():
            while marks[i][0] < tag:
                i += 1
            age_ms = (now - marks[i][1]) * 1000
            if age_ms < shortest:
                break  # later tags are younger still
            limit = self.timeout_of(q, c)
            if age_ms < limit or c in expired:
                continue
            if c is None or not self.notify:
                ch.ack_timed_out(limit)
                self.stop()  # the channel is closing
                return
            expired[c] = limit
        for c, limit in expired.items():
            ch.consumer_timed_out(c, limit)
        if self.handle is None:
            return  # stopped meanwhile (the channel closed)
        if by_tag:
            self.handle = self.loop.call_later(self._tick_interval(shortest), self.tick)
        else:
            self.stop()
