"""Queues: list, declare, delete, purge, their bindings, and getting messages from one."""

from __future__ import annotations

import base64
from typing import Any

from protocol import errors
from protocol.errors import ChannelError

from ..message import Message
from ..queues import Queue
from .http import Ctx, Router, bad_request, field_arguments, field_bool, not_found
from .messages import properties_json
from .views import apply_query, queue_json, vhost_bindings

routes = Router()


def _queues(ctx: Ctx, vhosts: list[Any]) -> list[dict]:
    s = ctx.stats
    return [queue_json(vh, q, s) for vh in vhosts for q in vh.queues.values()]


@routes.route("api/queues")
async def queues(ctx: Ctx) -> Any:
    return apply_query(_queues(ctx, ctx.visible_vhosts()), ctx.query)


@routes.route("api/queues/:vhost")
async def vhost_queues(ctx: Ctx) -> Any:
    return apply_query(_queues(ctx, [ctx.vhost()]), ctx.query)


def _find_queue(ctx: Ctx, vh: Any) -> Queue:
    q = vh.queues.get(ctx.params["name"])
    if q is None:
        raise not_found()
    return q


@routes.route("api/queues/:vhost/:name")
async def get_queue(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    return queue_json(vh, _find_queue(ctx, vh), ctx.stats)


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
    ctx.commit()
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
    ctx.commit()
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


@routes.route("api/queues/:vhost/:name/get", "POST")
async def get_messages(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    q = _find_queue(ctx, vh)
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
            props = properties_json(msg)
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
