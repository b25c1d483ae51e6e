"""Exchanges: list, declare, delete, their bindings, and publishing a message to one."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from protocol import names

from ..publishing import check_properties
from ..topic_permissions import WRITE
from ..tracing import HTTP_CONNECTION
from .http import Ctx, Router, bad_request, field_arguments, field_bool, not_found
from .messages import make_message, parse_properties, wait_fsync
from .topic_permissions import check_topic
from .views import apply_query, exchange_json, exchange_name, vhost_bindings

routes = Router()


def _exchanges(ctx: Ctx, vhosts: list[Any]) -> list[dict]:
    return [exchange_json(vh, x) for vh in vhosts for x in vh.exchanges.values()]


@routes.route("api/exchanges")
async def exchanges(ctx: Ctx) -> Any:
    return apply_query(_exchanges(ctx, ctx.visible_vhosts()), ctx.query)


@routes.route("api/exchanges/:vhost")
async def vhost_exchanges(ctx: Ctx) -> Any:
    return apply_query(_exchanges(ctx, [ctx.vhost()]), ctx.query)


def _find_exchange(ctx: Ctx, vh: Any) -> Any:
    x = vh.exchanges.get(exchange_name(ctx.params["name"]))
    if x is None:
        raise not_found()
    return x


@routes.route("api/exchanges/:vhost/:name")
async def get_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    return exchange_json(vh, _find_exchange(ctx, vh))


@routes.route("api/exchanges/:vhost/:name", "PUT")
async def put_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    name = exchange_name(ctx.params["name"])
    body = await ctx.body()
    xtype = body.get("type")
    if not isinstance(xtype, str) or not xtype:
        raise bad_request("'type' is missing: the exchange type (direct, fanout, topic, headers)")
    if name:
        ctx.check(vh, "configure", "exchange", name)
    _x, created = vh.declare_exchange(
        name, xtype, field_bool(body, "durable", True), field_bool(body, "auto_delete", False),
        field_bool(body, "internal", False), field_arguments(body),
    )
    await ctx.commit()
    return (201, None) if created else None


@routes.route("api/exchanges/:vhost/:name", "DELETE")
async def delete_exchange(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    x = _find_exchange(ctx, vh)
    if x.name:
        ctx.check(vh, "configure", "exchange", x.name)
    vh.delete_exchange(x.name, ctx.flag("if-unused"))
    await ctx.commit()
    return None


@routes.route("api/exchanges/:vhost/:name/bindings/source")
async def exchange_bindings_source(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    x = _find_exchange(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["source"] == x.name]


@routes.route("api/exchanges/:vhost/:name/bindings/destination")
async def exchange_bindings_destination(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    x = _find_exchange(ctx, vh)
    return [b for b in vhost_bindings(vh) if b["destination_type"] == "exchange" and b["destination"] == x.name]


@routes.route("api/exchanges/:vhost/:name/publish", "POST")
async def publish(ctx: Ctx) -> Any:
    vh = ctx.vhost_for_write()
    x = _find_exchange(ctx, vh)
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
    props = parse_properties(body.get("properties"))
    ctx.check(vh, "write", "exchange", x.name or "amq.default")
    x = vh.exchange_for_publish(x.name)  # 403 for an internal exchange
    check_topic(ctx, vh, WRITE, x, rk)
    msg = make_message(x.name, rk, props, data)
    check_properties(msg, ctx.username, None)
    out = vh.publish(x, msg)
    if vh.tracer is not None:
        vh.tracer.published(msg, out.queues, HTTP_CONNECTION, 1, ctx.username)
    if out.needs_sync and ctx.broker.store is not None:
        await wait_fsync(ctx)
    return {"routed": out.routed and not out.rejected}
