"""Prometheus metrics on their own port (15692 by default, as RabbitMQ).

The names follow RabbitMQ's Prometheus plugin (``rabbitmq_...``) so that the
dashboards and alerts people already have for RabbitMQ work unchanged.  The
values are read from the engine when Prometheus scrapes, on the broker's own
loop (an aiohttp handler), so no thread ever touches engine state.

As RabbitMQ with ``prometheus.return_per_object_metrics = false``, ``/metrics``
gives totals only: no queue or vhost names, which are nobody else's business.
``/metrics/per-object`` adds the per-queue series (labels ``vhost``, ``queue``);
it needs HTTP basic auth of a user tagged ``monitoring`` or ``administrator``
(the tags that may read every queue through the management API).
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .auth import check_password
from .httpguard import HttpLimits, HttpListener
from .net import is_loopback

log = logging.getLogger("broker.metrics")

PER_OBJECT_TAGS = frozenset(("monitoring", "administrator"))
REALM = 'Basic realm="BurrowMQ metrics"'


class BrokerCollector:
    """Reads a :class:`~broker.server.Broker` into Prometheus metric families:
    totals only, or with ``per_object`` one series per queue as well."""

    def __init__(self, broker: Any, per_object: bool) -> None:
        self.broker = broker
        self.per_object = per_object

    def collect(self) -> Iterator[Any]:
        b = self.broker
        conns = list(b.open_connections)
        g = GaugeMetricFamily
        yield g("rabbitmq_connections", "Connections currently open", value=len(conns))
        yield g("rabbitmq_channels", "Channels currently open", value=sum(len(c.channels) for c in conns))
        queues = [q for vh in b.vhosts.values() for q in vh.queues.values()]
        yield g("rabbitmq_queues", "Queues", value=len(queues))
        yield g("rabbitmq_consumers", "Consumers", value=sum(len(q.consumers) for q in queues))
        if self.per_object:
            info = g("rabbitmq_queue_info", "A metric with a constant '1' value and labels that provide some "
                     "queue details", labels=["vhost", "queue", "queue_type", "membership"])
            for q in queues:  # RabbitMQ names the type by its module: rabbit_quorum_queue
                info.add_metric([q.vhost.name, q.name, f"rabbit_{q.type_name}_queue", "leader"], 1)
            yield info
        per_queue = (
            ("rabbitmq_queue_messages_ready", "Messages ready to be delivered", lambda q: q.ready),
            ("rabbitmq_queue_messages_unacked", "Messages delivered and not yet acknowledged", lambda q: q.unacked),
            ("rabbitmq_queue_consumers", "Consumers of a queue", lambda q: len(q.consumers)),
        )
        for name, doc, value in per_queue:
            if not self.per_object:
                yield g(name, doc + " (all queues)", value=sum(value(q) for q in queues))
                continue
            family = g(name, doc, labels=["vhost", "queue"])
            for q in queues:
                family.add_metric([q.vhost.name, q.name], value(q))
            yield family
        if self.per_object:
            yield from _stream_families(queues)
        yield g("rabbitmq_queue_messages_ready_total", "Messages ready in all queues",
                value=sum(q.ready for q in queues))
        yield g("rabbitmq_queue_messages_unacked_total", "Unacknowledged messages in all queues",
                value=sum(q.unacked for q in queues))
        s = b.stats
        c = CounterMetricFamily
        yield c("rabbitmq_global_messages_received", "Messages published to the broker", value=s.published)
        yield c("rabbitmq_global_messages_routed", "Messages routed to at least one queue", value=s.routed)
        yield c("rabbitmq_global_messages_unroutable_dropped", "Unroutable messages dropped",
                value=s.unroutable)
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
        journal = b.journal
        yield g("burrowmq_alarms_metadata_unsaved", "1 while durable metadata cannot be saved",
                value=1 if journal.alarmed else 0)
        yield c("burrowmq_metadata_save_failures", "Failed saves of the durable metadata",
                value=journal.save_failures)
        if b.store is not None:
            yield c("rabbitmq_storage_fsyncs", "Group-commit fsyncs of the message store", value=b.store.fsyncs)
            yield c("rabbitmq_storage_write_errors", "Failed writes to the message store",
                    value=b.store.write_errors)


def _rss() -> int:
    from .alarms import rss_bytes

    return rss_bytes()


def _registry(broker: Any, per_object: bool) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker, per_object))
    return registry


class MetricsServer:
    """aiohttp server for /metrics and /metrics/per-object on the broker's loop."""

    def __init__(self, broker: Any, host: str, port: int, limits: HttpLimits | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.broker = broker
        self.ssl_context = ssl_context  # HTTPS when given
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.totals = _registry(broker, per_object=False)
        self.per_object = _registry(broker, per_object=True)
        self._listener: HttpListener | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return self._scrape(self.totals)

    async def _metrics_per_object(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self._scrape(self.per_object)

    @staticmethod
    def _scrape(registry: CollectorRegistry) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _refusal(self, request: web.Request) -> web.Response | None:
        """None if the request carries a monitoring (or administrator) user's credentials,
        else the 401 / 403 to answer, in the management API's shape."""
        def error(status: int, reason: str) -> web.Response:
            headers = {"WWW-Authenticate": REALM} if status == 401 else None
            return web.json_response({"error": "not_authorized", "reason": reason}, status=status, headers=headers)

        header = request.headers.get("Authorization", "")
        try:
            if header[:6].lower() != "basic ":
                raise ValueError
            name, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return error(401, "Login failed")
        user = self.broker.users.users.get(name)
        if not sep or user is None or not user.password_hash or not check_password(password, user.password_hash):
            log.warning("metrics: login refused for user %r from %s", name, request.remote)
            return error(401, "Login failed")
        if name in self.broker.loopback_users and not is_loopback(request.remote or ""):
            return error(401, "User can only log in via localhost")
        if not PER_OBJECT_TAGS & set(user.tags):
            return error(403, "Not monitor user")
        return None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/per-object", self._metrics_per_object)
        self._listener = HttpListener("Prometheus metrics", web.AppRunner(app), self.limits, log)
        try:
            self.port = await self._listener.start(self.host, self.port, self.ssl_context)
        except BaseException:
            self._listener = None
            raise

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None


STREAM_SERIES = (
    ("segments", "burrowmq_stream_segments", "Segment files of a stream"),
    ("message_bytes", "burrowmq_stream_bytes", "Bytes in a stream's segment files"),
    ("first_offset", "burrowmq_stream_first_offset", "Offset of the oldest message a stream keeps"),
    ("last_offset", "burrowmq_stream_last_offset", "Offset of the newest message in a stream"),
)


def _stream_families(queues: list[Any]) -> Iterator[Any]:
    """Per-stream series (labels vhost, queue): segments, bytes, first and last offset."""
    streams = [(q, q.describe()) for q in queues if q.type_name == "stream"]
    for key, name, doc in STREAM_SERIES:
        family = GaugeMetricFamily(name, doc, labels=["vhost", "queue"])
        for q, d in streams:
            if d.get(key) is not None:
                family.add_metric([q.vhost.name, q.name], d[key])
        yield family
