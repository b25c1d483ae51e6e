"""Policies and operator policies: list, get, put, delete (RabbitMQ's /api/policies, /api/operator-policies).

Who may do what, as in RabbitMQ: policies are read and written by users tagged
``policymaker`` (in the vhosts they have permissions in) or ``administrator``;
operator policies are written only by administrators and listed to anyone who can
see the vhost.  A policy is checked as a whole before anything changes
(:func:`broker.policies.parse_policy`); a refusal is a 400 with RabbitMQ's text,
which names the field or key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..policies import PolicyError, parse_policy
from .http import Ctx, HTTPError, Router, bad_request, not_found
from .views import apply_query

routes = Router()


def _require_policymaker(ctx: Ctx, vhost: str | None = None) -> None:
    """Administrators, or policymakers with permissions in ``vhost`` (RabbitMQ's is_authorized_policies)."""
    if ctx.is_admin:
        return
    if "policymaker" in ctx.tags and (vhost is None or ctx.broker.users.permission(ctx.username, vhost) is not None):
        return
    raise HTTPError(403, "not_authorized", "User not authorised to access object")


def _listing(ctx: Ctx, operator: bool, vhosts: list[Any]) -> Any:
    items = sorted((p.as_json() for vh in vhosts for p in vh.policies.set_of(operator)),
                   key=lambda p: (p["vhost"], p["name"]))
    return apply_query(items, ctx.query, default_sort="priority")  # RabbitMQ's default sort


def _one(ctx: Ctx, operator: bool) -> Any:
    vh = ctx.vhost()
    p = vh.policies.set_of(operator).get(ctx.params["name"])
    if p is None:
        raise not_found()
    return p.as_json()


async def _put(ctx: Ctx, operator: bool) -> Any:
    vh = ctx.vhost()
    body = await ctx.body()
    missing = [k for k in ("pattern", "definition") if k not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")
    try:
        policy = parse_policy(vh.name, ctx.params["name"], body, operator)
        created = vh.store_policy(policy, operator)
    except PolicyError as exc:
        raise bad_request(str(exc)) from None
    await ctx.commit()
    await _apply(vh, operator)
    return (201, None) if created else None


async def _apply(vh: Any, operator: bool) -> None:
    """Apply the changed set to the vhost's queues and exchanges, letting the loop run between steps."""
    for _ in vh.reapply_policies(operator):
        await asyncio.sleep(0)


async def _delete(ctx: Ctx, operator: bool) -> Any:
    vh = ctx.vhost()
    if not vh.forget_policy(ctx.params["name"], operator):
        raise not_found()
    await ctx.commit()
    await _apply(vh, operator)
    return None


# -- policies ----------------------------------------------------------------------------

@routes.route("api/policies")
async def policies(ctx: Ctx) -> Any:
    _require_policymaker(ctx)
    visible = [vh for vh in ctx.visible_vhosts()
               if ctx.is_admin or ctx.broker.users.permission(ctx.username, vh.name) is not None]
    return _listing(ctx, False, visible)


@routes.route("api/policies/:vhost")
async def vhost_policies(ctx: Ctx) -> Any:
    _require_policymaker(ctx, ctx.params["vhost"])
    return _listing(ctx, False, [ctx.vhost()])


@routes.route("api/policies/:vhost/:name")
async def get_policy(ctx: Ctx) -> Any:
    _require_policymaker(ctx, ctx.params["vhost"])
    return _one(ctx, False)


@routes.route("api/policies/:vhost/:name", "PUT")
async def put_policy(ctx: Ctx) -> Any:
    _require_policymaker(ctx, ctx.params["vhost"])
    return await _put(ctx, False)


@routes.route("api/policies/:vhost/:name", "DELETE")
async def delete_policy(ctx: Ctx) -> Any:
    _require_policymaker(ctx, ctx.params["vhost"])
    return await _delete(ctx, False)


# -- operator policies -------------------------------------------------------------------

@routes.route("api/operator-policies")
async def operator_policies(ctx: Ctx) -> Any:
    return _listing(ctx, True, ctx.visible_vhosts())


@routes.route("api/operator-policies/:vhost")
async def vhost_operator_policies(ctx: Ctx) -> Any:
    return _listing(ctx, True, [ctx.vhost()])


@routes.route("api/operator-policies/:vhost/:name")
async def get_operator_policy(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _one(ctx, True)


@routes.route("api/operator-policies/:vhost/:name", "PUT")
async def put_operator_policy(ctx: Ctx) -> Any:
    ctx.require_admin()
    return await _put(ctx, True)


@routes.route("api/operator-policies/:vhost/:name", "DELETE")
async def delete_operator_policy(ctx: Ctx) -> Any:
    ctx.require_admin()
    return await _delete(ctx, True)
