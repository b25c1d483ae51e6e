"""Prometheus metrics at /metrics on their own port (15692 by default, as RabbitMQ).

The names follow RabbitMQ's Prometheus plugin (``rabbitmq_...``) so that the
dashboards and alerts people already have for RabbitMQ work unchanged.  The
values are read from the engine when Prometheus scrapes, on the broker's own
loop (an aiohttp handler), so no thread ever touches engine state.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("broker.metrics")


class BrokerCollector:
    """Reads a :class:`~broker.server.Broker` into Prometheus metric families."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        b = self.broker
        conns = list(b.open_connections)
        g = GaugeMetricFamily
        yield g("rabbitmq_connections", "Connections currently open", value=len(conns))
        yield g("rabbitmq_channels", "Channels currently open", value=sum(len(c.channels) for c in conns))
        queues = [q for vh in b.vhosts.values() for q in vh.queues.values()]
        yield g("rabbitmq_queues", "Queues", value=len(queues))
        yield g("rabbitmq_consumers", "Consumers", value=sum(len(q.consumers) for q in queues))
        ready = g("rabbitmq_queue_messages_ready", "Messages ready to be delivered", labels=["vhost", "queue"])
        unacked = g("rabbitmq_queue_messages_unacked", "Messages delivered and not yet acknowledged",
                    labels=["vhost", "queue"])
        qcons = g("rabbitmq_queue_consumers", "Consumers of a queue", labels=["vhost", "queue"])
        for q in queues:
            labels = [q.vhost.name, q.name]
            ready.add_metric(labels, q.ready)
            unacked.add_metric(labels, q.unacked)
            qcons.add_metric(labels, len(q.consumers))
        yield ready
        yield unacked
        yield qcons
        yield g("rabbitmq_queue_messages_ready_total", "Messages ready in all queues",
                value=sum(q.ready for q in queues))
        yield g("rabbitmq_queue_messages_unacked_total", "Unacknowledged messages in all queues",
                value=sum(q.unacked for q in queues))
        s = b.stats
        c = CounterMetricFamily
        yield c("rabbitmq_global_messages_received", "Messages published to the broker", value=s.published)
        yield c("rabbitmq_global_messages_routed", "Messages routed to at least one queue", value=s.routed)
        yield c("rabbitmq_global_messages_unroutable_dropped", "Unroutable messages dropped",
                value=b.stats_unroutable)
        yield c("rabbitmq_global_messages_delivered", "Messages delivered to consumers or basic.get",
                value=s.delivered)
        yield c("rabbitmq_global_messages_redelivered", "Messages delivered again", value=s.redelivered)
        yield c("rabbitmq_global_messages_acknowledged", "Messages acknowledged", value=s.acked)
        yield c("rabbitmq_global_messages_confirmed", "Publisher confirms sent", value=s.confirmed)
        yield c("rabbitmq_connection_incoming_bytes", "Bytes received from clients",
                value=s.bytes_in + sum(cn.recv_bytes for cn in b.connections))
        yield c("rabbitmq_connection_outgoing_bytes", "Bytes sent to clients",
                value=s.bytes_out + sum(cn.sent_bytes for cn in b.connections))
        yield c("rabbitmq_connections_opened", "Connections opened", value=s.connections_opened)
        yield c("rabbitmq_connections_closed", "Connections closed", value=s.connections_closed)
        failed = c("rabbitmq_auth_attempts_failed", "Failed login attempts", labels=["protocol"])
        for protocol in ("amqp091", "http"):
            failed.add_metric([protocol], b.login_throttle.failed_total.get(protocol, 0))
        yield failed
        mon = b.monitor
        yield g("rabbitmq_process_resident_memory_bytes", "Resident memory of the broker process",
                value=_rss())
        yield g("rabbitmq_resident_memory_limit_bytes", "Memory high watermark", value=mon.memory_limit)
        yield g("rabbitmq_disk_space_available_bytes", "Free disk space where the data dir is",
                value=max(mon.disk_free, 0))
        yield g("rabbitmq_disk_space_available_limit_bytes", "Disk free limit", value=mon.disk_free_limit)
        yield g("rabbitmq_alarms_memory_used_watermark", "1 while the memory alarm is set",
                value=1 if mon.memory_alarm else 0)
        yield g("rabbitmq_alarms_free_disk_space_watermark", "1 while the disk alarm is set",
                value=1 if mon.disk_alarm else 0)
        if b.store is not None:
            yield c("rabbitmq_storage_fsyncs", "Group-commit fsyncs of the message store", value=b.store.fsyncs)
            yield c("rabbitmq_storage_write_errors", "Failed writes to the message store",
                    value=b.store.write_errors)


def _rss() -> int:
    from .alarms import rss_bytes

    return rss_bytes()


class MetricsServer:
    """aiohttp server for /metrics on the broker's loop."""

    def __init__(self, broker: Any, host: str, port: int) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(broker))  # type: ignore[arg-type]
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server  # the bound port when 0 was asked for
        if server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
