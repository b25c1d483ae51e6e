"""Publisher flow control: a publisher whose messages go to a queue that is behind is paused.

Theory of operation
-------------------
RabbitMQ's credit flow blocks a publisher's connection from reading its socket while the
processes its messages go to lag behind.  Here one event loop does all the work, so what
lags is a *queue whose consumers do not keep up*: its ready messages pile up and every new
one waits longer.  Two small objects carry the scheme:

- :class:`QueueFlow`, one per queue.  The queue calls :meth:`QueueFlow.check_behind` when it
  holds more than ``high`` ready messages (``--flow-threshold``, 400 by default: RabbitMQ's
  default credit) while it has consumers (only then, so the common publish pays one length
  comparison), and :meth:`QueueFlow.check_caught_up` after delivering; at or below ``low``
  (half of it) it is no longer behind (hysteresis), and so it is when it loses its consumers,
  is purged or deleted.  The threshold bounds what flow control adds to a message's wait:
  400 messages are about 13 ms at 30k msg/s.  A queue with no consumer is never behind: it
  absorbs a backlog, and keeps its memory flat by paging messages to its log.
- :class:`PublisherFlow`, one per connection (uvicorn's ``FlowControl`` is the model).  A
  publish routed to a behind queue *charges* it: the connection stops reading its socket
  (``pause``) until every queue it waits on has caught up (``resume``).  The management API
  shows such a connection in RabbitMQ's ``flow`` state.

A connection that consumes from a queue is not held back by that queue: while it is not read,
neither are its acks, and the queue could not catch up (RabbitMQ's advice stands: publish and
consume on separate connections).

A queue whose consumers take nothing at all (all stuck at their prefetch) would stop its
publishers for good; after ``STALL_AFTER`` seconds without a delivery from a queue the
connection is released from it, and that queue charges nobody until it delivers again (its
backlog is then paged to its log like any other).

``QueueFlow.behind_count`` counts the queues that are behind in this process, so that a publish
checks its queues only when some queue somewhere is behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI reads FLOW_THRESHOLD: importing this module stays light
    import asyncio

FLOW_THRESHOLD = 400  # ready messages of a queue with consumers: it is behind above this, caught up at half
NO_FLOW = 2**62  # the threshold 0 means no flow control: no queue is ever that long
STALL_AFTER = 2.0  # seconds without a delivery before a behind queue stops charging publishers


def consumes(conn: object, queue: Any) -> bool:
    """Does connection ``conn`` have a consumer on ``queue``?"""
    return conn is not None and any(getattr(c.channel, "conn", None) is conn for c in queue.consumers)


class QueueFlow:
    """Whether one queue is behind, and the publishers waiting for it to catch up."""

    __slots__ = ("behind", "waiters", "stalled_at", "high", "low")

    behind_count = 0  # queues behind in this process: a publish looks only when this is not 0

    def __init__(self, threshold: int = FLOW_THRESHOLD) -> None:
        self.high = threshold if threshold > 0 else NO_FLOW  # behind above this many ready messages
        self.low = threshold // 2  # ... and caught up again at or below this
        self.behind = False
        self.waiters: set[PublisherFlow] = set()
        self.stalled_at = -1  # the queue's delivery count when it was found stalled

    def check_behind(self, delivered: int) -> None:
        """The queue is over ``high`` ready messages and has consumers."""
        if not self.behind and delivered != self.stalled_at:
            self.behind = True
            QueueFlow.behind_count += 1

    def check_caught_up(self, ready: int) -> None:
        """After deliveries: caught up at or below ``low`` ready messages."""
        if self.behind and ready <= self.low:
            self.caught_up()

    def caught_up(self) -> None:
        """Not behind (any more): every waiting publisher is released from this queue."""
        if self.behind:
            self.behind = False
            QueueFlow.behind_count -= 1
        waiters, self.waiters = self.waiters, set()
        for w in waiters:
            w.released(self)

    def stalled(self, delivered: int) -> None:
        """Nothing was delivered for a while: charge nobody until something is."""
        self.stalled_at = delivered
        self.caught_up()


class PublisherFlow:
    """One connection's flow state: the behind queues it waits on, and its pause/resume."""

    __slots__ = ("waiting", "throttled", "since", "pause", "resume", "loop", "_check")

    def __init__(self, loop: asyncio.AbstractEventLoop, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self.loop = loop
        self.pause = pause
        self.resume = resume
        self.waiting: dict[QueueFlow, tuple[Any, int]] = {}  # flow -> (queue, its delivery count then)
        self.throttled = False
        self.since = 0.0
        self._check: asyncio.TimerHandle | None = None

    def charge(self, queues: Iterable[Any], conn: object = None) -> None:
        """A publish on connection ``conn`` went to ``queues``: wait on those that are behind,
        but not on a queue ``conn`` itself consumes from (its acks would not be read)."""
        for q in queues:
            f = q.flow
            if f.behind and f not in self.waiting and not consumes(conn, q):
                self.waiting[f] = (q, q.delivered)
                f.waiters.add(self)
        if self.waiting and not self.throttled:
            self.throttled = True
            self.since = self.loop.time()
            self._check = self.loop.call_later(STALL_AFTER, self._stall_check)
            self.pause()

    def released(self, f: QueueFlow) -> None:
        """Queue flow ``f`` caught up (or is gone)."""
        self.waiting.pop(f, None)
        if not self.waiting and self.throttled:
            self.throttled = False
            if self._check is not None:
                self._check.cancel()
                self._check = None
            self.resume()

    def _stall_check(self) -> None:
        """Queues that delivered nothing since we began waiting are stalled, not behind."""
        self._check = None
        for f, (q, delivered) in list(self.waiting.items()):
            if q.delivered == delivered:
                f.stalled(delivered)
            else:
                self.waiting[f] = (q, q.delivered)
        if self.throttled:
            self._check = self.loop.call_later(STALL_AFTER, self._stall_check)

    def close(self) -> None:
        """The connection is gone: stop waiting on anything."""
        for f in self.waiting:
            f.waiters.discard(self)
        self.waiting.clear()
        self.throttled = False
        if self._check is not None:
            self._check.cancel()
            self._check = None
