"""In-process unit tests of the consumer timeout's pieces, on a real event loop and real queues:
the timer over delivery-tag marks (never early, at most a tick late), where its limit comes
from (consumer argument, the queue's effective settings with a policy, the broker default),
and the unacked map's memory of timed-out tags.  End to end: test_consumer_timeout.py."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from broker.amqp.ack_timeout import AckTimer, queue_timeout, timed_out_text
from broker.amqp.unacked import UnackedDeliveries
from broker.message import Message
from broker.queues.base import PolicyRef
from broker.vhost import VHost
from protocol.errors import ChannelError


class Target:
    """A channel as the timer sees it, recording what the timer tells it."""

    number = 1

    def __init__(self) -> None:
        self.unacked_deliveries = UnackedDeliveries()
        self.consumers: dict = {}
        self.cancelled: list[tuple[object, int, float]] = []
        self.closed: list[tuple[int, float]] = []

    def consumer_timed_out(self, consumer, timeout_ms: int) -> None:
        self.cancelled.append((consumer, timeout_ms, time.monotonic()))
        self.unacked_deliveries.expire_consumer(consumer)

    def ack_timed_out(self, timeout_ms: int) -> None:
        self.closed.append((timeout_ms, time.monotonic()))
        self.unacked_deliveries.take_all()


class Sub:
    """A consumer as the timer sees it (its own limit, its queue, its credit)."""

    def __init__(self, queue, timeout_ms: int | None) -> None:
        self.queue = queue
        self.timeout_ms = timeout_ms
        self.unacked = 0


def _msg() -> Message:
    return Message("", "q", b"\x00", b"\x01q", b"", b"x")


def _deliver(t: Target, timer: AckTimer, queue, consumer) -> int:
    led = t.unacked_deliveries
    tag = led.next_tag + 1
    if timer.handle is None:
        timer.start(tag - 1)
    led.next_tag = tag
    led.track(tag, _msg(), queue, consumer)
    return tag


@pytest.fixture
def queue():
    vh = VHost("/")
    q, _ = vh.declare_queue("q", False, False, False, {}, None)
    return q


def test_limit_comes_from_consumer_then_queue_policy_then_default(queue):
    assert queue_timeout(queue, 9000) == 9000
    queue.apply_policies(PolicyRef("ct", {"consumer-timeout": 400}), None)
    assert queue_timeout(queue, 9000) == 400
    queue.apply_policies(None, None)
    queue.arguments["x-consumer-timeout"] = 700
    queue.apply_policies(PolicyRef("ct", {"consumer-timeout": 500}), None)
    assert queue_timeout(queue, 9000) == 500  # argument and policy: the lower wins
    t = Target()
    timer = AckTimer(t, asyncio.new_event_loop(), 9000, True)
    assert timer.timeout_of(queue, SimpleNamespace(timeout_ms=50)) == 50
    assert timer.timeout_of(queue, SimpleNamespace(timeout_ms=None)) == 500
    assert timer.timeout_of(queue, None) == 500  # Basic.Get
    timer.loop.close()


def test_policy_timeout_fires_never_early_and_at_most_a_tick_late(queue):
    queue.apply_policies(PolicyRef("ct", {"consumer-timeout": 300}), None)

    async def main() -> Target:
        t = Target()
        c = Sub(queue, None)
        t.consumers["c"] = c
        timer = AckTimer(t, asyncio.get_running_loop(), 60_000, True)
        t0 = time.monotonic()
        _deliver(t, timer, queue, c)
        await asyncio.sleep(0.2)
        second = _deliver(t, timer, queue, c)
        await asyncio.sleep(0.25)
        assert len(t.cancelled) == 1
        _c, limit, at = t.cancelled[0]
        assert limit == 300 and 0.3 <= at - t0 < 0.3 + 0.5  # tick: 30 ms, plus a loaded machine
        # the consumer's deliveries all went back; the second's late ack is ignored
        assert t.unacked_deliveries.take(second, False, 60, 80) == []
        await asyncio.sleep(0.1)
        assert timer.handle is None  # nothing unacked: the timer stopped
        return t

    asyncio.run(main())


def test_basic_get_and_non_notify_clients_close_the_channel(queue):
    async def main() -> None:
        t = Target()
        timer = AckTimer(t, asyncio.get_running_loop(), 200, notify=True)
        timer.get_queues.add(queue)
        t0 = time.monotonic()
        _deliver(t, timer, queue, None)
        await asyncio.sleep(0.4)
        assert [x[0] for x in t.closed] == [200] and t.closed[0][1] - t0 >= 0.2
        t2 = Target()
        c = Sub(queue, 100)
        t2.consumers["c"] = c
        timer2 = AckTimer(t2, asyncio.get_running_loop(), 60_000, notify=False)
        _deliver(t2, timer2, queue, c)
        await asyncio.sleep(0.3)
        assert [x[0] for x in t2.closed] == [100] and not t2.cancelled

    asyncio.run(main())


def test_an_old_delivery_with_a_long_limit_does_not_hide_a_newer_short_one(queue):
    """Deliveries are walked from the oldest while old enough for the shortest limit."""
    async def main() -> None:
        t = Target()
        slow = Sub(queue, 10_000)
        fast = Sub(queue, 250)
        t.consumers.update(slow=slow, fast=fast)
        timer = AckTimer(t, asyncio.get_running_loop(), 60_000, True)
        _deliver(t, timer, queue, slow)
        await asyncio.sleep(0.1)
        _deliver(t, timer, queue, fast)
        await asyncio.sleep(0.5)
        assert [c for c, _l, _t in t.cancelled] == [fast]
        assert len(t.unacked_deliveries) == 1  # the slow consumer keeps its delivery
        timer.stop()

    asyncio.run(main())


def test_unacked_remembers_timed_out_tags():
    led = UnackedDeliveries()
    a, b = SimpleNamespace(unacked=0), SimpleNamespace(unacked=0)
    for tag, c in ((1, a), (2, b), (3, a), (4, b)):
        led.next_tag = tag
        led.track(tag, _msg(), "q", c)
    assert [e[2] for e in led.expire_consumer(a)] == [a, a]
    assert a.unacked == 0 and led.global_unacked == 2
    assert led.take(1, False, 60, 80) == []  # late ack of a timed-out delivery
    assert len(led.take(3, True, 60, 80)) == 1  # multiple up to a timed-out tag: tag 2 only
    with pytest.raises(ChannelError) as e:
        led.take(3, False, 60, 80)  # remembered once only
    assert e.value.text == "PRECONDITION_FAILED - unknown delivery tag 3"
    with pytest.raises(ChannelError):
        led.take(99, False, 60, 80)
    assert timed_out_text(3, 1000).startswith("delivery acknowledgement on channel 3 timed out. Timeout value used: "
                                              "1000 ms.")


def test_deliveries_made_while_handling_a_timeout_keep_the_older_marks(queue):
    """A's timeout requeues to B on the same channel: B's older delivery keeps its age."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t = Target()
        a, b = Sub(queue, 300), Sub(queue, 1000)
        t.consumers.update(a=a, b=b)
        timer = AckTimer(t, loop, 60_000, True)
        handler = t.consumer_timed_out

        def timed_out(consumer, limit):
            handler(consumer, limit)
            if consumer is a:
                _deliver(t, timer, queue, b)  # the requeued message goes to b at once

        t.consumer_timed_out = timed_out  # type: ignore[method-assign]
        t0 = time.monotonic()
        _deliver(t, timer, queue, b)
        await asyncio.sleep(0.1)
        _deliver(t, timer, queue, a)
        while len(t.cancelled) < 2 and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        (c1, _l1, at1), (c2, _l2, at2) = t.cancelled
        assert c1 is a and c2 is b
        assert 1.0 <= at2 - t0 < 1.28  # counted from b's first delivery, not from a's timeout (>= 1.4)
        timer.stop()

    asyncio.run(main())
