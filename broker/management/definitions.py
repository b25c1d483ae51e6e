"""Definitions: export and import of the broker's (or one vhost's) durable objects, in RabbitMQ's shape."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..definitions import APPLIED_SECTIONS
from .http import Ctx, HTTPError, Router, bad_request, json_object
from .views import RABBITMQ_COMPAT_VERSION

routes = Router()


def _export(ctx: Ctx) -> dict:
    d = ctx.broker.definitions()
    out: dict[str, Any] = {"rabbit_version": RABBITMQ_COMPAT_VERSION, "rabbitmq_version": RABBITMQ_COMPAT_VERSION}
    out.update(d)
    for k in ("topic_permissions", "parameters", "global_parameters", "policies"):
        out.setdefault(k, [])
    return out


async def _import_body(ctx: Ctx) -> dict:
    """The document of an import: a JSON body, or the file of an upload form (the web UI's)."""
    ctype = ctx.request.content_type or ""
    if ctype.startswith("multipart/") or ctype == "application/x-www-form-urlencoded":
        limit = ctx.server.limits.body_timeout
        try:  # within the body timeout, as every other body
            form = await asyncio.wait_for(ctx.request.post(), limit)
        except TimeoutError:
            raise HTTPError(408, "request_timeout", f"request body not received within {limit:g} s "
                            "(--http-body-timeout)") from None
        except (ValueError, web.RequestPayloadError) as exc:  # e.g. no boundary where the header says
            raise bad_request(f"the upload form cannot be read: {' '.join(str(exc).split())}") from None
        f = form.get("file")
        raw = f.file.read() if isinstance(f, web.FileField) else (f or "")
        return json_object(raw, "definitions")
    return await ctx.body()


async def _import(ctx: Ctx, defs: dict, sections: tuple[str, ...] = APPLIED_SECTIONS) -> Any:
    """Apply a definitions document.  204 when all of it was applied; 200 with
    ``{"not_applied": [...]}`` when parts this broker does not support were left
    out; 400 (RabbitMQ's error shape, plus the same list) when an item failed."""
    for key in sections:
        v = defs.get(key)
        if v is not None and not isinstance(v, list):
            raise bad_request(f"'{key}' must be a list")
    report = ctx.broker.apply_definitions(defs, f"HTTP import by user '{ctx.user.name}'", sections)
    await ctx.commit()
    not_applied = [e.as_json() for e in report.not_applied]
    if report.failed:
        reason = "some definitions were not imported: " + "; ".join(str(e) for e in report.failed)
        others = [str(e) for e in report.not_applied if not e.failed]
        if others:
            reason += "; also not applied: " + "; ".join(others)
        return 400, {"error": "bad_request", "reason": reason, "not_applied": not_applied}
    if not_applied:
        return 200, {"not_applied": not_applied}
    return None


@routes.route("api/definitions")
async def get_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return _export(ctx)


@routes.route("api/definitions", "POST")
async def post_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    return await _import(ctx, await _import_body(ctx))


@routes.route("api/definitions/:vhost")
async def get_vhost_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    d = vh.definitions()
    return {"rabbit_version": RABBITMQ_COMPAT_VERSION, "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
            "parameters": [], "policies": [], **d}


@routes.route("api/definitions/:vhost", "POST")
async def post_vhost_definitions(ctx: Ctx) -> Any:
    ctx.require_admin()
    vh = ctx.vhost()
    defs = await _import_body(ctx)
    topology = ("policies", "exchanges", "queues", "bindings")
    for key in topology:
        items = defs.get(key) or []
        if not isinstance(items, list):
            raise bad_request(f"'{key}' must be a list")
        defs[key] = [dict(i, vhost=vh.name) if isinstance(i, dict) else i for i in items]
    return await _import(ctx, defs, topology)
