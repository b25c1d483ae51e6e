"""``GET /api/where/{message_id}`` (optional ``?vhost=V``): the queues that hold a persistent
message with that ``message_id`` property in their log, and what became of each copy (ready,
delivered and unacked by whom, acked, expired, rejected, dead-lettered with its x-death).
See :mod:`broker.where`.  A user who is not a monitor sees the vhosts they have access to.
"""

from __future__ import annotations

from typing import Any

from ..where import where
from .http import Ctx, Router, not_found

routes = Router()


@routes.route("api/where/:message_id")
async def get_where(ctx: Ctx) -> Any:
    message_id = ctx.params["message_id"]  # the router bounds path names (UTF-8, 255 bytes)
    vhost = ctx.query.get("vhost")
    vhosts = [ctx.vhost(vhost)] if vhost is not None else ctx.visible_vhosts()
    found = await where(message_id, vhosts, list(ctx.broker.open_connections), ctx.broker.store)
    if not found["copies"]:
        scope = f"vhost '{vhost}'" if vhost is not None else "any vhost"
        raise not_found(f"no message with id '{message_id}' in the log of a durable queue in {scope}")
    return found
