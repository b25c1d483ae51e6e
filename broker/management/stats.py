"""Message rates for the management API, from periodic samples of the engine's counters.

The engine only keeps cumulative counters (per queue: ``published``,
``delivered``, ``acked``; per connection: ``recv_bytes``, ``sent_bytes``).
Every ``interval`` seconds (5 s, like RabbitMQ's ``collect_statistics_interval``;
``BROKER_MANAGEMENT_SAMPLE_INTERVAL`` changes it) :meth:`Stats.sample` reads
them and keeps, per object, the last values and the rates since the sample
before.  A sample is one pass over the queues and connections: nothing is
added to the AMQP hot path.

Totals (overview, vhosts) also count what queues that are gone had done up to
their last sample, so the overview's counters never go down.

Each sample also appends, per vhost, one :class:`Point` (time, ready, unacked,
and the publish / deliver_get / ack counters) to a ring of ``HISTORY_SECONDS``;
the overview sums the rings of the vhosts a user may see into RabbitMQ's
``samples`` (``lengths_age`` / ``msg_rates_age``), so charts start full.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any, NamedTuple

DEFAULT_INTERVAL = 5.0

# the per-queue counters sampled: (published, delivered, acked, ready, unacked)
Q_FIELDS = ("publish", "deliver_get", "ack")


HISTORY_SECONDS = 600  # RabbitMQ's basic retention of samples


class Point(NamedTuple):
    """One vhost's totals at one sample."""

    at_ms: int
    ready: int
    unacked: int
    publish: int
    deliver_get: int
    ack: int


def _interval_from_env() -> float:
    try:
        v = float(os.environ.get("BROKER_MANAGEMENT_SAMPLE_INTERVAL", DEFAULT_INTERVAL))
        return v if v > 0 else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


