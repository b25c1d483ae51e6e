"""The engine's objects as RabbitMQ's management API shows them (read-only helpers)."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import time
from typing import Any

from ..auth import Permission
from ..exchange import freeze
from ..patterns import PatternError, compile_pattern
from ..queues import Queue
from .http import bad_request
from .stats import message_stats, rate

RABBITMQ_COMPAT_VERSION = "3.13.7"


def node_name() -> str:
    return f"burrowmq@{platform.node() or 'localhost'}"


def split_peer(peer: str) -> tuple[str, int]:
    host, _, port = peer.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return peer, 0


# -- exchanges, queues, bindings ---------------------------------------------------------

def exchange_name(name: str) -> str:
    """The engine's name of an exchange named in a path (``amq.default`` is the default exchange, "")."""
    return "" if name == "amq.default" else name


def exchange_json(vh: Any, x: Any) -> dict:
    d = x.describe()
    d.update(x.info())
    d["vhost"] = vh.name
    d["user_who_performed_action"] = "rmq-internal" if (not x.name or x.name.startswith("amq.")) else ""
    return d


def queue_json(vh: Any, q: Queue, stats: Any) -> dict:
    d = q.describe()
    r = stats.queue_rates(q)
    d.update(
        vhost=vh.name,
        node=node_name(),
        state="running",
        type="classic",
        policy=None,
        effective_policy_definition={},
        exclusive_consumer_tag=q.exclusive_consumer.tag if q.exclusive_consumer is not None else None,
        message_bytes=q.bytes_ready,
        message_bytes_ready=q.bytes_ready,
        messages_details=rate(r[3] + r[4]),
        messages_ready_details=rate(r[3]),
        messages_unacknowledged_details=rate(r[4]),
        message_stats=message_stats((q.published, q.delivered, q.acked), r),
        durable_log=q.log is not None,
    )
    owner = q.owner
    if owner is not None:
        host, port = split_peer(owner.peer)
        d["owner_pid_details"] = {"name": owner.name, "peer_host": host, "peer_port": port}
    return d


def args_hash(args: dict) -> str:
    digest = hashlib.sha1(repr(freeze(args)).encode()).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")


def properties_key(routing_key: str, args: dict) -> str:
    """RabbitMQ's ``properties_key`` of a binding: it names the binding in URLs."""
    rk = routing_key.replace("%", "%25").replace("~", "%7E")
    if args:
        return f"{rk}~{args_hash(args)}"
    return rk if rk else "~"


def binding_json(vh: Any, source: str, dest: str, dest_type: str, routing_key: str, args: dict) -> dict:
    return {
        "source": source,
        "vhost": vh.name,
        "destination": dest,
        "destination_type": dest_type,
        "routing_key": routing_key,
        "arguments": args or {},
        "properties_key": properties_key(routing_key, args or {}),
    }


def vhost_bindings(vh: Any) -> list[dict]:
    """Every binding of a vhost, the default exchange's implicit ones first (as RabbitMQ lists them)."""
    out = [binding_json(vh, "", q.name, "queue", q.name, {}) for q in vh.queues.values()]
    for x in vh.exchanges.values():
        if not x.name:
            continue
        for b in x.bindings.values():
            d = b.destination
            out.append(
                binding_json(vh, x.name, d.name, "queue" if isinstance(d, Queue) else "exchange",
                             b.routing_key, b.arguments)
            )
    return out


# -- vhosts, permissions -------------------------------------------------------------------

def vhost_running(vh: Any, store: Any) -> bool:
    """Whether a vhost is up (RabbitMQ's ``running``; ``stopped`` otherwise).

    A vhost in the broker's table is up unless, with a data directory, the
    message log of one of its durable queues is no longer open: gone from the
    store's table, or its directory gone from under the broker (removed, or
    its disk unmounted).  That queue's persistent messages then have nowhere
    safe to go: a new segment cannot be made, and records written to an open
    one land in an unlinked file.  Exclusive queues keep no log.  The cost is
    one ``stat`` per durable queue."""
    if store is None:
        return True
    for q in vh.queues.values():
        if q.durable and q.owner is None and not _log_open(q.log, store):
            return False
    return True


def _log_open(qlog: Any, store: Any) -> bool:
    return qlog is not None and store.logs.get(qlog.dir) is qlog and os.path.isdir(qlog.dir)


def perm_json(user: str, vhost: str, p: Permission) -> dict:
    return {"user": user, "vhost": vhost, **p.as_dict()}


# -- connections, channels, consumers ------------------------------------------------------

def connection_json(conn: Any, broker: Any, stats: Any) -> dict:
    host, port = split_peer(conn.peer)
    rr, sr = stats.conn_rates(conn)
    props = conn.client_properties or {}
    return {
        "name": conn.name,
        "node": node_name(),
        "vhost": conn.vhost.name if conn.vhost is not None else None,
        "user": conn.username,
        "user_who_performed_action": conn.username,
        "peer_host": host,
        "peer_port": port,
        "host": broker.host,
        "port": broker.port,
        "state": "running" if conn.state == "opened" else conn.state,
        "channels": len(conn.channels),
        "channel_max": conn.channel_max,
        "frame_max": conn.frame_max,
        "timeout": conn.heartbeat,
        "protocol": "AMQP 0-9-1",
        "type": "network",
        "ssl": False,
        "auth_mechanism": "PLAIN",
        "client_properties": props,
        "connected_at": stats.connected_at(conn),
        "recv_oct": conn.recv_bytes,
        "recv_oct_details": rate(rr),
        "send_oct": conn.sent_bytes,
        "send_oct_details": rate(sr),
        "recv_cnt": 0,
        "send_cnt": 0,
    }


