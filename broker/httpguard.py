"""Limits of the broker's HTTP listeners (management API, Prometheus metrics).

Theory of operation
-------------------
aiohttp parses the requests; this module bounds what one peer can hold on to.
:class:`HttpListener` serves an aiohttp runner with a protocol of its own,
:class:`GuardedRequestHandler` (aiohttp's ``RequestHandler`` plus a timer), so:

- **connections**: each listener counts its open connections; one over the cap
  is answered ``503`` and closed at once, so that HTTP peers can never use up
  the broker's file descriptors (AMQP clients keep connecting).  Refusals are
  logged at most once a minute, with a count.
- **request head**: from the moment a connection opens, or from the first byte
  of a later request on it, the request line and headers must be complete
  within ``header_timeout``, else ``408`` and close.  aiohttp has no such timer:
  a peer sending one header line every few seconds was held for ever.
- **body**: the application reads bodies with its own size and time limits
  (``max_body_size``, ``body_timeout``: see ``broker.management.http``); a
  body left unread is discarded by aiohttp for at most its lingering time.
- **between requests**: aiohttp's keep-alive timer closes a connection idle for
  ``keepalive_timeout``.

A connection is, in turn: *head* (the head timer runs), *busy* (a request is
being handled: no timer here, the handler bounds its own reads), perhaps
*discarding* (aiohttp reads away a body the handler left unread), *idle* (its
answer is sent: aiohttp's keep-alive timer runs; the next byte starts a head).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .logsafe import printable

MiB = 1024 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP peer may take; the defaults are RabbitMQ's where it has one."""

    max_body_size: int = 20 * MiB  # RabbitMQ's management.http.max_body_size
    max_connections: int = 1024  # per listener
    header_timeout: float = 10.0  # request line + headers, in seconds
    body_timeout: float = 60.0  # the whole body, in seconds
    keepalive_timeout: float = 60.0  # idle between two requests, in seconds


