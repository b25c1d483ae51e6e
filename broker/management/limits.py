"""Vhost limits and user limits (RabbitMQ's /api/vhost-limits and /api/user-limits).

``PUT /api/vhost-limits/VHOST/NAME`` with ``{"value": N}`` sets one limit
(``max-connections``, ``max-queues``), ``DELETE`` clears it; user limits
(``max-connections``, ``max-channels``) are the same under ``/api/user-limits/USER``.
Setting a limit is for administrators; a bad name or value is a 400 with RabbitMQ's
text.  A limit applies to the next connection, channel or queue: what is open stays.

Beyond RabbitMQ's API, ``PUT /api/vhost-limits/VHOST`` (and ``/api/user-limits/USER``)
with a JSON object replaces all the limits at once, and ``DELETE`` there clears them:
``broker set-vhost-limits`` uses it, so that a definition with one bad value changes
nothing.
"""

from __future__ import annotations

from typing import Any

from ..limits import USER_LIMITS, VHOST_LIMITS, LimitError, parse_limits
from .http import Ctx, HTTPError, Router, bad_request

routes = Router()


async def _value(ctx: Ctx, current: dict[str, int], keys: tuple[str, ...], what: str) -> dict[str, int]:
    """The limits with the path's limit set to the body's ``value``, checked."""
    body = await ctx.body()
    if "value" not in body:
        raise bad_request("[{key_missing,value}]")
    try:
        return parse_limits(dict(current, **{ctx.params["name"]: body["value"]}), keys, what)
    except LimitError as exc:
        raise bad_request(str(exc)) from None


# -- vhost limits ------------------------------------------------------------------------

def _vhost_limits(vhosts: list[Any]) -> list[dict]:
    return [{"vhost": vh.name, "value": dict(vh.limits)} for vh in vhosts if vh.limits]


@routes.route("api/vhost-limits")
async def vhost_limits(ctx: Ctx) -> Any:
    return _vhost_limits(ctx.visible_vhosts())


@routes.route("api/vhost-limits/:vhost")
async def one_vhost_limits(ctx: Ctx) -> Any:
    return _vhost_limits([ctx.vhost()])


@routes.route("api/vhost-limits/:vhost", "PUT")
async def put_vhost_limits(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    try:
        vh.set_limits(parse_limits(await ctx.body(), VHOST_LIMITS, "limits"))
    except LimitError as exc:
        raise bad_request(str(exc)) from None
    await ctx.commit()
    return None


@routes.route("api/vhost-limits/:vhost", "DELETE")
async def delete_vhost_limits(ctx: Ctx) -> Any:
    ctx.require_admin()
    ctx.vhost().set_limits({})
    await ctx.commit()
    return None


@routes.route("api/vhost-limits/:vhost/:name", "PUT")
async def put_vhost_limit(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    vh.set_limits(await _value(ctx, vh.limits, VHOST_LIMITS, "limits"))
    await ctx.commit()
    return None


@routes.route("api/vhost-limits/:vhost/:name", "DELETE")
async def delete_vhost_limit(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    if ctx.params["name"] in vh.limits:
        vh.set_limits({k: v for k, v in vh.limits.items() if k != ctx.params["name"]})
        await ctx.commit()
    return None


# -- user limits -------------------------------------------------------------------------

@routes.route("api/user-limits")
async def user_limits(ctx: Ctx) -> Any:
    ctx.require_admin()
    return [{"user": u.name, "value": dict(u.limits)} for u in ctx.broker.users.users.values() if u.limits]


@routes.route("api/user-limits/:user")
async def one_user_limits(ctx: Ctx) -> Any:
    if not ctx.is_monitor and ctx.username != ctx.params["user"]:
        raise HTTPError(403, "not_authorized", "Not administrator user")
    u = ctx.path_user()
    return [{"user": u.name, "value": dict(u.limits)}] if u.limits else []


@routes.route("api/user-limits/:user", "PUT")
async def put_user_limits(ctx: Ctx) -> Any:
    ctx.require_admin()
    u = ctx.path_user()
    try:
        ctx.broker.users.set_limits(u.name, parse_limits(await ctx.body(), USER_LIMITS, "user-limits"))
    except LimitError as exc:
        raise bad_request(str(exc)) from None
    ctx.broker.journal.changed()
    await ctx.commit()
    return None


@routes.route("api/user-limits/:user", "DELETE")
async def delete_user_limits(ctx: Ctx) -> Any:
    ctx.require_admin()
    ctx.broker.users.set_limits(ctx.path_user().name, {})
    ctx.broker.journal.changed()
    await ctx.commit()
    return None


@routes.route("api/user-limits/:user/:name", "PUT")
async def put_user_limit(ctx: Ctx) -> Any:
    ctx.require_admin()
    u = ctx.path_user()
    ctx.broker.users.set_limits(u.name, await _value(ctx, u.limits, USER_LIMITS, "user-limits"))
    ctx.broker.journal.changed()
    await ctx.commit()
    return None


@routes.route("api/user-limits/:user/:name", "DELETE")
async def delete_user_limit(ctx: Ctx) -> Any:
    ctx.require_admin()
    u = ctx.path_user()
    if ctx.params["name"] in u.limits:
        ctx.broker.users.set_limits(u.name, {k: v for k, v in u.limits.items() if k != ctx.params["name"]})
        ctx.broker.journal.changed()
        await ctx.commit()
    return None
