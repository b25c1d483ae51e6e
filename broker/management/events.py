"""Live updates: ``GET /api/events``, a server-sent events stream of API answers that changed.

Theory of operation
-------------------
A client (the web UI, or ``curl -N``) names up to ``MAX_WATCHES`` GET paths of this
API (``watch=/api/overview&watch=/api/queues/%2F?page=1&page_size=50``) and an
``interval`` in seconds.  Every interval the stream runs each watched path's
handler as the logged-in user, exactly as a request for it would (same
permission checks, same JSON), and sends an ``update`` event only for the
answers that differ from the last one sent::

    event: update
    data: {"watch": "/api/overview", "status": 200, "body": {...}}

So a page that nothing changes on costs the client nothing, and the stream
replaces polling without any private endpoint: it only re-reads public ones.
A ``: keep-alive`` comment goes out when a minute passed with no event.

The stream ends (``event: end`` with the reason) when the user is deleted or
its password or tags change, and when the listener stops.  At most
``MAX_STREAMS`` streams are open at once per listener (``503`` beyond).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from typing import Any

from aiohttp import web
from multidict import MultiDict

from protocol.errors import AMQPError

from ..logsafe import printable
from .http import Ctx, Handler, HTTPError, Router, bad_request, from_channel_error, jsonable

log = logging.getLogger("broker.management")

routes = Router()

MAX_STREAMS = 64
MAX_WATCHES = 8
MAX_WATCH_BYTES = 2048
MIN_INTERVAL, MAX_INTERVAL, DEFAULT_INTERVAL = 1.0, 120.0, 5.0
KEEPALIVE_SECONDS = 60.0


class EventStreams:
    """The open event streams of one listener: their count and their stop signals."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self.stops: set[asyncio.Event] = set()

    def open(self) -> asyncio.Event:
        if len(self.stops) >= self.limit:
            raise HTTPError(503, "service_unavailable",
                            f"too many event streams open ({self.limit}); close one or poll the API instead")
        stop = asyncio.Event()
        self.stops.add(stop)
        return stop

    def closed(self, stop: asyncio.Event) -> None:
        self.stops.discard(stop)

    def close_all(self) -> None:
        for stop in self.stops:
            stop.set()


class Watch:
    """One watched path: its handler, its parameters, its query, and what was sent last."""

    def __init__(self, path: str, handler: Handler | None, params: dict, query: MultiDict) -> None:
        self.path = path
        self.handler = handler
        self.params = params
        self.query = query
        self.last: str | None = None


def _interval(ctx: Ctx) -> float:
    raw = ctx.query.get("interval", str(DEFAULT_INTERVAL))
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not MIN_INTERVAL <= v <= MAX_INTERVAL:
        raise bad_request(f"'interval' must be a number of seconds from {MIN_INTERVAL:g} to {MAX_INTERVAL:g}")
    return v


def _watches(ctx: Ctx) -> list[Watch]:
    paths = ctx.query.getall("watch", [])
    if not paths:
        raise bad_request("'watch' is missing: give one or more GET paths of this API, e.g. watch=/api/overview")
    if len(paths) > MAX_WATCHES:
        raise bad_request(f"'watch' is given {len(paths)} times; at most {MAX_WATCHES} paths per stream")
    out = []
    for path in paths:
        if len(path.encode("utf-8", "surrogatepass")) > MAX_WATCH_BYTES:
            raise bad_request(f"'watch' path longer than {MAX_WATCH_BYTES} bytes")
        raw_path, _, qs = path.partition("?")
        if not raw_path.startswith("/api/"):
            raise bad_request(f"'watch' {printable(path)!r} is not a path of this API (/api/...)")
        # a path this broker does not have is watched too: it answers 404 until an upgrade adds it
        handler, params = ctx.server.resolve(raw_path, "GET") or (None, {})
        if handler is events:
            raise bad_request("'watch' cannot name the event stream itself")
        query: MultiDict = MultiDict(urllib.parse.parse_qsl(qs, keep_blank_values=True))
        out.append(Watch(path, handler, params, query))
    return out


async def _answer(ctx: Ctx, w: Watch) -> tuple[int, Any]:
    """What a GET of the watched path answers now, as the stream's user."""
    if w.handler is None:
        return 404, {"error": "Object Not Found", "reason": "Not Found"}
    sub = Ctx(ctx.server, ctx.request, w.params, w.query)
    sub.user, sub.tags = ctx.user, ctx.tags
    try:
        out = await w.handler(sub)
    except HTTPError as e:
        return e.status, {"error": e.error, "reason": e.reason}
    except AMQPError as e:
        err = from_channel_error(e)
        return err.status, {"error": err.error, "reason": err.reason}
    except Exception as exc:  # a bug: tell the client, log it, keep the stream
        log.exception("event stream: GET %s failed", printable(w.path))
        return 500, {"error": "internal_error", "reason": str(exc)}
    if isinstance(out, tuple):
        return out[0], out[1]
    return (204, None) if out is None else (200, out)


def _still_valid(ctx: Ctx) -> str | None:
    """Why the stream's login no longer holds, or None."""
    user = ctx.broker.users.users.get(ctx.username)
    if user is None:
        return "the user was deleted"
    if user.password_hash != ctx.user.password_hash or frozenset(user.tags) != ctx.tags:
        return "the user's password or tags changed; log in again"
    return None


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(jsonable(data), separators=(',', ':'))}\n\n".encode()


@routes.route("api/events")
async def events(ctx: Ctx) -> Any:
    interval = _interval(ctx)
    watches = _watches(ctx)
    streams: EventStreams = ctx.server.event_streams
    stop = streams.open()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(ctx.request)
        await resp.write(f"retry: {int(interval * 1000)}\n\n".encode())
        last_sent = time.monotonic()
        while not stop.is_set():
            reason = _still_valid(ctx)
            if reason is not None:
                await resp.write(_event("end", {"reason": reason}))
                break
            for w in watches:
                status, body = await _answer(ctx, w)
                text = json.dumps(jsonable(body), separators=(",", ":"))
                key = f"{status} {text}"
                if key != w.last:
                    w.last = key
                    await resp.write(f'event: update\ndata: {{"watch":{json.dumps(w.path)},"status":{status},'
                                     f'"body":{text}}}\n\n'.encode())
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                await resp.write(b": keep-alive\n\n")
                last_sent = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
        else:
            await resp.write(_event("end", {"reason": "the broker is stopping"}))
    except ConnectionError:
        pass  # the client went away
    finally:
        streams.closed(stop)
    return resp
