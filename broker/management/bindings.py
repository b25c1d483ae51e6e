"""Bindings: list them, and create, show or delete one between an exchange and a queue or exchange.

A binding is named in URLs by its ``properties_key`` (see :func:`.views.properties_key`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from protocol import errors, names
from protocol.errors import ChannelError

from ..exchange import freeze
from ..queues import Queue
from ..topic_permissions import READ
from .http import Ctx, Router, bad_request, field_arguments, not_found
from .topic_permissions import check_topic
from .views import apply_query, exchange_name, properties_key, vhost_bindings

routes = Router()


@routes.route("api/bindings")
async def bindings(ctx: Ctx) -> Any:
    out = []
    for vh in ctx.visible_vhosts():
        out += vhost_bindings(vh)
    return apply_query(out, ctx.query, None)


@routes.route("api/bindings/:vhost")
async def vhost_bindings_h(ctx: Ctx) -> Any:
    return apply_query(vhost_bindings(ctx.vhost()), ctx.query, None)


def _ends(ctx: Ctx, vh: Any, dtype: str) -> tuple[Any, Any]:
    src = vh.exchanges.get(exchange_name(ctx.params["src"]))
    table = vh.queues if dtype == "q" else vh.exchanges
    dest = table.get(ctx.params["dest"] if dtype == "q" else exchange_name(ctx.params["dest"]))
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
        args = field_arguments(body)
        if not src.name:
            raise ChannelError(errors.ACCESS_REFUSED, "operation not permitted on the default exchange")
        ctx.check(vh, "write", "queue" if dtype == "q" else "exchange", dest.name)
        ctx.check(vh, "read", "exchange", src.name)
        check_topic(ctx, vh, READ, src, rk)
        vh.bind(src, dest, rk, args)
        await ctx.commit()
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
        check_topic(ctx, vh, READ, src, b["routing_key"])
        # the engine's binding with exactly these arguments (same frozen key)
        for eb in list(src.bindings.values()):
            if eb.destination is dest and eb.routing_key == b["routing_key"] and \
                    freeze(eb.arguments) == freeze(b["arguments"]):
                vh.unbind(src, dest, eb.routing_key, eb.arguments)
                break
        await ctx.commit()
        return None

    routes.add(base, "GET", list_pair)
    routes.add(base, "POST", create)
    routes.add(base + "/:props", "GET", get_one)
    routes.add(base + "/:props", "DELETE", delete)


_binding_routes("q")
_binding_routes("e")