def channel_name(conn: Any, ch: Any) -> str:
    return f"{conn.name} ({ch.number})"


def channel_json(conn: Any, ch: Any) -> dict:
    host, port = split_peer(conn.peer)
    return {
        "name": channel_name(conn, ch),
        "number": ch.number,
        "node": node_name(),
        "user": conn.username,
        "user_who_performed_action": conn.username,
        "vhost": conn.vhost.name if conn.vhost is not None else None,
        "connection_details": {"name": conn.name, "peer_host": host, "peer_port": port},
        "consumer_count": len(ch.consumers),
        "messages_unacknowledged": len(ch.unacked),
        "messages_unconfirmed": len(ch.pending),
        "messages_uncommitted": len(ch.tx_publishes),
        "acks_uncommitted": len(ch.tx_acks),
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.tx,
        "state": "closing" if ch.closing else ("running" if ch.flow else "flow"),
    }


def consumer_json(conn: Any, ch: Any, c: Any) -> dict:
    host, port = split_peer(conn.peer)
    q = c.queue
    return {
        "consumer_tag": c.tag,
        "queue": {"name": q.name, "vhost": q.vhost.name},
        "channel_details": {
            "name": channel_name(conn, ch),
            "number": ch.number,
            "connection_name": conn.name,
            "peer_host": host,
            "peer_port": port,
            "user": conn.username,
            "node": node_name(),
        },
        "ack_required": not c.no_ack,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "arguments": c.arguments or {},
        "priority": c.priority,
        "active": True,
        "activity_status": "up",
    }


# -- list queries (RabbitMQ's sort / columns / pagination parameters) ------------------

def _get_path(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (1, v)
    return (2, str(v))


def _pick_columns(d: dict, cols: list[str]) -> dict:
    out: dict = {}
    for c in cols:
        v = _get_path(d, c)
        parts = c.split(".")
        t = out
        for p in parts[:-1]:
            t = t.setdefault(p, {})
        t[parts[-1]] = v
    return out


MAX_FILTER_BYTES = 1024
"""The longest ``use_regex`` name filter accepted, in UTF-8 bytes."""

FILTER_BUDGET_SECONDS = 0.25
"""How long one ``use_regex`` filter may run before the request is refused."""


def regex_filter(items: list[dict], pattern: str) -> list[dict]:
    """The items whose name the RE2 ``pattern`` is found in (400 naming ``name`` if refused).

    Each match is linear in the name, but a pattern can still cost a
    millisecond per name; the time budget keeps a long list from holding the
    event loop."""
    try:
        if len(pattern.encode("utf-8", "surrogatepass")) > MAX_FILTER_BYTES:
            raise PatternError("name", pattern, f"longer than {MAX_FILTER_BYTES} bytes")
        rx = compile_pattern(pattern, "name")
    except PatternError as exc:
        raise bad_request(str(exc)) from None
    deadline = time.monotonic() + FILTER_BUDGET_SECONDS
    out = []
    for i in items:
        if rx.search(str(i.get("name", ""))) is not None:
            out.append(i)
        if time.monotonic() > deadline:
            raise bad_request(
                f"'name': the regular expression took longer than {FILTER_BUDGET_SECONDS} s "
                f"to filter {len(items)} items; use a simpler one"
            )
    return out


def apply_query(items: list[dict], query: Any, default_sort: str | None = "name") -> Any:
    """Filtering, sorting, pagination and column selection, as RabbitMQ's list endpoints do."""
    total = len(items)
    name = query.get("name")
    if name:
        if query.get("use_regex", "").lower() == "true":
            items = regex_filter(items, name)
        else:
            items = [i for i in items if name in str(i.get("name", ""))]
    sort = query.get("sort", default_sort or "")
    if sort:
        items = sorted(items, key=lambda i: _sort_key(_get_path(i, sort)))
    if query.get("sort_reverse", "").lower() == "true":
        items = list(reversed(items))
    cols = [c for c in query.get("columns", "").split(",") if c]
    page = query.get("page")
    if page is not None:
        try:
            page_n = int(page)
            size = int(query.get("page_size", "100"))
        except ValueError:
            raise bad_request("page and page_size must be integers") from None
        if page_n < 1 or size < 1 or size > 500:
            raise bad_request("page must be >= 1 and page_size between 1 and 500")
        filtered = len(items)
        chunk = items[(page_n - 1) * size : page_n * size]
        if cols:
            chunk = [_pick_columns(i, cols) for i in chunk]
        return {
            "filtered_count": filtered,
            "item_count": len(chunk),
            "items": chunk,
            "page": page_n,
            "page_count": max(1, -(-filtered // size)),
            "page_size": size,
            "total_count": total,
        }
    if cols:
        items = [_pick_columns(i, cols) for i in items]
    return items
