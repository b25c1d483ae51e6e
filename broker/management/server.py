"""HTTP plumbing of the management API: aiohttp site, routing, basic auth, errors.

Routing is done here on the raw request path, split at ``/`` *before* each
segment is percent-decoded, so that a vhost named ``/`` (``%2F``) or a
connection name containing slashes is one segment, as RabbitMQ's API expects.

Who may do what (RabbitMQ's user tags):

- no valid credentials: 401 ``Login failed``; a user without a management tag
  (``management``, ``policymaker``, ``monitoring``, ``administrator``): 401
  ``Not management user``;
- ``administrator``: everything;
- ``monitoring``: reads everything (all vhosts, all connections);
- ``management`` / ``policymaker``: reads the vhosts it has permissions on and
  its own connections; changes objects there as its configure/write/read
  regexes allow (as over AMQP);
- anything reserved to another tag: 403 ``Not administrator user`` /
  ``Not monitor user``; a vhost the user has no permissions on: 403
  ``Access refused.``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from typing import Any, Awaitable, Callable

from aiohttp import web

from protocol import errors
from protocol.errors import ChannelError

from ..auth import check_password
from .stats import Stats
from .views import jsonable

log = logging.getLogger("broker.management")

MGMT_TAGS = frozenset(("management", "policymaker", "monitoring", "administrator"))
REALM = 'Basic realm="RabbitMQ Management"'


class HTTPError(Exception):
    """An error answer: status and RabbitMQ's ``{"error": ..., "reason": ...}``."""

    def __init__(self, status: int, error: str, reason: str, headers: dict | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


def not_found(reason: str = "Not Found") -> HTTPError:
    return HTTPError(404, "Object Not Found", reason)


def bad_request(reason: str) -> HTTPError:
    return HTTPError(400, "bad_request", reason)


def json_object(raw: bytes | str, what: str) -> dict:
    """Parse ``raw`` as a JSON object, or answer 400 saying what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(f"{what} must be a JSON object")
    return data


def from_channel_error(e: ChannelError) -> HTTPError:
    if e.code == errors.NOT_FOUND:
        return HTTPError(404, "not_found", e.text)
    if e.code == errors.ACCESS_REFUSED:
        return HTTPError(403, "access_refused", e.text)
    return HTTPError(400, "bad_request", e.text)


class Ctx:
    """One request: who asks, the path's parameters, the query, the body."""

    def __init__(self, server: "ManagementServer", request: web.Request, params: dict) -> None:
        self.server = server
        self.broker = server.broker
        self.stats = server.stats
        self.request = request
        self.params = params
        self.query = request.query
        self.user: Any = None
        self.tags: frozenset = frozenset()

    # -- who -----------------------------------------------------------------------
    @property
    def username(self) -> str:
        return self.user.name

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags

    @property
    def is_monitor(self) -> bool:
        return "administrator" in self.tags or "monitoring" in self.tags

    def require_admin(self) -> None:
        if not self.is_admin:
            raise HTTPError(403, "not_authorized", "Not administrator user")

    def require_monitor(self) -> None:
        if not self.is_monitor:
            raise HTTPError(403, "not_authorized", "Not monitor user")

    def can_see_vhost(self, name: str) -> bool:
        return self.is_monitor or self.broker.users.permission(self.username, name) is not None

    def visible_vhosts(self) -> list[Any]:
        return [vh for n, vh in self.broker.vhosts.items() if self.can_see_vhost(n)]

    def vhost(self, name: str | None = None) -> Any:
        """The vhost of the path (404 if missing, 403 if the user has no access)."""
        name = self.params["vhost"] if name is None else name
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise not_found()
        if not self.can_see_vhost(name):
            raise HTTPError(403, "not_authorized", "Access refused.")
        return vh

    def vhost_for_write(self, name: str | None = None) -> Any:
        """Changing objects in a vhost needs permissions there (administrators need none)."""
        vh = self.vhost(name)
        if not self.is_admin and self.broker.users.permission(self.username, vh.name) is None:
            raise HTTPError(403, "not_authorized", "Access refused.")
        return vh

    def check(self, vh: Any, what: str, kind: str, name: str) -> None:
        """RabbitMQ's configure/write/read check, as on an AMQP channel."""
        if self.is_admin:
            return
        if not self.broker.users.allowed(self.username, vh.name, what, name):
            raise ChannelError(
                errors.ACCESS_REFUSED, f"access to {vh.what(kind, name)} refused for user '{self.username}'"
            )

    # -- input ---------------------------------------------------------------------
    async def body(self) -> dict:
        raw = await self.request.read()
        if not raw.strip():
            return {}
        return json_object(raw, "the request body")

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1", "yes")


Handler = Callable[[Ctx], Awaitable[Any]]


class Router:
    """Path patterns like ``api/queues/:vhost/:name/get`` -> {method: handler}."""

    def __init__(self) -> None:
        self.routes: list[tuple[tuple[str, ...], dict[str, Handler]]] = []

    def add(self, pattern: str, methods: str, handler: Handler) -> None:
        parts = tuple(pattern.strip("/").split("/"))
        for pat, table in self.routes:
            if pat == parts:
                break
        else:
            table = {}
            self.routes.append((parts, table))
        for m in methods.split(","):
            table[m.strip().upper()] = handler

    def route(self, pattern: str, methods: str = "GET") -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(pattern, methods, fn)
            return fn

        return deco

    def match(self, segments: list[str]) -> tuple[dict[str, Handler], dict] | None:
        n = len(segments)
        for pat, table in self.routes:
            if len(pat) != n:
                continue
            params = {}
            for p, s in zip(pat, segments):
                if p[0] == ":":
                    params[p[1:]] = s
                elif p != s:
                    break
            else:
                return table, params
        return None


router = Router()


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    text = json.dumps(jsonable(data), separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def split_path(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    segs = path.split("/")
    if segs and segs[0] == "":
        segs = segs[1:]
    if segs and segs[-1] == "":
        segs = segs[:-1]
    return [urllib.parse.unquote(s) for s in segs]


class ManagementServer:
    """The management API of one broker, served by aiohttp on the broker's loop."""

    def __init__(self, broker: Any, host: str = "0.0.0.0", port: int = 15672, stats_interval: float | None = None):
        from . import api  # noqa: F401  (registers the routes)

        self.broker = broker
        self.host = host
        self.port = port
        self.stats = Stats(broker, stats_interval)
        self.vhost_meta: dict[str, dict] = {}  # description / tags given with PUT /api/vhosts/NAME
        self.runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True, backlog=128)
        try:
            await site.start()
        except BaseException:
            await self.runner.cleanup()
            self.runner = None
            raise
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self.stats.start()

    async def stop(self) -> None:
        self.stats.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- request handling --------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except HTTPError as e:
            return json_response({"error": e.error, "reason": e.reason}, e.status, e.headers)
        except ChannelError as e:
            h = from_channel_error(e)
            return json_response({"error": h.error, "reason": h.reason}, h.status)
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug: answer 500 and log it, never take the broker down
            log.exception("management API: %s %s failed", request.method, request.path)
            return json_response({"error": "internal_error", "reason": str(exc)}, 500)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        segments = split_path(request.raw_path)
        if not segments or segments[0] != "api":
            if not segments:
                return web.Response(
                    text="BurrowMQ management API: see /api/overview\n", content_type="text/plain"
                )
            raise not_found()
        m = router.match(segments)
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
        self.authenticate(ctx)
        out = await handler(ctx)
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

    def authenticate(self, ctx: Ctx) -> None:
        fail = HTTPError(401, "not_authorized", "Login failed", {"WWW-Authenticate": REALM})
        header = ctx.request.headers.get("Authorization", "")
        if not header[:6].lower() == "basic ":
            raise fail
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise fail from None
        name, sep, password = raw.partition(":")
        if not sep:
            raise fail
        user = self.broker.users.users.get(name)
        if user is None or not user.password_hash or not check_password(password, user.password_hash):
            log.warning("management API: login refused for user '%s' from %s", name, ctx.request.remote)
            raise fail
        if name in self.broker.loopback_users and not _is_loopback(ctx.request.remote or ""):
            raise HTTPError(401, "not_authorized", "User can only log in via localhost",
                            {"WWW-Authenticate": REALM})
        tags = frozenset(user.tags)
        if not tags & MGMT_TAGS:
            raise HTTPError(401, "not_authorized", "Not management user", {"WWW-Authenticate": REALM})
        ctx.user = user
        ctx.tags = tags


_LOOPBACK = re.compile(r"^(127\.|::1$|::ffff:127\.|localhost$)")


def _is_loopback(host: str) -> bool:
    return bool(_LOOPBACK.match(host))
