"""Queues: list, declare, delete, purge, their bindings, and getting messages from one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol import errors
from protocol.errors import ChannelError

from ..message import Message
from ..queues import Queue
from ..queues.stream import StreamQueue
from ..tracing import HTTP_CONNECTION
from .http import Ctx, Router, bad_request, field_arguments, field_bool, not_found
from .messages import payload_json, properties_json
from .stream_peek import peek_stream_json, stream_offset_spec
from .views import apply_query_lazy, queue_consumers_json, queue_json, vhost_bindings

routes = Router()


# sort keys a page of queues can be sorted by without rendering every queue first
_CHEAP_SORT_KEYS: dict[str, Callable[[Queue], Any]] = {
    "name": lambda q: q.name,
    "vhost": lambda q: q.vhost.name,
    "durable": lambda q: q.durable,
    "auto_delete": lambda q: q.auto_delete,
    "exclusive": lambda q: q.exclusive,
    "messages": lambda q: q.ready + q.unacked,
    "messages_ready": lambda q: q.ready,
    "messages_unacknowledged": lambda q: q.unacked,
    "consumers": lambda q: len(q.consumers),
    "type": lambda q: q.type_name,
}


def _queues(ctx: Ctx, vhosts: list[Any]) -> Any:
    """The queues of ``vhosts`` after the query (filter, sort, page, columns)."""
    stats = ctx.stats
    return apply_query_lazy(
        [q for vh in vhosts for q in vh.queues.values()], ctx.query, lambda q: q.name, _CHEAP_SORT_KEYS,
        lambda q: queue_json(q.vhost, q, stats),
    )


@routes.route("api/queues")
async def queues(ctx: Ctx) -> Any:
    return _queues(ctx, ctx.visible_vhosts())


@routes.route("api/queues/:vhost")
async def vhost_queues(ctx: Ctx) -> Any:
    return _queues(ctx, [ctx.vhost()])


def _find_queue(ctx: Ctx, vh: Any) -> Queue:
    q = vh.queues.get(ctx.params["name"])
    if q is None:
        raise not_found()
    return q


@routes.route("api/queues/:vhost/:name")
async def get_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    q = _find_queue(ctx, vh)
    return dict(queue_json(vh, q, ctx.stats), consumer_details=queue_consumers_json(q))


@routes.route("api/queues/:vhost/:name", "PUT")
async def put_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    name = ctx.params["name"]
    body = await ctx.body()
    ctx.check(vh, "configure", "queue", name)
    _q, created = vh.declare_queue(
        name, field_bool(body, "durable", True), False, field_bool(body, "auto_delete", False),
        field_arguments(body), None,
    )
    await ctx.commit()
    return (201, None) if created else None


@routes.route("api/queues/:vhost/:name", "DELETE")
async def delete_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _find_queue(ctx, vh)
    ctx.check(vh, "configure", "queue", q.name)
    if ctx.flag("if-unused") and q.consumers:
        raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', q.name)} in use")
    if ctx.flag("if-empty") and q.ready:
        raise ChannelError(errors.PRECONDITION_FAILED, f"{vh.what('queue', q.name)} not empty")
    vh.delete_queue(q)
    await ctx.commit()
    return None


@routes.route("api/queues/:vhost/:name/contents", "DELETE")
async def purge_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _find_queue(ctx, vh)
    ctx.check(vh, "read", "queue", q.name)
    q.purge()
    return None


@routes.route("api/queues/:vhost/:name/bindings")
async def queue_bindings(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    q = _find_queue(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["destination_type"] == "queue" and b["destination"] == q.name]


ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")


def _count(body: dict, limit: int | None = None) -> int:
    """The ``count`` of a get or peek request: a positive integer (at most ``limit``)."""
    count = body.get("count", 1)
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise bad_request("'count' must be a positive integer")
    if limit is not None and count > limit:
        raise bad_request(f"'count' must be at most {limit}")
    return count


def _encoding(body: dict) -> tuple[str, int | None]:
    """The ``encoding`` and ``truncate`` of a get or peek request."""
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request("'encoding' must be 'auto' or 'base64'")
    truncate = body.get("truncate")
    if truncate in ("", None):
        return encoding, None
    try:
        return encoding, int(truncate)
    except (TypeError, ValueError):
        raise bad_request("'truncate' must be an integer") from None


def _message_json(q: Queue, msg: Message, encoding: str, truncate: int | None) -> dict:
    """One message as the get endpoint shows it (RabbitMQ's fields)."""
    payload, penc = payload_json(msg.body if truncate is None else msg.body[:truncate], encoding)
    try:
        props = properties_json(msg)
    except Exception:
        props = {}
    out = {
        "payload_bytes": len(msg.body),
        "redelivered": msg.redelivered,
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "message_count": q.ready,
        "properties": props,
        "payload": payload,
        "payload_encoding": penc,
    }
    if q.type_name == "quorum":  # how often it came back before (poison messages)
        out["delivery_count"] = (props.get("headers") or {}).get("x-delivery-count", 0)
    return out


@routes.route("api/queues/:vhost/:name/get", "POST")
async def get_messages(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _find_queue(ctx, vh)
    body = await ctx.body()
    count = _count(body)
    ackmode = body.get("ackmode", "ack_requeue_true")
    if ackmode not in ACKMODES:
        raise bad_request(f"'ackmode' must be one of {', '.join(ACKMODES)}")
    encoding, truncate = _encoding(body)
    ctx.check(vh, "read", "queue", q.name)
    taken: list[Message] = []
    out = []
    for _ in range(count):
        msg = q.get()
        if msg is None:
            break
        taken.append(msg)
        if vh.tracer is not None:
            vh.tracer.delivered(msg, q.name, msg.redelivered, HTTP_CONNECTION, 1, ctx.username)
        out.append(_message_json(q, msg, encoding, truncate))
    if ackmode.endswith("requeue_true"):
        q.requeue(taken)
    elif ackmode == "ack_requeue_false":
        for m in taken:
            q.settle(m)
    else:
        for m in taken:
            q.reject(m)
    return out


PEEK_MAX_COUNT = 100
"""The most messages one peek shows."""

PEEK_MAX_BYTES = 1 << 20
"""The most payload bytes one peek answer carries (bodies are cut to fit)."""

PEEK_MAX_OFFSET = 1_000_000
"""How far into a queue a peek may start."""


@routes.route("api/queues/:vhost/:name/peek", "POST")
async def peek_messages(ctx: Ctx) -> Any:
    """Ready messages from ``offset`` on, left where they are: not delivered, not
    marked redelivered, counters unchanged.  Same permission and fields as get,
    plus ``position`` (0 is the head); at most ``PEEK_MAX_COUNT`` messages and
    ``PEEK_MAX_BYTES`` of payload (``payload_truncated`` says a body was cut)."""
    vh = ctx.vhost_for_write()
    q = _find_queue(ctx, vh)
    body = await ctx.body()
    count = _count(body, PEEK_MAX_COUNT)
    if isinstance(q, StreamQueue):
        return await _peek_stream(ctx, vh, q, body, count)
    offset = body.get("offset", 0)
    if isinstance(offset, str) and offset.isdigit():
        offset = int(offset)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= PEEK_MAX_OFFSET:
        raise bad_request(f"'offset' must be an integer from 0 to {PEEK_MAX_OFFSET}")
    encoding, truncate = _encoding(body)
    ctx.check(vh, "read", "queue", q.name)
    msgs = q.peek(offset, count)
    if msgs is None:
        raise bad_request(f"{vh.what('queue', q.name)} is of type '{q.type_name}', which cannot be peeked at")
    budget = PEEK_MAX_BYTES
    out = []
    for i, msg in enumerate(msgs):
        cut = len(msg.body) if truncate is None else min(truncate, len(msg.body))
        cut = max(min(cut, budget), 0)
        d = _message_json(q, msg, encoding, cut)
        d["position"] = offset + i
        d["payload_truncated"] = cut < len(msg.body)
        out.append(d)
        budget -= cut
    return out


async def _peek_stream(ctx: Ctx, vh: Any, q: StreamQueue, body: dict, count: int) -> Any:
    """A stream's peek: from an offset spec (``offset``: a number, ``first``, ``last``,
    ``next``, an interval or an ISO 8601 time), answered with the offsets (see
    :mod:`.stream_peek`)."""
    spec = stream_offset_spec(body.get("offset", "first"))
    encoding, truncate = _encoding(body)
    ctx.check(vh, "read", "queue", q.name)
    if truncate is not None:
        truncate = max(truncate, 0)
    found = await q.peek_records(spec, count, PEEK_MAX_BYTES, truncate)
    return peek_stream_json(q, found, encoding)
