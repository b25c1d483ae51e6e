"""The AMQPS listener: accepting sockets, their TLS handshakes, and a log line for each one that fails.

Theory of operation
-------------------
:class:`AMQPSListener` binds its socket in :meth:`~AMQPSListener.bind` (so a port in use fails
before the broker says it is ready) and, once :meth:`~AMQPSListener.start` is called, runs one
accept loop.  Each accepted socket gets a handshake task: ``loop.connect_accepted_socket`` with
the listener's TLS context *as it is at that moment* (a reloaded certificate or CA serves every
connection accepted after the reload) and the AMQP handshake timeout as the TLS handshake's
limit.  The AMQP protocol object is made when the socket is accepted and told so, so that the
TLS and AMQP handshakes together fit in one timeout; its ``connection_made`` comes only after a
successful TLS handshake, so a client that sends nothing, an old TLS version, a certificate the
CA does not vouch for, or plain AMQP bytes never sees a Connection.Start.  Such a failure is
logged with the peer's address and OpenSSL's reason (at most a few lines a second: a flood of
bad handshakes is counted, not echoed).  :meth:`~AMQPSListener.close` stops accepting and
cancels the handshakes still running.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from .logsafe import printable
from .net import set_buffer_sizes
from .tls import ReloadableContext

log = logging.getLogger("broker.amqps")

FAILURE_LINES_PER_SECOND = 5


class AMQPSListener:
    """One listening socket whose connections speak AMQP over TLS."""

    def __init__(self, host: str, port: int, context: ReloadableContext, handshake_timeout: float,
                 make_protocol: Callable[[], asyncio.Protocol], buffer_sizes: tuple[int, int] = (0, 0)) -> None:
        self.host = host
        self.buffer_sizes = buffer_sizes  # (recbuf, sndbuf) of accepted sockets, 0: the kernel's
        self.port = port
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.make_protocol = make_protocol
        self.sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._window = 0.0
        self._lines = 0
        self._unlogged = 0

    def bind(self) -> int:
        """Bind and listen (not accepting yet); return the port (OSError if it is taken)."""
        family, type_, proto, _, addr = socket.getaddrinfo(
            self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            set_buffer_sizes(sock, *self.buffer_sizes)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]
        return self.port

    def start(self) -> None:
        """Accept connections on the bound socket."""
        assert self.sock is not None, "bind() first"
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(self.sock))

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. out of file descriptors: keep listening
                log.warning("AMQPS listener: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake(loop, sock, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: Any) -> None:
        try:
            await loop.connect_accepted_socket(
                self.make_protocol, sock, ssl=self.context.context, ssl_handshake_timeout=self.handshake_timeout,
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, EOFError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            self._failed(peer, exc)

    def _failed(self, peer: Any, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            why = f"no TLS handshake within {self.handshake_timeout:g} s"
        elif isinstance(exc, ssl.SSLError):
            why = exc.reason or str(exc)
            why = f"{why} ({exc.verify_message})" if isinstance(exc, ssl.SSLCertVerificationError) else why
        else:
            why = str(exc) or type(exc).__name__
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self._unlogged:
                log.warning("AMQPS listener: %d more failed TLS handshakes not logged", self._unlogged)
            self._window, self._lines, self._unlogged = now, 0, 0
        if self._lines >= FAILURE_LINES_PER_SECOND:
            self._unlogged += 1
            return
        self._lines += 1
        host, port = (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else (peer, "?")
        log.warning("AMQPS connection %s:%s: TLS handshake failed: %s", host, port, printable(why))

    async def close(self) -> None:
        """Stop accepting; cancel handshakes in progress."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._handshakes):
            task.cancel()
        if self.sock is not None:
            self.sock.close()
        tasks = [t for t in (self._accepting, *self._handshakes) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting = None
