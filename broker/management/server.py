"""HTTP plumbing of the management API: aiohttp site, routing, basic auth, errors.

Routing is done here on the raw request path, split at ``/`` *before* each
segment is percent-decoded, so that a vhost named ``/`` (``%2F``) or a
connection name containing slashes is one segment, as RabbitMQ's API expects.
Every name in the path is checked before a handler runs: one that is not
UTF-8 or is over 255 bytes is answered 400 with the name's field in the reason.

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

import asyncio
import base64
import binascii
import json
import logging
import re
import urllib.parse
from typing import Any, Awaitable, Callable

from aiohttp import web

from protocol import errors
from protocol.errors import AMQPError, ChannelError
from protocol.names import NOT_UTF8, name_problem

from ..auth import check_password
from ..metadata import MetadataSaveError
from ..httpguard import HttpLimits, HttpListener
from ..logsafe import printable
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


MAX_JSON_DEPTH = 64


def json_object(raw: bytes | str, what: str) -> dict:
    """Parse ``raw`` as a JSON object, or answer 400 saying what is wrong.

    Nesting is bounded (``MAX_JSON_DEPTH``): a deeper document is refused
    before anything recursive (validation, metadata saving) can see it."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise bad_request(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(f"{what} must be a JSON object")
    if _too_deep(data, MAX_JSON_DEPTH):
        raise bad_request(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def _too_deep(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests objects/arrays deeper than ``limit`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((x, depth + 1) for x in children)
    return False


def body_too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large",
                     f"request body larger than the limit of {limit} bytes (--management-max-body-size)")


async def read_body(request: web.Request, limits: HttpLimits) -> bytes:
    """The request body, if it stays within ``limits.max_body_size`` bytes and arrives
    within ``limits.body_timeout`` seconds.  (A larger Content-Length was refused
    before the handler ran; a chunked body is cut here at the limit.)"""
    limit = limits.max_body_size

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise body_too_large(limit)
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), limits.body_timeout)
    except TimeoutError:
        raise HTTPError(408, "request_timeout", f"request body not received within {limits.body_timeout:g} s "
                        "(--http-body-timeout)") from None


def from_channel_error(e: AMQPError) -> HTTPError:
    if e.code == errors.INTERNAL_ERROR:
        return HTTPError(500, "internal_error", e.text)
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
        raw = await read_body(self.request, self.server.limits)
        if not raw.strip():
            return {}
        return json_object(raw, "the request body")

    def commit(self) -> None:
        """Save the durable metadata this request changed, or answer 500."""
        try:
            self.broker.journal.commit()
        except MetadataSaveError as exc:
            raise HTTPError(
                500, "internal_error", f"{exc}; the change is in effect but may not survive a restart"
            ) from None

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


def error_response(e: HTTPError) -> web.Response:
    resp = json_response({"error": e.error, "reason": e.reason}, e.status, e.headers)
    if e.status in (408, 413):  # its body is left unread: close rather than wait for another request
        resp.force_close()
    return resp


def split_path(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    segs = path.split("/")
    if segs and segs[0] == "":
        segs = segs[1:]
    if segs and segs[-1] == "":
        segs = segs[:-1]
    # bytes that are not UTF-8 stay as surrogate escapes, for check_path_names to refuse
    return [urllib.parse.unquote(s, errors="surrogateescape") for s in segs]


# what a path parameter names, for error reasons; ":name" depends on the collection
_PARAM_FIELDS = {"vhost": "vhost name", "user": "user name", "src": "source exchange name",
                 "dest": "destination name", "node": "node name"}
_COLLECTION_ITEMS = {"queues": "queue", "exchanges": "exchange", "users": "user", "vhosts": "vhost",
                     "connections": "connection", "channels": "channel", "nodes": "node"}


def check_path_names(segments: list[str], params: dict) -> None:
    """400 for a path parameter that cannot be a name (not UTF-8, over 255 bytes).

    The binding properties key (``props``) is the percent-encoded routing key
    plus a hash, so only its encoding is checked, not its length."""
    for key, value in params.items():
        problem = name_problem(value)
        if problem is None or (key == "props" and problem != NOT_UTF8):
            continue
        if key == "name":
            field = _COLLECTION_ITEMS.get(segments[1], "object") + " name"
        else:
            field = _PARAM_FIELDS.get(key, f"'{key}'")
        raise bad_request(f"the {field} in the path {problem}")


class ManagementServer:
    """The management API of one broker, served by aiohttp on the broker's loop."""

    def __init__(self, broker: Any, host: str = "0.0.0.0", port: int = 15672, stats_interval: float | None = None,
                 limits: HttpLimits | None = None):
        from . import api, lost_found  # noqa: F401  (register the routes)

        self.broker = broker
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.stats = Stats(broker, stats_interval)
        self.vhost_meta: dict[str, dict] = {}  # description / tags given with PUT /api/vhosts/NAME
        self.listener: HttpListener | None = None
        # aiohttp's own limit too, for the bodies it reads itself (multipart forms)
        self.app = web.Application(client_max_size=self.limits.max_body_size)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def start(self) -> None:
        runner = web.AppRunner(self.app, handle_signals=False)
        self.listener = HttpListener("management API", runner, self.limits, log)
        try:
            self.port = await self.listener.start(self.host, self.port)
        except BaseException:
            self.listener = None
            raise
        self.stats.start()

    async def stop(self) -> None:
        self.stats.stop()
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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > self.limits.max_body_size:
            raise body_too_large(self.limits.max_body_size)  # before anything else, without reading it
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
        await self.authenticate(ctx)
        check_path_names(segments, params)
        changes = self.broker.journal.changes
        out = await handler(ctx)
        if self.broker.journal.changes != changes:
            ctx.commit()
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

    async def authenticate(self, ctx: Ctx) -> None:
        """Basic auth.  A refused login is answered only after the login throttle's
        delay for its source address (other requests go on meanwhile)."""
        fail = HTTPError(401, "not_authorized", "Login failed", {"WWW-Authenticate": REALM})
        header = ctx.request.headers.get("Authorization", "")
        if not header[:6].lower() == "basic ":
            raise fail  # no credentials at all: nothing was guessed
        remote = ctx.request.remote or ""
        throttle = self.broker.login_throttle
        if throttle.busy(remote):
            throttle.refused_unchecked("http")
            log.warning("management API: login refused unchecked: too many refused logins from %s still pending",
                        remote)
            raise fail
        name, user = _basic_login(header, self.broker.users.users)
        refusal: HTTPError | None = None
        if user is None:
            refusal = fail
        elif name in self.broker.loopback_users and not _is_loopback(remote):
            refusal = HTTPError(401, "not_authorized", "User can only log in via localhost",
                                {"WWW-Authenticate": REALM})
        if refusal is not None:
            delay = throttle.failed(remote, "http")
            log.warning("management API: login refused for %s from %s%s",
                        "malformed credentials" if name is None else f"user '{printable(name)}'", remote,
                        f" (refusal delayed {delay:.1f} s: repeated failures from this address)" if delay else "")
            if delay:
                throttle.hold(remote)
                try:
                    await asyncio.sleep(delay)
                finally:
                    throttle.release(remote)
            raise refusal
        tags = frozenset(user.tags)
        if not tags & MGMT_TAGS:
            raise HTTPError(401, "not_authorized", "Not management user", {"WWW-Authenticate": REALM})
        ctx.user = user
        ctx.tags = tags


def _basic_login(header: str, users: dict[str, Any]) -> tuple[str | None, Any]:
    """(user name, user) of a Basic ``Authorization`` header; the user is None if
    unknown or the password is wrong, the name is None if the header is malformed."""
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None, None
    name, sep, password = raw.partition(":")
    if not sep:
        return None, None
    user = users.get(name)
    if user is None or not user.password_hash or not check_password(password, user.password_hash):
        return name, None
    return name, user


_LOOPBACK = re.compile(r"^(127\.|::1$|::ffff:127\.|localhost$)")


def _is_loopback(host: str) -> bool:
    return bool(_LOOPBACK.match(host))