def _canned(status: str, error: str, reason: str) -> bytes:
    """A complete ``Connection: close`` answer in RabbitMQ's error shape."""
    body = json.dumps({"error": error, "reason": reason}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class RateLimitedLog:
    """One warning per ``interval`` seconds at most for a repeated event, with the
    number of occurrences since the last line (an attacker cannot flood the log)."""

    def __init__(self, log: logging.Logger, interval: float = 60.0) -> None:
        self.log = log
        self.interval = interval
        self._last = -interval
        self._since = 0

    def event(self, msg: str, *args: Any) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self.log.warning(msg + " [%d time(s) since the last such line]", *args, self._since)
        self._last = now
        self._since = 0


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with the connection cap and the head timer."""

    def __init__(self, listener: HttpListener, server: web.Server, loop: asyncio.AbstractEventLoop) -> None:
        limits = listener.limits
        super().__init__(server, loop=loop, keepalive_timeout=limits.keepalive_timeout,
                         access_log=None)  # type: ignore[arg-type]  # None: no access log
        self._listener = listener
        self._admitted = False
        self._busy = False
        self._unread_body: Any = None  # the last request's body, if its handler left some unread
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted = self._listener.admit()
        if not self._admitted:
            transport.write(self._listener.refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if data and self._head_timer is None and not self._busy and not self._discarding():
            self._start_head_timer()  # the first byte of a request after an answered one
        super().data_received(data)

    def _discarding(self) -> bool:
        """aiohttp is still reading away an unread body (for at most its lingering time):
        those bytes are no request head."""
        if self._unread_body is not None and self._unread_body.is_eof():
            self._unread_body = None
        return self._unread_body is not None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._listener.release()
        self._stop_head_timer()
        super().connection_lost(exc)

    async def _handle_request(self, request: Any, *args: Any) -> Any:  # aiohttp: the head is complete
        self._stop_head_timer()
        self._busy = True
        try:
            return await super()._handle_request(request, *args)
        finally:
            self._busy = False
            self._unread_body = None if request.content.is_eof() else request.content

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request the parser refused is the peer's fault: a 400 in RabbitMQ's error shape and one
        rate-limited warning line, not aiohttp's traceback per request (any peer could flood the log)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = printable(" ".join(exc.message.split()))[:300]
        peer = _peer(self.transport) if self.transport is not None else "?"
        self._listener.bad_requests.event("%s: answered %d to a malformed request from %s: %s",
                                          self._listener.name, status, peer, reason)
        error = "bad_request" if status == 400 else HTTPStatus(status).phrase.lower().replace(" ", "_")
        resp = web.json_response({"error": error, "reason": reason}, status=status)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body the handler left unread that aiohttp then fails to read away (e.g. it is not in
        the Content-Encoding it claims) is the peer's fault too: rate-limited, no traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            peer = _peer(self.transport) if self.transport is not None else "?"
            self._listener.bad_bodies.event("%s: closed a connection from %s whose request body is malformed: %s",
                                            self._listener.name, peer, printable(" ".join(str(exc).split()))[:300])
            return
        super().log_exception(*args, **kw)

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._listener.limits.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._busy or self.transport is None:
            return
        self._listener.head_timeouts.event(
            "%s: closed a connection from %s that sent no complete request head within %g s",
            self._listener.name, _peer(self.transport), self._listener.limits.header_timeout,
        )
        self.transport.write(self._listener.head_timeout_answer)
        self.force_close()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _fd_limit() -> int:
    try:
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 0


class HttpListener:
    """One listening socket serving an aiohttp runner under :class:`HttpLimits`."""

    def __init__(self, name: str, runner: web.AppRunner, limits: HttpLimits, log: logging.Logger) -> None:
        self.name = name
        self.runner = runner
        self.limits = limits
        self.log = log
        self.max_connections = limits.max_connections
        self.open_connections = 0
        self.refusals = RateLimitedLog(log)
        self.head_timeouts = RateLimitedLog(log)
        self.bad_requests = RateLimitedLog(log)
        self.bad_bodies = RateLimitedLog(log)
        self.refusal = b""
        self.head_timeout_answer = _canned(
            "408 Request Timeout", "request_timeout",
            f"request head not received within {limits.header_timeout:g} s (--http-header-timeout)",
        )
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                    sock: socket.socket | None = None) -> int:
        """Listen (``runner.setup()`` done here), over TLS with ``ssl_context``; return the bound port.
        A TLS handshake may take as long as a request head (``header_timeout``).  With ``sock`` (a
        socket already bound and listening), serve that instead of binding ``host:port``."""
        fd_limit = _fd_limit()
        if fd_limit > 0 and self.max_connections > fd_limit // 4:
            self.max_connections = max(fd_limit // 4, 1)
            self.log.warning("%s: at most %d HTTP connections (a quarter of the open-file limit %d, under "
                             "--http-max-connections %d)", self.name, self.max_connections, fd_limit,
                             self.limits.max_connections)
        self.refusal = _canned(
            "503 Service Unavailable", "service_unavailable",
            f"too many HTTP connections: {self.max_connections} open (--http-max-connections)",
        )
        await self.runner.setup()
        server = self.runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {
            "backlog": 128, "ssl": ssl_context,
            "ssl_handshake_timeout": self.limits.header_timeout if ssl_context else None,
        }
        try:
            if sock is None:
                self._server = await loop.create_server(
                    lambda: GuardedRequestHandler(self, server, loop), host, port, reuse_address=True, **options)
            else:
                self._server = await loop.create_server(
                    lambda: GuardedRequestHandler(self, server, loop), sock=sock, **options)
        except BaseException:
            await self.runner.cleanup()
            raise
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def admit(self) -> bool:
        """Count a new connection in, or refuse it (over the cap)."""
        if self.open_connections >= self.max_connections:
            self.refusals.event("%s: %d HTTP connections open (--http-max-connections): refusing new ones",
                                self.name, self.open_connections)
            return False
        self.open_connections += 1
        return True

    def release(self) -> None:
        self.open_connections -= 1
