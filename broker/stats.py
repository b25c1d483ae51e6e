"""Broker-wide message and connection counters (metrics and the management overview).

Each counter is bumped in exactly one place: ``published``, ``routed`` and
``unroutable`` by :meth:`broker.vhost.VHost.publish`; deliveries, acks and
confirms by the channel; connections by :class:`broker.services.ConnectionRegistry`;
bytes when a connection goes.
"""

from __future__ import annotations


class Stats:
    """Counters only ever incremented (Prometheus counters, RabbitMQ's global totals)."""

    __slots__ = (
        "published", "routed", "unroutable", "delivered", "redelivered", "acked", "confirmed",
        "bytes_in", "bytes_out", "connections_opened", "connections_closed",
    )

    def __init__(self) -> None:
        self.published = 0  # publishes routed or not (dead letters are not publishes)
        self.routed = 0
        self.unroutable = 0
        self.delivered = 0
        self.redelivered = 0
        self.acked = 0
        self.confirmed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections_opened = 0
        self.connections_closed = 0
