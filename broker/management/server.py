"""The management API's listener: the aiohttp site, and the dispatch of each request to its endpoint.

A request goes: body size limit (Content-Length) -> path split and matched
against the routes of every endpoint module (404 / 405) -> Basic auth
(:mod:`.login`) -> path names checked -> the handler -> the durable metadata
it changed saved -> the answer.  Errors become RabbitMQ's
``{"error": ..., "reason": ...}``; an unexpected exception is a logged 500,
never the broker's end.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from aiohttp import web

from protocol.errors import AMQPError

from ..httpguard import HttpLimits, HttpListener
from ..logsafe import printable
from .bindings import routes as binding_routes
from .certificates import routes as certificate_routes
from .connections import routes as connection_routes
from .definitions import routes as definition_routes
from .events import EventStreams
from .events import routes as event_routes
from .exchanges import routes as exchange_routes
from .health import routes as health_routes
from .http import (
    Ctx,
    Handler,
    HTTPError,
    Router,
    body_too_large,
    check_path_names,
    error_response,
    from_channel_error,
    json_response,
    not_found,
    split_path,
)
from .limits import routes as limit_routes
from .login import authenticate
from .lost_found import routes as lost_found_routes
from .overview import routes as overview_routes
from .policies import routes as policy_routes
from .queues import routes as queue_routes
from .static import UiFiles
from .stats import Stats
from .topic_permissions import routes as topic_permission_routes
from .users import routes as user_routes
from .vhosts import routes as vhost_routes
from .where import routes as where_routes

log = logging.getLogger("broker.management")

# every endpoint, in the order patterns are tried (the first that matches a path wins)
ROUTES = Router()
for _routes in (
    overview_routes,
    health_routes,
    connection_routes,
    exchange_routes,
    queue_routes,
    binding_routes,
    vhost_routes,
    user_routes,
    definition_routes,
    lost_found_routes,
    event_routes,
    where_routes,
    certificate_routes,
    policy_routes,
    limit_routes,
    topic_permission_routes,
):
    ROUTES.include(_routes)


class ManagementServer:
    """The management API of one broker, served by aiohttp on the broker's loop."""

    def __init__(self, broker: Any, host: str = "0.0.0.0", port: int = 15672, stats_interval: float | None = None,
                 limits: HttpLimits | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.broker = broker
        self.ssl_context = ssl_context  # HTTPS when given
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.stats = Stats(broker, stats_interval)
        self.vhost_meta: dict[str, dict] = {}  # description / tags given with PUT /api/vhosts/NAME
        self.listener: HttpListener | None = None
        self.ui = UiFiles()
        self.event_streams = EventStreams()
        # aiohttp's own limit too, for the bodies it reads itself (multipart forms)
        self.app = web.Application(client_max_size=self.limits.max_body_size)
        # every path, a percent-encoded newline in it too (".*" would stop there)
        self.app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``host:port``, or serve ``sock`` when given (a socket bound and listening)."""
        runner = web.AppRunner(self.app, handle_signals=False)
        self.listener = HttpListener("management API", runner, self.limits, log)
        try:
            self.port = await self.listener.start(self.host, self.port, self.ssl_context, sock)
        except BaseException:
            self.listener = None
            raise
        self.stats.start()

    async def stop(self) -> None:
        self.stats.stop()
        self.event_streams.close_all()
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    # -- request handling --------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except HTTPError as e:
            return error_response(e)
        except AMQPError as e:
            return error_response(from_channel_error(e))
        except web.HTTPRequestEntityTooLarge:  # aiohttp's own reading (multipart forms)
            return error_response(body_too_large(self.limits.max_body_size))
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug: answer 500 and log it, never take the broker down
            log.exception("management API: %s %s failed", printable(request.method), printable(request.path))
            return json_response({"error": "internal_error", "reason": str(exc)}, 500)

    def resolve(self, raw_path: str, method: str) -> tuple[Handler, dict] | None:
        """The handler and path parameters of an API path (400 for a bad name in it), or None."""
        segments = split_path(raw_path)
        m = ROUTES.match(segments) if segments and segments[0] == "api" else None
        if m is None or method not in m[0]:
            return None
        check_path_names(segments, m[1])
        return m[0][method], m[1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > self.limits.max_body_size:
            raise body_too_large(self.limits.max_body_size)  # before anything else, without reading it
        segments = split_path(request.raw_path)
        if not segments or segments[0] != "api":
            return self.ui.answer(request)  # the web UI's files
        m = ROUTES.match(segments)
        if m is None:
            raise not_found()
        table, params = m
        method = request.method.upper()
        handler = table.get(method)
        if handler is None and method == "HEAD":
            handler = table.get("GET")
        if handler is None:
            allowed = ", ".join(sorted(table))
            raise HTTPError(405, "method_not_allowed", f"{method} is not allowed here (allowed: {allowed})",
                            {"Allow": allowed})
        ctx = Ctx(self, request, params)
        await authenticate(ctx)
        check_path_names(segments, params)
        changes = self.broker.journal.changes
        out = await handler(ctx)
        if self.broker.journal.changes != changes:
            await ctx.commit()
        if out is None:
            return web.Response(status=204)
        if isinstance(out, web.StreamResponse):
            return out
        if isinstance(out, tuple):
            status, body, *rest = out
            headers = rest[0] if rest else None
            if body is None:
                return web.Response(status=status, headers=headers)
            return json_response(body, status, headers)
        return json_response(out)
