"""The management API's endpoints (RabbitMQ's paths, verbs, status codes and JSON shape).

Every handler works on the engine's objects directly, on the broker's loop.
Anything that changes users, vhosts, permissions or durable topology is saved
(``Ctx.commit``) before the HTTP answer goes out, so that it survives a restart;
a save that fails is a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import os
import platform
import resource
import shutil
import time
import urllib.parse
from typing import Any

from pamqp import commands as C

from protocol import errors, framing, names
from protocol.errors import ChannelError

from .. import __version__
from ..auth import Permission
from ..definitions import APPLIED_SECTIONS
from ..exchange import EXCHANGE_TYPES, freeze
from ..message import Message
from ..patterns import PatternError
from ..queue import PUSH_REJECTED, PUSH_SYNC, Queue, now_ms
from .server import Ctx, HTTPError, bad_request, json_object, not_found, router
from .views import (
    RABBITMQ_COMPAT_VERSION,
    apply_query,
    channel_json,
    channel_name,
    connection_json,
    consumer_json,
    exchange_json,
    node_name,
    properties_key,
    queue_json,
    vhost_bindings,
)

route = router.route
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."


def _save(ctx: Ctx) -> None:
    ctx.commit()


def _bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v is None:
        return default
    raise bad_request(f"'{key}' must be true or false, not {v!r}")


def _args(body: dict, key: str = "arguments") -> dict:
    v = body.get(key) or {}
    if not isinstance(v, dict):
        raise bad_request(f"'{key}' must be a JSON object")
    return v


def _exchange_name(name: str) -> str:
    return "" if name == "amq.default" else name


def _tags(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [t for t in (x.strip() for x in v.split(",")) if t]
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
        return [t.strip() for t in v if t.strip()]
    raise bad_request("'tags' must be a comma-separated string or a list of strings")


# -- overview, nodes, health -----------------------------------------------------------

def _exchange_types() -> list[dict]:
    desc = {
        "direct": "AMQP direct exchange, as per the AMQP specification",
        "fanout": "AMQP fanout exchange, as per the AMQP specification",
        "topic": "AMQP topic exchange, as per the AMQP specification",
        "headers": "AMQP headers exchange, as per the AMQP specification",
    }
    return [{"name": n, "description": desc.get(n, ""), "enabled": True} for n in EXCHANGE_TYPES]


def _listeners(ctx: Ctx) -> list[dict]:
    b = ctx.broker
    return [
        {"node": node_name(), "protocol": "amqp", "ip_address": b.host, "port": b.port, "socket_opts": {}},
        {"node": node_name(), "protocol": "http", "ip_address": ctx.server.host, "port": ctx.server.port,
         "socket_opts": {}},
    ]


@route("api/overview")
async def overview(ctx: Ctx) -> Any:
    vhosts = ctx.visible_vhosts()
    totals = ctx.stats.totals(vhosts)
    conns = _visible_connections(ctx)
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
        "unroutable": ctx.broker.stats_unroutable,
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


@route("api/nodes")
async def nodes(ctx: Ctx) -> Any:
    ctx.require_monitor()
    return apply_query([_node(ctx)], ctx.query)


@route("api/nodes/:node")
async def node(ctx: Ctx) -> Any:
    ctx.require_monitor()
    if ctx.params["node"] != node_name():
        raise not_found()
    return _node(ctx)


@route("api/cluster-name")
async def cluster_name(ctx: Ctx) -> Any:
    return {"name": node_name()}


@route("api/extensions")
async def extensions(ctx: Ctx) -> Any:
    return []


@route("api/whoami")
async def whoami(ctx: Ctx) -> Any:
    return {"name": ctx.username, "tags": list(ctx.user.tags), "is_openid": False}


def _alarms(ctx: Ctx) -> Any:
    alarms: list[dict] = [{"node": node_name(), "resource": r} for r in ctx.broker.monitor.reasons()]
    journal = ctx.broker.journal
    if journal.alarmed:
        alarms.append({"node": node_name(), "resource": "metadata", "reason": journal.failure})
    if not alarms:
        return {"status": "ok"}
    return 503, {"status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": alarms}


@route("api/health/checks/alarms")
async def health_alarms(ctx: Ctx) -> Any:
    return _alarms(ctx)


@route("api/health/checks/local-alarms")
async def health_local_alarms(ctx: Ctx) -> Any:
    return _alarms(ctx)


@route("api/health/checks/virtual-hosts")
async def health_vhosts(ctx: Ctx) -> Any:
    return {"status": "ok"}


@route("api/health/checks/port-listener/:port")
async def health_port(ctx: Ctx) -> Any:
    ports = [ctx.broker.port, ctx.server.port]
    try:
        port = int(ctx.params["port"])
    except ValueError:
        raise bad_request("the port must be an integer") from None
    if port in ports:
        return {"status": "ok", "port": port}
    return 503, {"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}


ALIVENESS_QUEUE = "aliveness-test"  # RabbitMQ's name: the one permissions are checked on
ALIVENESS_PROBE = "amq.aliveness-test"  # the queue really used: clients cannot declare amq.* names


@route("api/aliveness-test/:vhost")
async def aliveness(ctx: Ctx) -> Any:
    """RabbitMQ's aliveness test: declare a queue, publish to it, get the message back.

    The user needs what RabbitMQ's test needs: configure and read on the queue
    'aliveness-test', write on the default exchange.  The queue used is the broker's
    own ``amq.aliveness-test``, made and removed within this one synchronous step: it
    never holds a client's message, nor shows in a listing."""
    vh = ctx.vhost_for_write()
    ctx.check(vh, "configure", "queue", ALIVENESS_QUEUE)
    ctx.check(vh, "write", "exchange", "amq.default")
    ctx.check(vh, "read", "queue", ALIVENESS_QUEUE)
    q, created = vh.declare_queue(ALIVENESS_PROBE, False, False, False, {}, None, server_named=True)
    if not created:
        return 503, {"status": "failed", "reason": f"a queue named '{ALIVENESS_PROBE}' already exists"}
    try:
        x = vh.default_exchange
        msg = _make_message(x.name, ALIVENESS_PROBE, C.Basic.Properties(), b"test_message")
        for dest in vh.route(x, ALIVENESS_PROBE, msg):
            dest.push(msg if dest is q else msg.copy())
        got = q.get()
        if got is None:
            return 503, {"status": "failed", "reason": "aliveness-test queue is empty"}
        q.settle(got)
    finally:
        vh.delete_queue(q)
    return {"status": "ok"}


