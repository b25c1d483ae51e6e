"""The engine's objects as RabbitMQ's management API shows them (read-only helpers)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from ..auth import Permission
from ..certinfo import tls_json
from ..exchange import freeze
from ..net import node_name
from ..patterns import PatternError, compile_pattern
from ..queues import Queue
from ..queues.settings import merged_definition
from .http import bad_request
from .stats import message_stats, rate

RABBITMQ_COMPAT_VERSION = "3.13.7"


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
    if x.policy is not None:  # RabbitMQ shows an exchange's policy only when it has one
        d["policy"] = x.policy.name
    return d


def policy_fields(obj: Any) -> dict:
    """A queue's ``policy``, ``operator_policy`` (null when none) and ``effective_policy_definition``."""
    p, op = obj.policy, obj.operator_policy
    return {
        "policy": p.name if p is not None else None,
        "operator_policy": op.name if op is not None else None,
        "effective_policy_definition": merged_definition(p.definition if p is not None else None,
                                                         op.definition if op is not None else None),
    }


def queue_json(vh: Any, q: Queue, stats: Any) -> dict:
    d = q.describe()
    r = stats.queue_rates(q)
    d.update(
        vhost=vh.name,
        node=node_name(),
        state="running",
        type=q.type_name,
        **policy_fields(q),
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
        if q.durable and q.owner is None and not _log_open(q.store_log, store):
            return False
    return True


def _log_open(qlog: Any, store: Any) -> bool:
    return qlog is not None and store.logs.get(qlog.dir) is qlog and os.path.isdir(qlog.dir)


def perm_json(user: str, vhost: str, p: Permission) -> dict:
    return {"user": user, "vhost": vhost, **p.as_dict()}


# -- connections, channels, consumers ------------------------------------------------------

def connection_state(conn: Any) -> str:
    """RabbitMQ's connection state: ``flow`` while flow control holds a publisher
    (see broker.flow), ``blocked`` while a resource alarm does, else ``running``."""
    if conn.state != "opened":
        return str(conn.state)
    if conn.throttled:
        return "flow"
    return "blocked" if conn.blocked else "running"


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
        "port": broker.tls_port if conn.tls is not None else broker.port,
        "state": connection_state(conn),
        "channels": len(conn.channels),
        "channel_max": conn.channel_max,
        "frame_max": conn.frame_max,
        "timeout": conn.heartbeat,
        "protocol": "AMQP 0-9-1",
        "type": "network",
        **tls_json(conn.tls),
        "auth_mechanism": conn.auth_mechanism,
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


def consumer_activity(q: Any, c: Any) -> tuple[bool, str]:
    """Whether ``c`` gets messages from ``q`` now, and RabbitMQ's ``activity_status``: ``up``, or on a
    single-active-consumer queue ``single_active`` for the first consumer and ``waiting`` for the rest."""
    if not q.arguments.get("x-single-active-consumer"):
        return True, "up"
    active = bool(q.consumers) and q.consumers[0] is c
    return active, "single_active" if active else "waiting"


def consumer_json(conn: Any, ch: Any, c: Any) -> dict:
    host, port = split_peer(conn.peer)
    q = c.queue
    active, activity = consumer_activity(q, c)
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
        "active": active,
        "activity_status": activity,
    }


def queue_consumers_json(q: Any) -> list[dict]:
    """A queue's ``consumer_details`` (its single-queue GET): its consumers, in its delivery order."""
    out = []
    for c in q.consumers:
        ch: Any = c.channel
        out.append(consumer_json(ch.conn, ch, c))
    return out


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


def regex_filter(items: list[Any], pattern: str, name_of: Callable[[Any], str] | None = None) -> list[Any]:
    """The items whose name the RE2 ``pattern`` is found in (400 naming ``name`` if refused).

    Items are JSON objects, or anything ``name_of`` gives the name of.  Each
    match is linear in the name, but a pattern can still cost a millisecond
    per name; the time budget keeps a long list from holding the event loop."""
    if name_of is None:
        name_of = _json_name
    try:
        if len(pattern.encode("utf-8", "surrogatepass")) > MAX_FILTER_BYTES:
            raise PatternError("name", pattern, f"longer than {MAX_FILTER_BYTES} bytes")
        rx = compile_pattern(pattern, "name")
    except PatternError as exc:
        raise bad_request(str(exc)) from None
    deadline = time.monotonic() + FILTER_BUDGET_SECONDS
    out = []
    for i in items:
        if rx.search(name_of(i)) is not None:
            out.append(i)
        if time.monotonic() > deadline:
            raise bad_request(
                f"'name': the regular expression took longer than {FILTER_BUDGET_SECONDS} s "
                f"to filter {len(items)} items; use a simpler one"
            )
    return out


def _json_name(item: dict) -> str:
    return str(item.get("name", ""))


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
    paging = _page_params(query)
    if paging is not None:
        page_n, size = paging
        chunk = items[(page_n - 1) * size : page_n * size]
        if cols:
            chunk = [_pick_columns(i, cols) for i in chunk]
        return _page(chunk, len(items), total, page_n, size)
    if cols:
        items = [_pick_columns(i, cols) for i in items]
    return items


def _page_params(query: Any) -> tuple[int, int] | None:
    """``(page, page_size)`` asked for, or None for no pagination (400 if out of range)."""
    page = query.get("page")
    if page is None:
        return None
    try:
        page_n = int(page)
        size = int(query.get("page_size", "100"))
    except ValueError:
        raise bad_request("page and page_size must be integers") from None
    if page_n < 1 or size < 1 or size > 500:
        raise bad_request("page must be >= 1 and page_size between 1 and 500")
    return page_n, size


def _page(chunk: list[dict], filtered: int, total: int, page_n: int, size: int) -> dict:
    """RabbitMQ's shape of one page of a list (``pagination=true``)."""
    return {
        "filtered_count": filtered,
        "item_count": len(chunk),
        "items": chunk,
        "page": page_n,
        "page_count": max(1, -(-filtered // size)),
        "page_size": size,
        "total_count": total,
    }


def apply_query_lazy(objects: list[Any], query: Any, name_of: Callable[[Any], str],
                     cheap_keys: dict[str, Callable[[Any], Any]], render: Callable[[Any], dict]) -> Any:
    """:func:`apply_query` over engine objects, rendering only the page asked for.

    With ``page`` given and a sort key that ``cheap_keys`` reads straight off an
    object (or no sort), filtering and sorting run on the objects and only the
    page's items are turned into JSON, so one page of 10,000 queues costs little
    more than the sort.  The answer is the same as :func:`apply_query` over every
    rendered object; any other query renders everything and hands it over."""
    paging = _page_params(query)
    sort = query.get("sort", "name")
    key = cheap_keys.get(sort) if sort else None
    if paging is None or (sort and key is None):
        return apply_query([render(o) for o in objects], query)
    page_n, size = paging
    total = len(objects)
    name = query.get("name")
    if name:
        if query.get("use_regex", "").lower() == "true":
            objects = regex_filter(objects, name, name_of)
        else:
            objects = [o for o in objects if name in name_of(o)]
    if key is not None:
        objects = sorted(objects, key=lambda o: _sort_key(key(o)))
    if query.get("sort_reverse", "").lower() == "true":
        objects = list(reversed(objects))
    chunk = [render(o) for o in objects[(page_n - 1) * size : page_n * size]]
    cols = [c for c in query.get("columns", "").split(",") if c]
    if cols:
        chunk = [_pick_columns(d, cols) for d in chunk]
    return _page(chunk, len(objects), total, page_n, size)
