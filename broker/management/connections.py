"""Connections, channels and consumers: listing them, and closing a connection."""

from __future__ import annotations

from typing import Any

from protocol import errors

from .http import Ctx, HTTPError, Router, not_found
from .views import apply_query, channel_json, channel_name, connection_json, consumer_json

routes = Router()


def visible_connections(ctx: Ctx) -> list[Any]:
    conns = [c for c in ctx.broker.open_connections if c.state == "opened"]
    if ctx.is_monitor:
        return conns
    return [c for c in conns if c.username == ctx.username]


def _find_connection(ctx: Ctx, name: str) -> Any:
    for c in visible_connections(ctx):
        if c.name == name:
            return c
    raise not_found()


@routes.route("api/connections")
async def connections(ctx: Ctx) -> Any:
    b, s = ctx.broker, ctx.stats
    return apply_query([connection_json(c, b, s) for c in visible_connections(ctx)], ctx.query)


@routes.route("api/vhosts/:vhost/connections")
async def vhost_connections(ctx: Ctx) -> Any:
    vh = ctx.vhost()
    b, s = ctx.broker, ctx.stats
    return apply_query(
        [connection_json(c, b, s) for c in visible_connections(ctx) if c.vhost is vh], ctx.query
    )


@routes.route("api/connections/:name")
async def get_connection(ctx: Ctx) -> Any:
    return connection_json(_find_connection(ctx, ctx.params["name"]), ctx.broker, ctx.stats)


@routes.route("api/connections/:name", "DELETE")
async def close_connection(ctx: Ctx) -> Any:
    conn = _find_connection(ctx, ctx.params["name"])
    if not ctx.is_admin and conn.username != ctx.username:
        raise HTTPError(403, "not_authorized", "Not administrator user")
    reason = ctx.request.headers.get("X-Reason") or "Closed via management plugin"
    conn.close(errors.CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
    return None


@routes.route("api/connections/:name/channels")
async def connection_channels(ctx: Ctx) -> Any:
    conn = _find_connection(ctx, ctx.params["name"])
    return apply_query([channel_json(conn, ch) for ch in conn.channels.values()], ctx.query)


def _channels(ctx: Ctx, vh: Any = None) -> list[dict]:
    out = []
    for conn in visible_connections(ctx):
        if vh is not None and conn.vhost is not vh:
            continue
        out += [channel_json(conn, ch) for ch in conn.channels.values()]
    return out


@routes.route("api/channels")
async def channels(ctx: Ctx) -> Any:
    return apply_query(_channels(ctx), ctx.query)


@routes.route("api/vhosts/:vhost/channels")
async def vhost_channels(ctx: Ctx) -> Any:
    return apply_query(_channels(ctx, ctx.vhost()), ctx.query)


@routes.route("api/channels/:name")
async def get_channel(ctx: Ctx) -> Any:
    name = ctx.params["name"]
    for conn in visible_connections(ctx):
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


@routes.route("api/consumers")
async def consumers(ctx: Ctx) -> Any:
    return apply_query(_consumers(ctx, ctx.visible_vhosts()), ctx.query, "consumer_tag")


@routes.route("api/consumers/:vhost")
async def vhost_consumers(ctx: Ctx) -> Any:
    return apply_query(_consumers(ctx, [ctx.vhost()]), ctx.query, "consumer_tag")