# -- connections, channels, consumers ----------------------------------------------------

def _visible_connections(ctx: Ctx) -> list[Any]:
    conns = [c for c in ctx.broker.open_connections if c.state == "opened"]
    if ctx.is_monitor:
        return conns
    return [c for c in conns if c.username == ctx.username]


def _find_connection(ctx: Ctx, name: str) -> Any:
    for c in _visible_connections(ctx):
        if c.name == name:
            return c
    raise not_found()


@route("api/connections")
async def connections(ctx: Ctx) -> Any:
    b, s = ctx.broker, ctx.stats
    return apply_query([connection_json(c, b, s) for c in _visible_connections(ctx)], ctx.query)


@route("api/vhosts/:vhost/connections")
async def vhost_connections(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    b, s = ctx.broker, ctx.stats
    return apply_query(
        [connection_json(c, b, s) for c in _visible_connections(ctx) if c.vhost is vh], ctx.query
    )


@route("api/connections/:name")
async def get_connection(ctx: Ctx) -> Any:
    return connection_json(_find_connection(ctx, ctx.params["name"]), ctx.broker, ctx.stats)


@route("api/connections/:name", "DELETE")
async def close_connection(ctx: Ctx) -> Any:
    conn = _find_connection(ctx, ctx.params["name"])
    if not ctx.is_admin and conn.username != ctx.username:
        raise HTTPError(403, "not_authorized", "Not administrator user")
    reason = ctx.request.headers.get("X-Reason") or "Closed via management plugin"
    conn.close(errors.CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
    return None


@route("api/connections/:name/channels")
async def connection_channels(ctx: Ctx) -> Any:
    conn = _find_connection(ctx, ctx.params["name"])
    return apply_query([channel_json(conn, ch) for ch in conn.channels.values()], ctx.query)


def _channels(ctx: Ctx, vh: Any = None) -> list[dict]:
    out = []
    for conn in _visible_connections(ctx):
        if vh is not None and conn.vhost is not vh:
            continue
        out += [channel_json(conn, ch) for ch in conn.channels.values()]
    return out


@route("api/channels")
async def channels(ctx: Ctx) -> Any:
    return apply_query(_channels(ctx), ctx.query)


@route("api/vhosts/:vhost/channels")
async def vhost_channels(ctx: Ctx) -> Any:
    return apply_query(_channels(ctx, ctx.vhost()), ctx.query)


@route("api/channels/:name")
async def get_channel(ctx: Ctx) -> Any:
    name = ctx.params["name"]
    for conn in _visible_connections(ctx):
        for ch in conn.channels.values():
            if channel_name(conn, ch) == name:
                return channel_json(conn, ch)
    raise not_found()


def _consumers(ctx: Ctx, vhosts: list[Any]) -> list[dict]:
    wanted = set(id(v) for v in vhosts)
    out = []
    for conn in ctx.broker.open_connections:
        if conn.state != "opened" or id(conn.vhost) not in wanted:
            continue
        for ch in conn.channels.values():
            out += [consumer_json(conn, ch, c) for c in ch.consumers.values()]
    return out


@route("api/consumers")
async def consumers(ctx: Ctx) -> Any:
    return apply_query(_consumers(ctx, ctx.visible_vhosts()), ctx.query, "consumer_tag")


@route("api/consumers/:vhost")
async def vhost_consumers(ctx: Ctx) -> Any:
    return apply_query(_consumers(ctx, [ctx.vhost()]), ctx.query, "consumer_tag")


# -- exchanges -----------------------------------------------------------------------------

def _exchanges(ctx: Ctx, vhosts: list[Any]) -> list[dict]:
    return [exchange_json(vh, x) for vh in vhosts for x in vh.exchanges.values()]


@route("api/exchanges")
async def exchanges(ctx: Ctx) -> Any:
    return apply_query(_exchanges(ctx, ctx.visible_vhosts()), ctx.query)


@route("api/exchanges/:vhost")
async def vhost_exchanges(ctx: Ctx) -> Any:
    return apply_query(_exchanges(ctx, [ctx.vhost()]), ctx.query)


def _exchange(ctx: Ctx, vh: Any) -> Any:
    x = vh.exchanges.get(_exchange_name(ctx.params["name"]))
    if x is None:
        raise not_found()
    return x


@route("api/exchanges/:vhost/:name")
async def get_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    return exchange_json(vh, _exchange(ctx, vh))


@route("api/exchanges/:vhost/:name", "PUT")
async def put_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    name = _exchange_name(ctx.params["name"])
    body = await ctx.body()
    xtype = body.get("type")
    if not isinstance(xtype, str) or not xtype:
        raise bad_request("'type' is missing: the exchange type (direct, fanout, topic, headers)")
    if name:
        ctx.check(vh, "configure", "exchange", name)
    _x, created = vh.declare_exchange(
        name, xtype, _bool(body, "durable", True), _bool(body, "auto_delete", False),
        _bool(body, "internal", False), _args(body),
    )
    _save(ctx)
    return (201, None) if created else None


@route("api/exchanges/:vhost/:name", "DELETE")
async def delete_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    x = _exchange(ctx, vh)
    if x.name:
        ctx.check(vh, "configure", "exchange", x.name)
    vh.delete_exchange(x.name, ctx.flag("if-unused"))
    _save(ctx)
    return None


@route("api/exchanges/:vhost/:name/bindings/source")
async def exchange_bindings_source(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    x = _exchange(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["source"] == x.name]


@route("api/exchanges/:vhost/:name/bindings/destination")
async def exchange_bindings_destination(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    x = _exchange(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["destination_type"] == "exchange" and b["destination"] == x.name]


# -- publishing ------------------------------------------------------------------------------

_PROPERTY_NAMES = {
    "content_type": "content_type",
    "content_encoding": "content_encoding",
    "headers": "headers",
    "delivery_mode": "delivery_mode",
    "priority": "priority",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "timestamp": "timestamp",
    "type": "message_type",
    "user_id": "user_id",
    "app_id": "app_id",
    "cluster_id": "cluster_id",
}
_INT_PROPS = ("delivery_mode", "priority")


def _properties(raw: Any) -> C.Basic.Properties:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_request("'properties' must be a JSON object")
    kw: dict = {}
    for k, v in raw.items():
        attr = _PROPERTY_NAMES.get(k)
        if attr is None:
            raise bad_request(f"unknown message property '{k}'")
        if v is None:
            continue
        if k in _INT_PROPS:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
                raise bad_request(f"property '{k}' must be an integer from 0 to 255")
        elif k == "timestamp":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad_request("property 'timestamp' must be seconds since the epoch")
            v = datetime.datetime.fromtimestamp(int(v), datetime.timezone.utc)
        elif k == "headers":
            if not isinstance(v, dict):
                raise bad_request("property 'headers' must be a JSON object")
        elif k == "expiration" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        elif not isinstance(v, str):
            raise bad_request(f"property '{k}' must be a string")
        kw[attr] = v
    try:
        return C.Basic.Properties(**kw)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"invalid message properties: {exc}") from None


def _make_message(exchange: str, routing_key: str, props: C.Basic.Properties, body: bytes) -> Message:
    try:
        header = framing.content_header_payload(len(body), props)
    except Exception as exc:  # pamqp refuses values it cannot encode
        raise bad_request(f"invalid message properties: {exc}") from None
    m = Message(exchange, routing_key, names.shortstr(exchange), names.shortstr(routing_key), header, body)
    m._props = props
    return m


class _SyncWaiter:
    """Waits, like a publisher-confirm channel, for the fsync covering a publish."""

    closing = False

    def __init__(self, epoch: int, fut: "asyncio.Future[None]") -> None:
        self.epoch = epoch
        self.fut = fut

    def synced(self, epoch: int) -> bool:
        if epoch >= self.epoch:
            if not self.fut.done():
                self.fut.set_result(None)
            return False
        return True

    def sync_failed(self, epoch: int, exc: Exception) -> bool:
        if epoch >= self.epoch:
            if not self.fut.done():
                self.fut.set_exception(exc)
            return False
        return True


async def wait_fsync(ctx: Ctx) -> None:
    store = ctx.broker.store
    fut = asyncio.get_running_loop().create_future()
    w = _SyncWaiter(store.want_sync(), fut)
    store.sync_waiters.add(w)
    try:
        await asyncio.wait_for(fut, 30.0)
    except asyncio.TimeoutError:
        raise HTTPError(500, "internal_error", "timed out waiting for the disk") from None
    except Exception as exc:
        raise HTTPError(500, "internal_error", f"the message could not be written to disk: {exc}") from None
    finally:
        store.sync_waiters.discard(w)


@route("api/exchanges/:vhost/:name/publish", "POST")
async def publish(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    x = _exchange(ctx, vh)
    body = await ctx.body()
    for key in ("routing_key", "payload"):
        if key not in body:
            raise bad_request(f"'{key}' is missing")
    rk, payload = body["routing_key"], body["payload"]
    if not isinstance(rk, str) or not isinstance(payload, str):
        raise bad_request("'routing_key' and 'payload' must be strings")
    if problem := names.name_problem(rk):
        raise bad_request(f"'routing_key' {problem}")
    enc = body.get("payload_encoding", "string")
    if enc == "string":
        data = payload.encode("utf-8")
    elif enc == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("'payload' is not valid base64") from None
    else:
        raise bad_request("'payload_encoding' must be 'string' or 'base64'")
    props = _properties(body.get("properties"))
    ctx.check(vh, "write", "exchange", x.name or "amq.default")
    if x.internal:
        raise ChannelError(errors.ACCESS_REFUSED, f"cannot publish to internal {vh.what('exchange', x.name)}")
    if props.user_id is not None and props.user_id != ctx.username:
        raise ChannelError(
            errors.PRECONDITION_FAILED,
            f"user_id property set to '{props.user_id}' but authenticated user was '{ctx.username}'",
        )
    msg = _make_message(x.name, rk, props, data)
    if props.expiration is not None:
        try:
            ttl = int(props.expiration)
            if ttl < 0:
                raise ValueError
        except ValueError:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid expiration '{props.expiration}'") from None
        msg.exp_deadline = msg.deadline = now_ms() + ttl
    if x is vh.default_exchange and rk.startswith(REPLY_TO_PREFIX):
        ctx.broker.direct_reply(msg)
        return {"routed": True}
    routed, status = vh.enqueue(vh.route(x, rk, msg), msg)
    if not routed:
        ctx.broker.stats_unroutable += 1
    if status == PUSH_SYNC and ctx.broker.store is not None:
        await wait_fsync(ctx)
    return {"routed": routed and status != PUSH_REJECTED}


# -- queues --------------------------------------------------------------------------------

def _queues(ctx: Ctx, vhosts: list[Any]) -> list[dict]:
    s = ctx.stats
    return [queue_json(vh, q, s) for vh in vhosts for q in vh.queues.values()]


@route("api/queues")
async def queues(ctx: Ctx) -> Any:
    return apply_query(_queues(ctx, ctx.visible_vhosts()), ctx.query)


@route("api/queues/:vhost")
async def vhost_queues(ctx: Ctx) -> Any:
    return apply_query(_queues(ctx, [ctx.vhost()]), ctx.query)


def _queue(ctx: Ctx, vh: Any) -> Queue:
    q = vh.queues.get(ctx.params["name"])
    if q is None:
        raise not_found()
    return q


@route("api/queues/:vhost/:name")
async def get_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    return queue_json(vh, _queue(ctx, vh), ctx.stats)


@route("api/queues/:vhost/:name", "PUT")
async def put_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    name = ctx.params["name"]
    body = await ctx.body()
    ctx.check(vh, "configure", "queue", name)
    _q, created = vh.declare_queue(
        name, _bool(body, "durable", True), False, _bool(body, "auto_delete", False), _args(body), None
    )
    _save(ctx)
    return (201, None) if created else None


@route("api/queues/:vhost/:name", "DELETE")
async def delete_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _queue(ctx, vh)
    ctx.check(vh, "configure", "queue", q.name)
    if ctx.flag("if-unused") and q.consumers:
        raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', q.name)} in use")
    if ctx.flag("if-empty") and q.ready:
        raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', q.name)} not empty")
    vh.delete_queue(q)
    _save(ctx)
    return None


@route("api/queues/:vhost/:name/contents", "DELETE")
async def purge_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _queue(ctx, vh)
    ctx.check(vh, "read", "queue", q.name)
    q.purge()
    return None


@route("api/queues/:vhost/:name/bindings")
async def queue_bindings(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    q = _queue(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["destination_type"] == "queue" and b["destination"] == q.name]


ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")


def _properties_json(msg: Message) -> dict:
    p = msg.properties
    out: dict = {}
    for key, attr in _PROPERTY_NAMES.items():
        v = getattr(p, attr, None)
        if v is None or (key == "cluster_id" and v == ""):
            continue
        if isinstance(v, datetime.datetime):
            v = int(v.timestamp())
        out[key] = v
    return out


@route("api/queues/:vhost/:name/get", "POST")
async def get_messages(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _queue(ctx, vh)
    body = await ctx.body()
    count = body.get("count", 1)
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise bad_request("'count' must be a positive integer")
    ackmode = body.get("ackmode", "ack_requeue_true")
    if ackmode not in ACKMODES:
        raise bad_request(f"'ackmode' must be one of {', '.join(ACKMODES)}")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request("'encoding' must be 'auto' or 'base64'")
    truncate = body.get("truncate")
    if truncate in ("", None):
        truncate = None
    else:
        try:
            truncate = int(truncate)
        except (TypeError, ValueError):
            raise bad_request("'truncate' must be an integer") from None
    ctx.check(vh, "read", "queue", q.name)
    taken: list[Message] = []
    out = []
    for _ in range(count):
        msg = q.get()
        if msg is None:
            break
        taken.append(msg)
        data = msg.body if truncate is None else msg.body[:truncate]
        payload, penc = None, "base64"
        if encoding == "auto":
            try:
                payload, penc = data.decode("utf-8"), "string"
            except UnicodeDecodeError:
                pass
        if payload is None:
            payload = base64.b64encode(data).decode("ascii")
        try:
            props = _properties_json(msg)
        except Exception:
            props = {}
        out.append({
            "payload_bytes": len(msg.body),
            "redelivered": msg.redelivered,
            "exchange": msg.exchange,
            "routing_key": msg.routing_key,
            "message_count": q.ready,
            "properties": props,
            "payload": payload,
            "payload_encoding": penc,
        })
    if ackmode.endswith("requeue_true"):
        q.requeue(taken)
    elif ackmode == "ack_requeue_false":
        for m in taken:
            q.settle(m)
    else:
        for m in taken:
            q.reject(m)
    return out


# -- bindings --------------------------------------------------------------------------------

@route("api/bindings")
async def bindings(ctx: Ctx) -> Any:
    out = []
    for vh in ctx.visible_vhosts():
        out += vhost_bindings(vh)
    return apply_query(out, ctx.query, None)


@route("api/bindings/:vhost")
async def vhost_bindings_h(ctx: Ctx) -> Any:
    return apply_query(vhost_bindings(ctx.vhost()), ctx.query, None)


def _ends(ctx: Ctx, vh: Any, dtype: str) -> tuple[Any, Any]:
    src = vh.exchanges.get(_exchange_name(ctx.params["src"]))
    table = vh.queues if dtype == "q" else vh.exchanges
    dest = table.get(ctx.params["dest"] if dtype == "q" else _exchange_name(ctx.params["dest"]))
    if src is None or dest is None:
        raise not_found()
    return src, dest


def _pair_bindings(vh: Any, src: Any, dest: Any) -> list[dict]:
    dtype = "queue" if isinstance(dest, Queue) else "exchange"
    return [
        b for b in vhost_bindings(vh)
        if b["source"] == src.name and b["destination"] == dest.name and b["destination_type"] == dtype
    ]


def _binding_routes(dtype: str) -> None:
    base = f"api/bindings/:vhost/e/:src/{dtype}/:dest"

    async def list_pair(ctx: Ctx) -> Any:
        vh = ctx.vhost()
        src, dest = _ends(ctx, vh, dtype)
        return _pair_bindings(vh, src, dest)

    async def create(ctx: Ctx) -> Any:
        vh = ctx.vhost_for_write()
        src, dest = _ends(ctx, vh, dtype)
        body = await ctx.body()
        rk = body.get("routing_key", "")
        if problem := names.name_problem(rk):
            raise bad_request(f"'routing_key' {problem}")
        args = _args(body)
        if not src.name:
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        ctx.check(vh, "write", "queue" if dtype == "q" else "exchange", dest.name)
        ctx.check(vh, "read", "exchange", src.name)
        vh.bind(src, dest, rk, args)
        _save(ctx)
        pk = properties_key(rk, args)
        loc = "/".join(
            urllib.parse.quote(s, safe="")
            for s in ("", "api", "bindings", vh.name, "e", src.name or "amq.default", dtype, dest.name, pk)
        )
        return 201, None, {"Location": loc}

    def find(ctx: Ctx, vh: Any) -> tuple[Any, Any, dict]:
        src, dest = _ends(ctx, vh, dtype)
        for b in _pair_bindings(vh, src, dest):
            if b["properties_key"] == ctx.params["props"]:
                return src, dest, b
        raise not_found()

    async def get_one(ctx: Ctx) -> Any:
        vh = ctx.vhost()
        return find(ctx, vh)[2]

    async def delete(ctx: Ctx) -> Any:
        vh = ctx.vhost_for_write()
        src, dest, b = find(ctx, vh)
        if not src.name:
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        ctx.check(vh, "write", "queue" if dtype == "q" else "exchange", dest.name)
        ctx.check(vh, "read", "exchange", src.name)
        # the engine's binding with exactly these arguments (same frozen key)
        for eb in list(src.bindings.values()):
            if eb.destination is dest and eb.routing_key == b["routing_key"] and \
                    freeze(eb.arguments) == freeze(b["arguments"]):
                vh.unbind(src, dest, eb.routing_key, eb.arguments)
                break
        _save(ctx)
        return None

    router.add(base, "GET", list_pair)
    router.add(base, "POST", create)
    router.add(base + "/:props", "GET", get_one)
    router.add(base + "/:props", "DELETE", delete)


_binding_routes("q")
_binding_routes("e")


# -- vhosts ----------------------------------------------------------------------------------

def _vhost_json(ctx: Ctx, vh: Any) -> dict:
    meta = ctx.server.vhost_meta.get(vh.name, {})
    totals = ctx.stats.totals([vh])
    recv = sent = 0
    for c in ctx.broker.open_connections:
        if c.vhost is vh:
            recv += c.recv_bytes
            sent += c.sent_bytes
    desc = meta.get("description", "Default virtual host" if vh.name == "/" else "")
    tags = meta.get("tags", [])
    d = {
        "name": vh.name,
        "description": desc,
        "tags": tags,
        "default_queue_type": "classic",
        "metadata": {"description": desc, "tags": tags, "default_queue_type": "classic"},
        "tracing": False,
        "cluster_state": {node_name(): "running"},
        "recv_oct": recv,
        "send_oct": sent,
    }
    d.update(totals)
    return d


@route("api/vhosts")
async def vhosts(ctx: Ctx) -> Any:
    return apply_query([_vhost_json(ctx, vh) for vh in ctx.visible_vhosts()], ctx.query)


@route("api/vhosts/:vhost")
async def get_vhost(ctx: Ctx) -> Any:
    return _vhost_json(ctx, ctx.vhost())


@route("api/vhosts/:vhost", "PUT")
async def put_vhost(ctx: Ctx) -> Any:
    ctx.require_admin()
    name = ctx.params["vhost"]
    if not name:
        raise bad_request("the vhost name must not be empty")
    body = await ctx.body()
    existed = name in ctx.broker.vhosts
    meta = ctx.server.vhost_meta.setdefault(name, {})
    if "description" in body:
        meta["description"] = str(body["description"])
    if "tags" in body:
        meta["tags"] = _tags(body["tags"])
    ctx.broker.add_vhost(name)
    _save(ctx)
    return None if existed else (201, None)


@route("api/vhosts/:vhost", "DELETE")
async def delete_vhost(ctx: Ctx) -> Any:
    ctx.require_admin()
    name = ctx.params["vhost"]
    if not ctx.broker.delete_vhost(name):
        raise not_found()
    ctx.server.vhost_meta.pop(name, None)
    _save(ctx)
    return None


@route("api/vhosts/:vhost/permissions")
async def vhost_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    return [_perm_json(u, v, p) for (u, v), p in ctx.broker.users.permissions.items() if v == vh.name]


# -- users -----------------------------------------------------------------------------------

def _user_json(u: Any) -> dict:
    return {
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": list(u.tags),
        "limits": {},
    }


@route("api/users")
async def users(ctx: Ctx) -> Any:
    ctx.require_admin()
    return apply_query([_user_json(u) for u in ctx.broker.users.users.values()], ctx.query)


@route("api/users/without-permissions")
async def users_without_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    have = {u for (u, _v) in ctx.broker.users.permissions}
    return [_user_json(u) for u in ctx.broker.users.users.values() if u.name not in have]


@route("api/users/bulk-delete", "POST")
async def users_bulk_delete(ctx: Ctx) -> Any:
    ctx.require_admin()
    body = await ctx.body()
    names = body.get("users")
    if not isinstance(names, list):
        raise bad_request("'users' must be a list of user names")
    for n in names:
        ctx.broker.delete_user(str(n))
    _save(ctx)
    return None


def _user(ctx: Ctx) -> Any:
    u = ctx.broker.users.users.get(ctx.params["user"])
    if u is None:
        raise not_found()
    return u


@route("api/users/:user")
async def get_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _user_json(_user(ctx))


@route("api/users/:user", "PUT")
async def put_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    name = ctx.params["user"]
    if not name:
        raise bad_request("the user name must not be empty")
    body = await ctx.body()
    store = ctx.broker.users
    existing = store.users.get(name)
    tags = _tags(body["tags"]) if "tags" in body else (list(existing.tags) if existing else [])
    if "password" in body:
        pw = body["password"]
        if not isinstance(pw, str):
            raise bad_request("'password' must be a string")
        if existing is None:
            store.add_user(name, pw, tags)
        else:
            ctx.broker.change_password(name, pw)
            store.set_tags(name, tags)
    elif "password_hash" in body:
        ph = body["password_hash"]
        algo = body.get("hashing_algorithm", "rabbit_password_hashing_sha256")
        if algo != "rabbit_password_hashing_sha256":
            raise bad_request(f"password hashing algorithm '{algo}' is not supported "
                              "(only rabbit_password_hashing_sha256)")
        if not isinstance(ph, str):
            raise bad_request("'password_hash' must be a string")
        if ph:
            try:
                raw = base64.b64decode(ph, validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("'password_hash' is not valid base64") from None
            if len(raw) != 36:
                raise bad_request("'password_hash' is not a rabbit_password_hashing_sha256 hash "
                                  "(4 bytes of salt and 32 of SHA-256, base64)")
        changed = existing is None or existing.password_hash != ph
        store.add_user_with_hash(name, ph, tags)
        if existing is not None and changed:
            ctx.broker.close_user_connections(name, f"user '{name}' password changed")
    elif existing is None:
        raise bad_request("a new user needs 'password' or 'password_hash'")
    else:
        store.set_tags(name, tags)
    ctx.broker.journal.changed()
    _save(ctx)
    return (201, None) if existing is None else None


@route("api/users/:user", "DELETE")
async def delete_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    if not ctx.broker.delete_user(ctx.params["user"]):
        raise not_found()
    _save(ctx)
    return None


@route("api/users/:user/permissions")
async def user_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    u = _user(ctx)
    return [_perm_json(n, v, p) for (n, v), p in ctx.broker.users.permissions.items() if n == u.name]


# -- permissions -----------------------------------------------------------------------------

def _perm_json(user: str, vhost: str, p: Permission) -> dict:
    return {"user": user, "vhost": vhost, **p.as_dict()}


@route("api/permissions")
async def permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return [_perm_json(u, v, p) for (u, v), p in ctx.broker.users.permissions.items()]


@route("api/permissions/:vhost/:user")
async def get_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh, user = ctx.params["vhost"], ctx.params["user"]
    p = ctx.broker.users.permission(user, vh)
    if p is None:
        raise not_found()
    return _perm_json(user, vh, p)


@route("api/permissions/:vhost/:user", "PUT")
async def put_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh, user = ctx.params["vhost"], ctx.params["user"]
    if vh not in ctx.broker.vhosts:
        raise bad_request(f"vhost '{vh}' does not exist")
    if user not in ctx.broker.users.users:
        raise bad_request(f"user '{user}' does not exist")
    body = await ctx.body()
    vals = {}
    for k in ("configure", "write", "read"):
        v = body.get(k)
        if not isinstance(v, str):
            raise bad_request(f"'{k}' is missing: configure, write and read are regular expressions")
        vals[k] = v
    try:
        perm = Permission(**vals)
    except PatternError as exc:
        raise bad_request(str(exc)) from None
    existed = ctx.broker.users.permission(user, vh) is not None
    ctx.broker.users.set_permissions(user, vh, perm)
    ctx.broker.journal.changed()
    _save(ctx)
    return None if existed else (201, None)


@route("api/permissions/:vhost/:user", "DELETE")
async def delete_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    if not ctx.broker.users.clear_permissions(ctx.params["user"], ctx.params["vhost"]):
        raise not_found()
    ctx.broker.journal.changed()
    _save(ctx)
    return None


# -- definitions -----------------------------------------------------------------------------

def _export(ctx: Ctx) -> dict:
    d = ctx.broker.definitions()
    out = {"rabbit_version": RABBITMQ_COMPAT_VERSION, "rabbitmq_version": RABBITMQ_COMPAT_VERSION}
    out.update(d)
    for k in ("topic_permissions", "parameters", "global_parameters", "policies"):
        out.setdefault(k, [])
    return out


async def _import_body(ctx: Ctx) -> dict:
    ctype = ctx.request.content_type or ""
    if ctype.startswith("multipart/") or ctype == "application/x-www-form-urlencoded":
        form = await ctx.request.post()
        f = form.get("file")
        raw = f.file.read() if hasattr(f, "file") else (f or "")
        return json_object(raw, "definitions")
    return await ctx.body()


def _import(ctx: Ctx, defs: dict, sections: tuple[str, ...] = APPLIED_SECTIONS) -> Any:
    """Apply a definitions document.  204 when all of it was applied; 200 with
    ``{"not_applied": [...]}`` when parts this broker does not support were left
    out; 400 (RabbitMQ's error shape, plus the same list) when an item failed."""
    for key in sections:
        v = defs.get(key)
        if v is not None and not isinstance(v, list):
            raise bad_request(f"'{key}' must be a list")
    report = ctx.broker.apply_definitions(defs, f"HTTP import by user '{ctx.user.name}'", sections)
    _save(ctx)
    not_applied = [e.as_json() for e in report.not_applied]
    if report.failed:
        reason = "some definitions were not imported: " + "; ".join(str(e) for e in report.failed)
        others = [str(e) for e in report.not_applied if not e.failed]
        if others:
            reason += "; also not applied: " + "; ".join(others)
        return 400, {"error": "bad_request", "reason": reason, "not_applied": not_applied}
    if not_applied:
        return 200, {"not_applied": not_applied}
    return None


@route("api/definitions")
async def get_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _export(ctx)


@route("api/definitions", "POST")
async def post_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _import(ctx, await _import_body(ctx))


@route("api/definitions/:vhost")
async def get_vhost_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    d = vh.definitions()
    return {"rabbit_version": RABBITMQ_COMPAT_VERSION, "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
            "parameters": [], "policies": [], **d}


@route("api/definitions/:vhost", "POST")
async def post_vhost_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    defs = await _import_body(ctx)
    topology = ("exchanges", "queues", "bindings")
    for key in topology:
        items = defs.get(key) or []
        if not isinstance(items, list):
            raise bad_request(f"'{key}' must be a list")
        defs[key] = [dict(i, vhost=vh.name) if isinstance(i, dict) else i for i in items]
    return _import(ctx, defs, topology)