class Stats:
    """Samples of the broker's counters, and the rates between the last two samples."""

    def __init__(self, broker: Any, interval: float | None = None) -> None:
        self.broker = broker
        self.interval = interval if interval is not None else _interval_from_env()
        self.started = time.time()
        self.last_at = time.monotonic()
        # queue -> (counters tuple, rates tuple)
        self.queues: dict[Any, tuple[tuple, tuple]] = {}
        # connection -> (recv, sent, recv_rate, sent_rate)
        self.conns: dict[Any, tuple[int, int, float, float]] = {}
        self.first_seen: dict[Any, int] = {}  # connection -> ms since the epoch
        # per vhost name: publish/deliver_get/ack of queues that are gone
        self.retired: dict[str, list[int]] = {}
        self.floors: dict[Any, list[int]] = {}  # vhost -> counters last reported
        self._timer: asyncio.TimerHandle | None = None
        self.history: dict[str, deque[Point]] = {}  # vhost name -> its last HISTORY_SECONDS of samples

    def start(self) -> None:
        self.sample()
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop() if self.broker.loop is None else self.broker.loop
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        try:
            self.sample()
        finally:
            self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sample(self) -> None:
        now = time.monotonic()
        dt = now - self.last_at
        self.last_at = now
        old = self.queues
        new: dict[Any, tuple[tuple, tuple]] = {}
        zero = (0.0, 0.0, 0.0, 0.0, 0.0)
        stamp = int(time.time() * 1000)
        vhost_sums: dict[str, list[int]] = {}
        for vh in self.broker.vhosts.values():
            sums = vhost_sums[vh.name] = [0, 0, 0, 0, 0]
            for q in vh.queues.values():
                cur = (q.published, q.delivered, q.acked, q.ready, q.unacked)
                prev = old.get(q)
                if prev is None or dt <= 0:
                    rates = zero
                else:
                    p = prev[0]
                    rates = tuple((c - b) / dt for c, b in zip(cur, p))
                new[q] = (cur, rates)
                for i in range(5):
                    sums[i] += cur[i]
        for q, (cur, _r) in old.items():
            if q not in new:
                acc = self.retired.setdefault(q.vhost.name, [0, 0, 0])
                for i in range(3):
                    acc[i] += cur[i]
        self.queues = new
        for name in [n for n in self.retired if n not in self.broker.vhosts]:
            del self.retired[name]
        for name in [n for n in self.history if n not in self.broker.vhosts]:
            del self.history[name]
        for name, sums in vhost_sums.items():
            self._remember(name, stamp, sums)
        live = set(self.broker.vhosts.values())
        for vh in [v for v in self.floors if v not in live]:
            del self.floors[vh]
        cold = self.conns
        cnew: dict[Any, tuple[int, int, float, float]] = {}
        for conn in self.broker.open_connections:
            prev_c = cold.get(conn)
            r, s = conn.recv_bytes, conn.sent_bytes
            if prev_c is None or dt <= 0:
                cnew[conn] = (r, s, 0.0, 0.0)
            else:
                cnew[conn] = (r, s, (r - prev_c[0]) / dt, (s - prev_c[1]) / dt)
            self.first_seen.setdefault(conn, stamp)
        self.conns = cnew
        for conn in [c for c in self.first_seen if c not in cnew and c not in self.broker.open_connections]:
            del self.first_seen[conn]

    def _remember(self, vhost: str, stamp: int, sums: list[int]) -> None:
        """Append a vhost's sample (its counters include its deleted queues')."""
        ring = self.history.get(vhost)
        if ring is None:
            ring = self.history[vhost] = deque(maxlen=max(2, int(HISTORY_SECONDS / self.interval) + 1))
        gone = self.retired.get(vhost, (0, 0, 0))
        ring.append(Point(stamp, sums[3], sums[4], sums[0] + gone[0], sums[1] + gone[1], sums[2] + gone[2]))

    # -- reading -------------------------------------------------------------------
    def samples(self, vhosts: list[str], age_s: int, incr_s: int) -> list[Point]:
        """The summed samples of ``vhosts`` over the last ``age_s`` seconds, at least
        ``incr_s`` apart, newest first."""
        by_time: dict[int, list[int]] = {}
        for name in vhosts:
            for pt in self.history.get(name, ()):
                acc = by_time.setdefault(pt.at_ms, [0, 0, 0, 0, 0])
                for i in range(5):
                    acc[i] += pt[i + 1]
        if not by_time:
            return []
        newest = max(by_time)
        out: list[Point] = []
        for at in sorted(by_time, reverse=True):
            if at < newest - age_s * 1000:
                break
            if out and out[-1].at_ms - at < incr_s * 1000 - self.interval * 500:
                continue  # closer than incr_s to the one kept before it (half a sample of slack)
            out.append(Point(at, *by_time[at]))
        return out

    # -- reading rates -------------------------------------------------------------
    def queue_rates(self, q: Any) -> tuple:
        s = self.queues.get(q)
        return s[1] if s is not None else (0.0, 0.0, 0.0, 0.0, 0.0)

    def conn_rates(self, conn: Any) -> tuple[float, float]:
        s = self.conns.get(conn)
        return (s[2], s[3]) if s is not None else (0.0, 0.0)

    def connected_at(self, conn: Any) -> int:
        return self.first_seen.setdefault(conn, int(time.time() * 1000))

    def totals(self, vhosts: list[Any]) -> dict:
        """Message counts, counters and rates summed over ``vhosts``."""
        counts = [0, 0, 0]  # publish, deliver_get, ack
        rates = [0.0, 0.0, 0.0, 0.0, 0.0]
        ready = unacked = 0
        for vh in vhosts:
            vc = [0, 0, 0]
            for q in vh.queues.values():
                vc[0] += q.published
                vc[1] += q.delivered
                vc[2] += q.acked
                ready += q.ready
                unacked += q.unacked
                r = self.queue_rates(q)
                for i in range(5):
                    rates[i] += r[i]
            acc = self.retired.get(vh.name)
            if acc:
                for i in range(3):
                    vc[i] += acc[i]
            # what a queue did between its last sample and its deletion is not seen:
            # never report less than before
            floor = self.floors.setdefault(vh, [0, 0, 0])
            for i in range(3):
                if vc[i] < floor[i]:
                    vc[i] = floor[i]
                else:
                    floor[i] = vc[i]
                counts[i] += vc[i]
        return {
            "message_stats": message_stats(counts, rates),
            "messages": ready + unacked,
            "messages_details": rate(rates[3] + rates[4]),
            "messages_ready": ready,
            "messages_ready_details": rate(rates[3]),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": rate(rates[4]),
        }


def rate(r: float) -> dict:
    return {"rate": round(r, 1)}


def message_stats(counts: Any, rates: Any) -> dict:
    out: dict = {}
    for i, name in enumerate(Q_FIELDS):
        out[name] = counts[i]
        out[name + "_details"] = rate(rates[i])
    return out
