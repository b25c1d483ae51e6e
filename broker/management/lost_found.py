"""Endpoints for queue data that recovery kept aside in lost+found (administrators only).

- ``GET /api/lost-found``: the entries (id, the vhost and queue they were made
  for, unsettled persistent messages and their bytes, when they were moved);
- ``POST /api/lost-found/{id}/import`` with an optional ``{"vhost": ..., "queue": ...}``
  (default: the queue the data was made for): the messages are published, in
  order, into that queue (declared durable if it does not exist), and once the
  disk has them the entry is removed;
- ``DELETE /api/lost-found/{id}``: discard an entry for good.
"""

from __future__ import annotations

from typing import Any

from storage import lostfound
from storage.store import LogStore

from ..message import Message
from ..queues import PUSH_REJECTED
from .http import Ctx, HTTPError, Router, bad_request, not_found
from .messages import wait_fsync

routes = Router()


def _store(ctx: Ctx) -> LogStore:
    ctx.require_admin()
    store = ctx.broker.store
    if store is None:
        raise HTTPError(404, "not_found", "this broker has no data directory")
    return store


def _entry(ctx: Ctx, store: LogStore) -> lostfound.LostEntry:
    entry = lostfound.find(store.data_dir, ctx.params["id"])
    if entry is None:
        raise not_found(f"no lost+found entry '{ctx.params['id']}'")
    return entry


@routes.route("api/lost-found")
async def list_entries(ctx: Ctx) -> Any:
    return [e.as_json() for e in lostfound.entries(_store(ctx).data_dir)]


@routes.route("api/lost-found/:id", "GET")
async def get_entry(ctx: Ctx) -> Any:
    return _entry(ctx, _store(ctx)).as_json()


@routes.route("api/lost-found/:id", "DELETE")
async def delete_entry(ctx: Ctx) -> Any:
    lostfound.discard(_entry(ctx, _store(ctx)))
    return None


@routes.route("api/lost-found/:id/import", "POST")
async def import_entry(ctx: Ctx) -> Any:
    store = _store(ctx)
    entry = _entry(ctx, store)
    body = await ctx.body()
    vhost = body.get("vhost", entry.vhost)
    queue = body.get("queue", entry.queue)
    if not isinstance(vhost, str) or not isinstance(queue, str) or not queue:
        raise bad_request("this entry does not say which queue it was made for: give 'vhost' and 'queue'")
    vh = ctx.vhost_for_write(vhost)
    q = vh.queues.get(queue)
    created = False
    if q is None:
        ctx.check(vh, "configure", "queue", queue)
        q, created = vh.declare_queue(queue, True, False, False, {}, None)
    ctx.check(vh, "write", "queue", queue)
    if not q.durable or q.log is None:
        raise bad_request(f"{vh.what('queue', queue)} is not durable: lost messages go back into durable queues")
    imported = refused = 0
    for persistent, deadline, ex_raw, rk_raw, header, data in lostfound.read_live_records(entry.path):
        exchange = ex_raw[1:].decode("utf-8", "replace")
        routing_key = rk_raw[1:].decode("utf-8", "replace")
        msg = Message(exchange, routing_key, ex_raw, rk_raw, header, data)
        msg.exp_deadline = msg.deadline = deadline
        if q.push(msg, persistent) == PUSH_REJECTED:
            refused += 1
        else:
            imported += 1
    if imported:
        await wait_fsync(ctx)
    if not refused:
        lostfound.discard(entry)
    return {
        "vhost": vh.name,
        "queue": q.name,
        "queue_created": created,
        "imported": imported,
        "refused": refused,
        "entry_removed": not refused,
    }
