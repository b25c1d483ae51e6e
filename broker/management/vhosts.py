"""Virtual hosts: list, create, delete, and the permissions given on one."""

from __future__ import annotations

from typing import Any

from .http import Ctx, Router, bad_request, field_tags, not_found
from .views import apply_query, node_name, perm_json, vhost_running

routes = Router()


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
        "tracing": vh.tracer is not None,
        "cluster_state": {node_name(): "running" if vhost_running(vh, ctx.broker.store) else "stopped"},
        "recv_oct": recv,
        "send_oct": sent,
    }
    d.update(totals)
    return d


@routes.route("api/vhosts")
async def vhosts(ctx: Ctx) -> Any:
    return apply_query([_vhost_json(ctx, vh) for vh in ctx.visible_vhosts()], ctx.query)


@routes.route("api/vhosts/:vhost")
async def get_vhost(ctx: Ctx) -> Any:
    return _vhost_json(ctx, ctx.vhost())


@routes.route("api/vhosts/:vhost", "PUT")
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
        meta["tags"] = field_tags(body["tags"])
    tracing = body.get("tracing")
    if tracing is not None and not isinstance(tracing, bool):
        raise bad_request("'tracing' must be true or false")
    vh = ctx.broker.add_vhost(name)
    if tracing is not None:
        vh.set_tracing(tracing)
    await ctx.commit()
    return None if existed else (201, None)


@routes.route("api/vhosts/:vhost", "DELETE")
async def delete_vhost(ctx: Ctx) -> Any:
    ctx.require_admin()
    name = ctx.params["vhost"]
    if not ctx.broker.delete_vhost(name):
        raise not_found()
    ctx.server.vhost_meta.pop(name, None)
    await ctx.commit()
    return None


@routes.route("api/vhosts/:vhost/permissions")
async def vhost_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    return [perm_json(u, v, p) for (u, v), p in ctx.broker.users.permissions.items() if v == vh.name]
