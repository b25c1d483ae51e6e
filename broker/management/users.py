"""Users and their permissions."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..auth import Permission
from ..patterns import PatternError
from .http import Ctx, Router, bad_request, field_tags, not_found
from .views import apply_query, perm_json

routes = Router()


def _user_json(u: Any) -> dict:
    return {
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": list(u.tags),
        "limits": dict(u.limits),
    }


@routes.route("api/users")
async def users(ctx: Ctx) -> Any:
    ctx.require_admin()
    return apply_query([_user_json(u) for u in ctx.broker.users.users.values()], ctx.query)


@routes.route("api/users/without-permissions")
async def users_without_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    have = {u for (u, _v) in ctx.broker.users.permissions}
    return [_user_json(u) for u in ctx.broker.users.users.values() if u.name not in have]


@routes.route("api/users/bulk-delete", "POST")
async def users_bulk_delete(ctx: Ctx) -> Any:
    ctx.require_admin()
    body = await ctx.body()
    names = body.get("users")
    if not isinstance(names, list):
        raise bad_request("'users' must be a list of user names")
    for n in names:
        ctx.broker.delete_user(str(n))
    await ctx.commit()
    return None


@routes.route("api/users/:user")
async def get_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _user_json(ctx.path_user())


@routes.route("api/users/:user", "PUT")
async def put_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    name = ctx.params["user"]
    if not name:
        raise bad_request("the user name must not be empty")
    body = await ctx.body()
    store = ctx.broker.users
    existing = store.users.get(name)
    tags = field_tags(body["tags"]) if "tags" in body else (list(existing.tags) if existing else [])
    if "password" in body:
        pw = body["password"]
        if not isinstance(pw, str):
            raise bad_request("'password' must be a string")
        if existing is None:
            store.add_user(name, pw, tags)
        else:
            ctx.broker.change_password(name, pw)
            store.set_tags(name, tags)
    elif "password_hash" in body:
        ph = body["password_hash"]
        algo = body.get("hashing_algorithm", "rabbit_password_hashing_sha256")
        if algo != "rabbit_password_hashing_sha256":
            raise bad_request(f"password hashing algorithm '{algo}' is not supported "
                              "(only rabbit_password_hashing_sha256)")
        if not isinstance(ph, str):
            raise bad_request("'password_hash' must be a string")
        if ph:
            try:
                raw = base64.b64decode(ph, validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("'password_hash' is not valid base64") from None
            if len(raw) != 36:
                raise bad_request("'password_hash' is not a rabbit_password_hashing_sha256 hash "
                                  "(4 bytes of salt and 32 of SHA-256, base64)")
        changed = existing is None or existing.password_hash != ph
        store.add_user_with_hash(name, ph, tags)
        if existing is not None and changed:
            ctx.broker.close_user_connections(name, f"user '{name}' password changed")
    elif existing is None:
        raise bad_request("a new user needs 'password' or 'password_hash'")
    else:
        store.set_tags(name, tags)
    ctx.broker.journal.changed()
    await ctx.commit()
    return (201, None) if existing is None else None


@routes.route("api/users/:user", "DELETE")
async def delete_user(ctx: Ctx) -> Any:
    ctx.require_admin()
    if not ctx.broker.delete_user(ctx.params["user"]):
        raise not_found()
    await ctx.commit()
    return None


@routes.route("api/users/:user/permissions")
async def user_permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    u = ctx.path_user()
    return [perm_json(n, v, p) for (n, v), p in ctx.broker.users.permissions.items() if n == u.name]


@routes.route("api/permissions")
async def permissions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return [perm_json(u, v, p) for (u, v), p in ctx.broker.users.permissions.items()]


@routes.route("api/permissions/:vhost/:user")
async def get_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh, user = ctx.params["vhost"], ctx.params["user"]
    p = ctx.broker.users.permission(user, vh)
    if p is None:
        raise not_found()
    return perm_json(user, vh, p)


@routes.route("api/permissions/:vhost/:user", "PUT")
async def put_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh, user = ctx.grant_target()
    body = await ctx.body()
    vals = {}
    for k in ("configure", "write", "read"):
        v = body.get(k)
        if not isinstance(v, str):
            raise bad_request(f"'{k}' is missing: configure, write and read are regular expressions")
        vals[k] = v
    try:
        perm = Permission(**vals)
    except PatternError as exc:
        raise bad_request(str(exc)) from None
    existed = ctx.broker.users.permission(user, vh) is not None
    ctx.broker.users.set_permissions(user, vh, perm)
    ctx.broker.journal.changed()
    await ctx.commit()
    return None if existed else (201, None)


@routes.route("api/permissions/:vhost/:user", "DELETE")
async def delete_permission(ctx: Ctx) -> Any:
    ctx.require_admin()
    if not ctx.broker.users.clear_permissions(ctx.params["user"], ctx.params["vhost"]):
        raise not_found()
    ctx.broker.journal.changed()
    await ctx.commit()
    return None
