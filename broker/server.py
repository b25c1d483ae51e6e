"""The broker object: listening socket, connections, vhosts, users.

:class:`Broker` runs inside an existing asyncio loop, so programs and tests can
embed it::

    broker = Broker(port=0)
    await broker.start()          # broker.port is the port it bound
    ...
    await broker.stop()           # clients get Connection.Close 320

:class:`AMQPProtocol` is the thin ``asyncio.Protocol`` adapter that hands bytes
and flow-control events to a :class:`~broker.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocol import errors

from .auth import Permission, UserStore
from .connection import Connection
from .vhost import VHost

log = logging.getLogger("broker.server")


class AMQPProtocol(asyncio.Protocol):
    """asyncio adapter: socket events -> Connection."""

    __slots__ = ("broker", "conn")

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.conn: Connection | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        transport.set_write_buffer_limits(high=256 * 1024)
        self.conn = Connection(self.broker, transport)
        self.broker.connections.add(self.conn)

    def data_received(self, data: bytes) -> None:
        self.conn.data_received(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None:
            self.broker.connections.discard(conn)
            conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.conn.resume_writing()  # type: ignore[union-attr]


class Broker:
    """An AMQP 0-9-1 broker bound to one address, running on the current loop."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 5672,
        data_dir: str | None = None,
        default_user: str = "guest",
        default_pass: str = "guest",
        loopback_users: tuple[str, ...] | None = None,
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.handshake_timeout = handshake_timeout
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[Connection] = set()
        self.open_connections: set[Connection] = set()
        self.vhosts: dict[str, VHost] = {"/": VHost("/", self)}
        self.users = UserStore()
        self.users.add_user(default_user, default_pass, ["administrator"])
        self.users.set_permissions(default_user, "/", Permission())
        # like RabbitMQ's loopback_users: the stock guest account is local-only
        if loopback_users is None:
            loopback_users = ("guest",) if default_user == "guest" else ()
        self.loopback_users = set(loopback_users)
        self.stats_unroutable = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(
            lambda: AMQPProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("listening for AMQP 0-9-1 on %s:%s", self.host, self.port)

    def connection_opened(self, conn: Connection) -> None:
        self.open_connections.add(conn)

    def connection_gone(self, conn: Connection) -> None:
        self.open_connections.discard(conn)

    async def stop(self, reason: str = "shutdown", timeout: float = 5.0) -> None:
        """Stop accepting, close every client with 320 CONNECTION_FORCED, wait for them."""
        if self.server is not None:
            self.server.close()
        text = f"CONNECTION_FORCED - broker forced connection closure with reason '{reason}'"
        for conn in list(self.connections):
            if conn.state == "opened":
                conn.close(errors.CONNECTION_FORCED, text)
            else:
                conn.close_transport()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close_transport(abort=True)
        if self.server is not None:
            await self.server.wait_closed()
        log.info("broker stopped")
