"""Topic permissions (RabbitMQ's ``/api/topic-permissions``): per user, vhost and topic
exchange, the write and read regexes routing keys must match."""

from __future__ import annotations

from typing import Any

from ..patterns import PatternError
from ..topic_permissions import make_permission
from .http import Ctx, Router, bad_request, not_found

routes = Router()


def check_topic(ctx: Ctx, vh: Any, what: str, exchange: Any, routing_key: str) -> None:
    """The topic permission check of an HTTP publish (write) or binding (read), skipped
    for administrators like the other permission checks of the API."""
    topics = ctx.broker.users.topics
    if topics.rules and exchange.type_name == "topic" and not ctx.is_admin:
        topics.check(what, ctx.username, vh.name, exchange.name, routing_key)


@routes.route("api/topic-permissions")
async def topic_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return ctx.broker.users.topics.listing()


@routes.route("api/topic-permissions/:vhost/:user")
async def get_topic_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    out = ctx.broker.users.topics.listing(ctx.params["user"], ctx.params["vhost"])
    if not out:
        raise not_found()
    return out


@routes.route("api/topic-permissions/:vhost/:user", "PUT")
async def put_topic_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh, user = ctx.grant_target()
    body = await ctx.body()
    for k in ("exchange", "write", "read"):
        if not isinstance(body.get(k), str):
            raise bad_request(f"'{k}' is missing or not a string: exchange, write and read are required")
    try:
        perm = make_permission(body["exchange"], body["write"], body["read"])
    except PatternError as exc:
        raise bad_request(str(exc)) from None
    new = ctx.broker.users.topics.set(user, vh, perm)
    ctx.broker.journal.changed()
    await ctx.commit()
    return (201, None) if new else None


@routes.route("api/topic-permissions/:vhost/:user", "DELETE")
async def delete_topic_permissions(ctx: Ctx) -> Any:
    """All of the user's topic permissions in the vhost, or (``?exchange=X``) one."""
    ctx.require_admin()
    exchange = ctx.query.get("exchange") or None
    if not ctx.broker.users.topics.clear(ctx.params["user"], ctx.params["vhost"], exchange):
        raise not_found()
    ctx.broker.journal.changed()
    await ctx.commit()
    return None


@routes.route("api/users/:user/topic-permissions")
async def user_topic_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    user = ctx.params["user"]
    if user not in ctx.broker.users.users:
        raise not_found()
    return ctx.broker.users.topics.listing(user=user)


@routes.route("api/vhosts/:vhost/topic-permissions")
async def vhost_topic_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    return ctx.broker.users.topics.listing(vhost=vh.name)
