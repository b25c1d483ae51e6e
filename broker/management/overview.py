"""Overview, nodes, cluster name, extensions and whoami: what the broker is and how it is doing."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import time
from typing import Any

from .. import __version__
from ..exchange import EXCHANGE_TYPES
from .connections import visible_connections
from .http import Ctx, Router, bad_request, not_found
from .views import RABBITMQ_COMPAT_VERSION, apply_query, node_name

routes = Router()


def _exchange_types() -> list[dict]:
    desc = {
        "direct": "AMQP direct exchange, as per the AMQP specification",
        "fanout": "AMQP fanout exchange, as per the AMQP specification",
        "topic": "AMQP topic exchange, as per the AMQP specification",
        "headers": "AMQP headers exchange, as per the AMQP specification",
        "x-delayed-message": "Delayed Message Exchange.",
    }
    return [{"name": n, "description": desc.get(n, ""), "enabled": True} for n in EXCHANGE_TYPES]


def _listeners(ctx: Ctx) -> list[dict]:
    b = ctx.broker
    amqp = [(protocol, port) for protocol, port in (("amqp", b.port), ("amqp/ssl", b.tls_port)) if port >= 0]
    http = "https" if ctx.server.ssl_context is not None else "http"
    return [
        *({"node": node_name(), "protocol": protocol, "ip_address": b.host, "port": port, "socket_opts": {}}
          for protocol, port in amqp),
        {"node": node_name(), "protocol": http, "ip_address": ctx.server.host, "port": ctx.server.port,
         "socket_opts": {}},
    ]


MAX_SAMPLE_AGE = 86400


def _age_incr(ctx: Ctx, prefix: str) -> tuple[int, int] | None:
    """RabbitMQ's ``<prefix>_age`` / ``<prefix>_incr`` query (seconds), or None if not asked."""
    age, incr = ctx.query.get(f"{prefix}_age"), ctx.query.get(f"{prefix}_incr")
    if age is None:
        return None
    try:
        a, i = int(age), int(incr if incr is not None else 5)
    except ValueError:
        raise bad_request(f"'{prefix}_age' and '{prefix}_incr' must be whole seconds") from None
    if not 1 <= a <= MAX_SAMPLE_AGE or not 1 <= i <= a:
        raise bad_request(f"'{prefix}_age' must be 1 to {MAX_SAMPLE_AGE} s and '{prefix}_incr' 1 s to the age")
    return a, i


def _add_samples(ctx: Ctx, vhosts: list[Any], totals: dict) -> None:
    """RabbitMQ's ``samples`` (newest first) under the ``*_details`` the query asks history for:
    message counts for ``lengths_*``, cumulative counters for ``msg_rates_*``."""
    names = [vh.name for vh in vhosts]
    lengths = _age_incr(ctx, "lengths")
    if lengths is not None:
        pts = ctx.stats.samples(names, *lengths)
        for key, value in (("messages", lambda p: p.ready + p.unacked), ("messages_ready", lambda p: p.ready),
                           ("messages_unacknowledged", lambda p: p.unacked)):
            totals[f"{key}_details"]["samples"] = [{"sample": value(p), "timestamp": p.at_ms} for p in pts]
    rates = _age_incr(ctx, "msg_rates")
    if rates is not None:
        pts = ctx.stats.samples(names, *rates)
        stats = totals["message_stats"]
        for key, index in (("publish", 3), ("deliver_get", 4), ("ack", 5)):
            stats[f"{key}_details"]["samples"] = [{"sample": p[index], "timestamp": p.at_ms} for p in pts]


@routes.route("api/overview")
async def overview(ctx: Ctx) -> Any:
    vhosts = ctx.visible_vhosts()
    totals = ctx.stats.totals(vhosts)
    _add_samples(ctx, vhosts, totals)
    conns = visible_connections(ctx)
    nchan = sum(len(c.channels) for c in conns)
    nq = sum(len(vh.queues) for vh in vhosts)
    nx = sum(len(vh.exchanges) for vh in vhosts)
    ncons = sum(len(q.consumers) for vh in vhosts for q in vh.queues.values())
    return {
        "management_version": RABBITMQ_COMPAT_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600],
                                      "detailed": [600]},
        "exchange_types": _exchange_types(),
        "product_version": __version__,
        "product_name": "BurrowMQ",
        "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
        "cluster_name": node_name(),
        "erlang_version": f"Python {platform.python_version()}",
        "erlang_full_version": f"Python {platform.python_version()} ({platform.python_implementation()})",
        "disable_stats": False,
        "enable_queue_totals": True,
        "message_stats": totals["message_stats"],
        "churn_rates": {},
        "queue_totals": {k: v for k, v in totals.items() if k.startswith("messages")},
        "object_totals": {
            "connections": len(conns),
            "channels": nchan,
            "exchanges": nx,
            "queues": nq,
            "consumers": ncons,
        },
        "statistics_db_event_queue": 0,
        "node": node_name(),
        "listeners": _listeners(ctx),
        "contexts": [{"node": node_name(), "description": "RabbitMQ Management", "path": "/",
                      "ip": ctx.server.host, "port": str(ctx.server.port)}],
        "unroutable": ctx.broker.stats.unroutable,
    }


def _node(ctx: Ctx) -> dict:
    b = ctx.broker
    mem = 0
    try:
        with open("/proc/self/statm") as f:
            mem = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    disk_free = 0
    if b.data_dir:
        try:
            disk_free = shutil.disk_usage(b.data_dir).free
        except OSError:
            pass
    store = b.store
    mon = getattr(b, "monitor", None)
    return {
        "name": node_name(),
        "type": "disc",
        "running": True,
        "being_drained": False,
        "os_pid": str(os.getpid()),
        "uptime": int((time.time() - ctx.stats.started) * 1000),
        "mem_used": mem,
        "mem_limit": getattr(mon, "memory_limit", 0),
        "mem_alarm": bool(getattr(mon, "memory_alarm", False)),
        "disk_free": disk_free,
        "disk_free_limit": getattr(mon, "disk_free_limit", 0),
        "disk_free_alarm": bool(getattr(mon, "disk_alarm", False)),
        "metadata_alarm": b.journal.failure,
        "fd_used": fds,
        "fd_total": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "sockets_used": len(b.connections),
        "sockets_total": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "proc_used": 1,
        "processors": os.cpu_count() or 1,
        "run_queue": 0,
        "partitions": [],
        "applications": [{"name": "burrowmq", "description": "BurrowMQ", "version": __version__}],
        "exchange_types": _exchange_types(),
        "rates_mode": "basic",
        "data_dir": b.data_dir,
        "fsyncs": getattr(store, "fsyncs", 0) if store is not None else 0,
        "write_errors": getattr(store, "write_errors", 0) if store is not None else 0,
    }


@routes.route("api/nodes")
async def nodes(ctx: Ctx) -> Any:
    ctx.require_monitor()
    return apply_query([_node(ctx)], ctx.query)


@routes.route("api/nodes/:node")
async def node(ctx: Ctx) -> Any:
    ctx.require_monitor()
    if ctx.params["node"] != node_name():
        raise not_found()
    return _node(ctx)


@routes.route("api/cluster-name")
async def cluster_name(ctx: Ctx) -> Any:
    return {"name": node_name()}


@routes.route("api/extensions")
async def extensions(ctx: Ctx) -> Any:
    return []


@routes.route("api/whoami")
async def whoami(ctx: Ctx) -> Any:
    return {"name": ctx.username, "tags": list(ctx.user.tags), "is_openid": False}
