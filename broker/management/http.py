"""Request plumbing every management endpoint uses: errors, the request context, routing, JSON answers.

This module imports no endpoint module and no listener: the endpoint modules
(``overview``, ``queues``, ...) import it, and :mod:`.server` imports them.

Routing is done on the raw request path, split at ``/`` *before* each segment
is percent-decoded, so that a vhost named ``/`` (``%2F``) or a connection name
containing slashes is one segment, as RabbitMQ's API expects.  Each endpoint
module keeps its own :class:`Router`; the listener chains them in one order
(the first pattern that matches a path wins).  Every name in the path is
checked before a handler runs: one that is not UTF-8 or is over 255 bytes is
answered 400 with the name's field in the reason.

A handler returns ``None`` (204), a JSON value (200), ``(status, body)`` or
``(status, body, headers)`` (``body`` None: no body), or an aiohttp response.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import json
import math
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from protocol import errors
from protocol.errors import AMQPError, ChannelError
from protocol.names import NOT_UTF8, name_problem

from ..httpguard import HttpLimits
from ..logsafe import printable
from ..metadata import MetadataSaveError
from .stats import Stats


class HTTPError(Exception):
    """An error answer: status and RabbitMQ's ``{"error": ..., "reason": ...}``."""

    def __init__(self, status: int, error: str, reason: str, headers: dict | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


def not_found(reason: str = "Not Found") -> HTTPError:
    """404 in RabbitMQ's words."""
    return HTTPError(404, "Object Not Found", reason)


def bad_request(reason: str) -> HTTPError:
    """400 with ``reason`` telling the client what to send instead."""
    return HTTPError(400, "bad_request", reason)


def body_too_large(limit: int) -> HTTPError:
    """413 naming the limit and the option that sets it."""
    return HTTPError(413, "payload_too_large",
                     f"request body larger than the limit of {limit} bytes (--management-max-body-size)")


def from_channel_error(e: AMQPError) -> HTTPError:
    """The HTTP answer for an error the engine raised as it would on an AMQP channel."""
    if e.code == errors.INTERNAL_ERROR:
        return HTTPError(500, "internal_error", e.text)
    if e.code == errors.NOT_FOUND:
        return HTTPError(404, "not_found", e.text)
    if e.code == errors.ACCESS_REFUSED:
        return HTTPError(403, "access_refused", e.text)
    return HTTPError(400, "bad_request", e.text)


# -- request bodies ----------------------------------------------------------------------

MAX_JSON_DEPTH = 64


def json_object(raw: bytes | bytearray | str, what: str) -> dict:
    """Parse ``raw`` as a JSON object, or answer 400 saying what is wrong.

    Nesting is bounded (``MAX_JSON_DEPTH``): a deeper document is refused
    before anything recursive (validation, metadata saving) can see it."""
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise bad_request(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(f"{what} must be a JSON object")
    if _too_deep(data, MAX_JSON_DEPTH):
        raise bad_request(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if b"\\ud" in (raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)).lower():
        for key, value in data.items():  # a \\uD800 escape: a string no file or client can hold
            if _lone_surrogate(key) or _lone_surrogate(value):
                raise bad_request(f"'{printable(key)}' holds a string that is not valid UTF-8 (a lone surrogate)")
    return data


def _lone_surrogate(value: Any) -> bool:
    """Whether JSON ``value`` holds a string (key or value) that cannot be UTF-8 (no recursion)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _not_json(word: str) -> Any:
    """Python's parser takes NaN and Infinity; JSON (and RabbitMQ) does not."""
    raise ValueError(f"{word} is not a JSON value")


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
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body is not in
        why = getattr(exc.__cause__, "message", None) or " ".join(str(exc).split())
        raise bad_request(f"the request body cannot be read: {why}") from None
    except TimeoutError:
        raise HTTPError(408, "request_timeout", f"request body not received within {limits.body_timeout:g} s "
                        "(--http-body-timeout)") from None


def field_bool(body: dict, key: str, default: bool) -> bool:
    """A boolean field of a request body (``true``/``false`` as JSON or as text)."""
    v = body.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v is None:
        return default
    raise bad_request(f"'{key}' must be true or false, not {v!r}")


def field_arguments(body: dict, key: str = "arguments") -> dict:
    """An AMQP arguments table given as a JSON object (absent: empty)."""
    v = body.get(key) or {}
    if not isinstance(v, dict):
        raise bad_request(f"'{key}' must be a JSON object")
    return v


def field_tags(v: Any) -> list[str]:
    """Tags given as ``"a,b"`` or ``["a", "b"]``."""
    if v is None:
        return []
    if isinstance(v, str):
        return [t for t in (x.strip() for x in v.split(",")) if t]
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
        return [t.strip() for t in v if t.strip()]
    raise bad_request("'tags' must be a comma-separated string or a list of strings")


# -- the request context -----------------------------------------------------------------

class ApiHost(Protocol):
    """What a request needs of the listener serving it (:class:`.server.ManagementServer`)."""

    broker: Any
    stats: Stats
    limits: HttpLimits
    host: str
    port: int
    ssl_context: Any  # an ssl.SSLContext when the API is served over HTTPS
    vhost_meta: dict[str, dict]  # description / tags given with PUT /api/vhosts/NAME
    event_streams: Any  # the open live-update streams (.events.EventStreams)

    def resolve(self, raw_path: str, method: str) -> tuple[Handler, dict] | None:
        """The handler and path parameters of an API path (400 for a bad name in it), or None."""
        ...


class Ctx:
    """One request: who asks, the path's parameters, the query, the body."""

    def __init__(self, server: ApiHost, request: web.Request, params: dict, query: Any = None) -> None:
        self.server = server
        self.broker = server.broker
        self.stats = server.stats
        self.request = request
        self.params = params
        self.query = request.query if query is None else query  # another query: a watched path (events)
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

    def path_user(self) -> Any:
        """The user named in the path (404 if there is none)."""
        u = self.broker.users.users.get(self.params["user"])
        if u is None:
            raise not_found()
        return u

    def grant_target(self) -> tuple[str, str]:
        """The vhost and user named in a permission path; both must exist (400, as RabbitMQ)."""
        vh, user = self.params["vhost"], self.params["user"]
        if vh not in self.broker.vhosts:
            raise bad_request(f"vhost '{vh}' does not exist")
        if user not in self.broker.users.users:
            raise bad_request(f"user '{user}' does not exist")
        return vh, user

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
        """The request body as a JSON object (an empty body: ``{}``)."""
        raw = await read_body(self.request, self.server.limits)
        if not raw.strip():
            return {}
        return json_object(raw, "the request body")

    async def commit(self) -> None:
        """Wait for the durable metadata this request changed to be saved, or answer 500."""
        try:
            await self.broker.journal.wait_saved()
        except MetadataSaveError as exc:
            raise HTTPError(
                500, "internal_error", f"{exc}; the change is in effect but may not survive a restart"
            ) from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1", "yes")


# -- routing -----------------------------------------------------------------------------

Handler = Callable[[Ctx], Awaitable[Any]]


class Router:
    """Path patterns like ``api/queues/:vhost/:name/get`` -> {method: handler}, matched in order."""

    def __init__(self) -> None:
        self.routes: list[tuple[tuple[str, ...], dict[str, Handler]]] = []

    def add(self, pattern: str, methods: str, handler: Handler) -> None:
        parts = tuple(pattern.strip("/").split("/"))
        table = next((t for pat, t in self.routes if pat == parts), None)
        if table is None:
            table = {}
            self.routes.append((parts, table))
        for m in methods.split(","):
            table[m.strip().upper()] = handler

    def route(self, pattern: str, methods: str = "GET") -> Callable[[Handler], Handler]:
        """Decorator: ``@routes.route("api/queues/:vhost", "GET")``."""
        def deco(fn: Handler) -> Handler:
            self.add(pattern, methods, fn)
            return fn

        return deco

    def include(self, other: "Router") -> None:
        """Append ``other``'s routes after this one's, in their order."""
        for pat, table in other.routes:
            for method, handler in table.items():
                self.add("/".join(pat), method, handler)

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


def split_path(raw_path: str) -> list[str]:
    """The path's segments, each percent-decoded on its own."""
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
                     "connections": "connection", "channels": "channel", "nodes": "node",
                     "policies": "policy", "operator-policies": "operator policy", "vhost-limits": "limit",
                     "user-limits": "limit"}


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


# -- answers -----------------------------------------------------------------------------

def jsonable(v: Any) -> Any:
    """Plain JSON values (AMQP tables may hold bytes, decimals, timestamps)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(b).decode("ascii")
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, datetime.datetime):
        return int(v.timestamp())
    return str(v)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    text = json.dumps(jsonable(data), separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def error_response(e: HTTPError) -> web.Response:
    resp = json_response({"error": e.error, "reason": e.reason}, e.status, e.headers)
    if e.status in (408, 413):  # its body is left unread: close rather than wait for another request
        resp.force_close()
    return resp
