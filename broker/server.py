"""The broker object: listening socket, connections, vhosts, users.

:class:`Broker` runs inside an existing asyncio loop, so programs and tests can
embed it::

    broker = Broker(port=0)
    await broker.start()          # broker.port is the port it bound
                                  # (or prepare(), other listeners, then listen())
    ...
    await broker.stop()           # clients get Connection.Close 320

:class:`AMQPProtocol` is the thin ``asyncio.Protocol`` adapter that hands bytes
and flow-control events to a :class:`~broker.amqp.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import time
from typing import Any

from protocol import errors
from storage import meta
from storage.fileio import OS, FileIO
from storage.interfaces import DataDirError
from storage.records import read_identity
from storage.store import LogStore

from . import __version__
from .alarms import ResourceMonitor, parse_size, parse_watermark
from .amqp.connection import Connection
from .amqps import AMQPSListener
from .auth import Permission, UserStore
from .definitions import APPLIED_SECTIONS, ImportReport, import_definitions
from .delayed import remove_orphans
from .flow import FLOW_THRESHOLD
from .login_throttle import LoginThrottle
from .logsafe import printable
from .metadata import MetadataJournal
from .net import set_buffer_sizes
from .services import ConnectionLimits, Services
from .stats import Stats
from .tls import DEFAULT_TLS_PORT, Certificates, ReloadableContext
from .vhost import VHost

log = logging.getLogger("broker.server")

SCRATCH_DIR = "scratch"  # under the data directory: the logs transient queues page to


class DefinitionsError(Exception):
    """A definitions file given at boot cannot be read."""


class AMQPProtocol(asyncio.Protocol):
    """asyncio adapter: socket events -> Connection."""

    __slots__ = ("broker", "conn", "accepted")

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.conn: Connection | None = None
        # made when the socket is accepted: on the AMQPS port, connection_made follows the TLS handshake,
        # which counts in the handshake timeout
        self.accepted = broker.loop.time()

    def connection_made(self, transport: Any) -> None:
        transport.set_write_buffer_limits(high=256 * 1024)
        self.conn = Connection(self.broker.services, transport, self.accepted)
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
            st = self.broker.stats
            st.bytes_in += conn.recv_bytes
            st.bytes_out += conn.sent_bytes

    def pause_writing(self) -> None:
        self.conn.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.conn.resume_writing()  # type: ignore[union-attr]


def _trim_heap() -> None:
    """Give memory the C heap freed back to the system (glibc; nothing elsewhere).  Recovery
    reads whole segment files: glibc keeps tens of MB of what it freed after a large recovery
    (measured: 300,000 held delayed messages, 21 MB more RSS, 15 MB of it given back here)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
        default_vhost: str = "/",
        memory_high_watermark: str | float = 0.4,
        disk_free_limit: str | int = "50MB",
        alarm_interval: float = 0.5,
        definitions_file: str | None = None,
        consumer_timeout: int = 1_800_000,
        consumer_timeout_response: str = "notify-consumer",
        tls: ReloadableContext | None = None,
        tls_port: int = DEFAULT_TLS_PORT,
        tls_login_from: str = "common_name",
        plain: bool = True,
        max_connections: int = 0,
        flow_threshold: int = FLOW_THRESHOLD,
        tcp_buffer_sizes: tuple[int, int] = (0, 0),
        file_io: FileIO = OS,
    ) -> None:
        if not plain and tls is None:
            raise ValueError("no AMQP listener: the plain one is off and no TLS certificate is given")
        self.host = host
        self.port = port if plain else -1  # the plain AMQP port (-1: no plain listener)
        self.tls = tls
        self.tls_port = tls_port if tls is not None else -1  # the AMQPS port (-1: no AMQPS listener)
        self.certificates = Certificates()  # every listener's TLS context, for reload
        if tls is not None:
            self.certificates.add(tls)
        self.tls_server: AMQPSListener | None = None
        self.data_dir = data_dir
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.handshake_timeout = handshake_timeout
        self.tcp_buffer_sizes = tcp_buffer_sizes  # (recbuf, sndbuf) of AMQP connections, 0: the kernel's
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.server: asyncio.base_events.Server | None = None
        self.default_vhost = default_vhost
        self.vhosts: dict[str, VHost] = {}
        self.users = UserStore()
        self.default_user = default_user
        self.default_pass = default_pass
        # like RabbitMQ's loopback_users: the stock guest account is local-only
        if loopback_users is None:
            loopback_users = ("guest",) if default_user == "guest" else ()
        self.loopback_users = set(loopback_users)
        self.login_throttle = LoginThrottle()
        self.stats = Stats()
        self.definitions_file = definitions_file
        self.monitor = ResourceMonitor(
            self, parse_watermark(memory_high_watermark), parse_size(disk_free_limit), alarm_interval
        )
        self.store: LogStore | None = LogStore(data_dir, file_io) if data_dir else None
        # transient queues page a backlog here; nothing in it outlives the process
        self.scratch: LogStore | None = (
            LogStore(os.path.join(data_dir, SCRATCH_DIR), file_io, account=self.store) if data_dir else None
        )
        self.journal = MetadataJournal(self.store.data_dir if self.store else None, self.definitions, file_io,
                                       self.store.sync_directories if self.store else None)
        self._housekeeper: asyncio.TimerHandle | None = None
        self.services = Services(
            users=self.users,
            login_throttle=self.login_throttle,
            loopback_users=self.loopback_users,
            monitor=self.monitor,
            journal=self.journal,
            store=self.store,
            stats=self.stats,
            limits=ConnectionLimits(frame_max, channel_max, heartbeat, handshake_timeout, max_connections),
            vhosts=self.vhosts,
            consumer_timeout_ms=consumer_timeout,
            consumer_timeout_response=consumer_timeout_response,
            tls_login_from=tls_login_from,
            scratch=self.scratch,
            flow_threshold=flow_threshold,
        )
        self.connections: set[Connection] = self.services.connections.all
        self.open_connections: set[Connection] = self.services.connections.open

    async def start(self) -> None:
        """Prepare, then accept AMQP clients."""
        await self.prepare()
        await self.listen()

    async def prepare(self) -> None:
        """Everything before accepting clients: the data dir locked and recovered, definitions
        imported, the default user, alarms, and the AMQP socket bound (``port`` is known; a port
        in use raises OSError here) but not accepting yet."""
        self.loop = asyncio.get_running_loop()
        self.services.loop = self.loop
        self.journal.attach(self.loop)
        if self.store is not None:
            self.store.open()  # raises DataDirError: unwritable, or locked by another broker
            self.store.attach(self.loop)
            self._open_scratch()
            self.recover()
            self._housekeeper = self.loop.call_later(2.0, self._housekeep)
        if self.definitions_file:
            self.load_definitions_file(self.definitions_file)
        self.ensure_default_user()
        self.journal.commit()
        self.monitor.start()
        if self.port >= 0:
            self.server = await self.loop.create_server(
                lambda: AMQPProtocol(self), self.host, self.port, reuse_address=True, backlog=4096,
                start_serving=False,
            )
            self.port = self.server.sockets[0].getsockname()[1]
            for sock in self.server.sockets:
                set_buffer_sizes(sock, *self.tcp_buffer_sizes)
        if self.tls is not None:
            self.tls_server = AMQPSListener(self.host, self.tls_port, self.tls, self.handshake_timeout,
                                            lambda: AMQPProtocol(self), self.tcp_buffer_sizes)
            try:
                self.tls_port = self.tls_server.bind()
            except OSError:
                self.tls_server = None
                if self.server is not None:
                    self.server.close()
                raise

    async def listen(self) -> None:
        """Accept AMQP clients on the sockets :meth:`prepare` bound."""
        assert self.server is not None or self.tls_server is not None, "prepare() first"
        if self.server is not None:
            await self.server.start_serving()
            log.info("listening for AMQP 0-9-1 on %s:%s", self.host, self.port)
        if self.tls_server is not None:
            self.tls_server.start()
            log.info("listening for AMQP 0-9-1 over TLS on %s:%s", self.host, self.tls_port)

    def urls(self) -> str:
        """``amqp://host:port`` and/or ``amqps://host:port``, as the ready line shows them."""
        out = [f"amqp://{self.host}:{self.port}"] if self.server is not None else []
        if self.tls_server is not None:
            out.append(f"amqps://{self.host}:{self.tls_port}")
        return ", ".join(out)

    # -- storage -----------------------------------------------------------------
    def recover(self) -> None:
        """Rebuild users, vhosts, exchanges, queues, bindings and messages from the data dir."""
        assert self.store is not None
        t0 = time.monotonic()
        defs = meta.load(self.store.data_dir, self.store.io)
        report = self.apply_definitions(defs, source="the metadata file")
        counts = report.counts
        nq = nmsg = nredel = 0
        problems: list[str] = []
        for vh in self.vhosts.values():
            for q in vh.queues.values():
                got = q.recover()
                if got is None:
                    continue
                problems += got.problems
                nq += 1
                nmsg += got.messages
                nredel += got.redelivered
        # a limit lowered while the broker was down (a policy in a definitions file, say) applies now,
        # as RabbitMQ's queue does when it starts: once every queue is back, since a message trimmed
        # from one may be dead-lettered into another
        for vh in self.vhosts.values():
            for q in list(vh.queues.values()):
                q.policies_applied()
        # logs that no declared queue owns: kept aside, never deleted
        for d in sorted(self.store.existing_queue_dirs() - set(self.store.logs)):
            self._quarantine(d)
        remove_orphans(self.store, {h.log.dir for vh in self.vhosts.values()
                                    for h in vh.delayed.held.values() if h.log is not None})
        for p in problems:
            log.error("recovery: %s", p)
        self.journal.dirty = False
        log.info(
            "recovered %d durable queues with %d messages (%d to be redelivered), %d exchanges, %d bindings, "
            "%d users, %d vhosts in %.2f s%s%s",
            nq, nmsg, nredel, counts["exchanges"], counts["bindings"], counts["users"], len(self.vhosts),
            time.monotonic() - t0, f"; {len(problems)} problems (see errors above)" if problems else "",
            f"; {len(report.not_applied)} definitions not applied (see above)" if report.not_applied else "",
        )
        _trim_heap()

    def _open_scratch(self) -> None:
        """Empty the scratch store (what an earlier process paged is worthless now) and open it."""
        assert self.scratch is not None
        shutil.rmtree(self.scratch.data_dir, ignore_errors=True)
        try:
            self.scratch.open()
        except DataDirError as exc:
            log.warning("transient queues will keep their backlogs in memory: %s", exc)
            self.scratch = self.services.scratch = None
            return
        self.scratch.attach(self.loop)

    def _close_scratch(self) -> None:
        scratch, self.scratch = self.scratch, None
        if scratch is None:
            return
        for qlog in list(scratch.logs.values()):
            scratch.drop_queue_log(qlog)
        scratch.close()
        shutil.rmtree(scratch.data_dir, ignore_errors=True)

    def _quarantine(self, directory: str) -> None:
        assert self.store is not None
        vhost, queue = read_identity(directory, self.store.io)
        what = f"queue '{printable(queue)}' in vhost '{printable(vhost or '')}'" if queue is not None \
            else "an unnamed queue"
        try:
            dest = self.store.quarantine(directory)
        except OSError as exc:
            log.error("recovery: message data of %s in %s matches no declared queue and could not be moved "
                      "to lost+found (%s); it is left where it is", what, directory, exc)
            return
        log.warning("recovery: message data of %s matches no declared queue: moved to %s "
                    "(see `broker list-lost-found`; `broker import-lost-found %s` re-imports it)",
                    what, dest, os.path.basename(dest))

    # -- definitions (RabbitMQ's JSON shape) -----------------------------------------
    def apply_definitions(
        self, defs: dict, source: str = "an import", sections: tuple[str, ...] = APPLIED_SECTIONS
    ) -> ImportReport:
        """Create what a definitions document describes (vhosts, users, permissions,
        exchanges, queues, bindings, or only ``sections``); existing things are kept.
        Every part not applied is logged and listed in the report (see broker.definitions)."""
        report = import_definitions(self, defs, source, sections)
        self.journal.changed()
        return report

    def definitions(self) -> dict:
        """Everything durable, in RabbitMQ's definitions shape."""
        out: dict = {
            "product": "BurrowMQ",
            "burrowmq_version": __version__,
            "vhosts": [{"name": n} for n in self.vhosts],
            "users": [
                {
                    "name": u.name,
                    "password_hash": u.password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": list(u.tags),
                    "limits": dict(u.limits),
                }
                for u in self.users.users.values()
            ],
            "permissions": [
                dict(user=user, vhost=vhost, **perm.as_dict()) for (user, vhost), perm in self.users.permissions.items()
            ],
            "topic_permissions": self.users.topics.listing(),
            "policies": [],
            "parameters": [],
            "exchanges": [],
            "queues": [],
            "bindings": [],
        }
        for vh in self.vhosts.values():
            d = vh.definitions()
            for k in ("policies", "parameters", "exchanges", "queues", "bindings"):
                out[k] += d[k]
        return out

    # -- administration --------------------------------------------------------------
    def add_vhost(self, name: str) -> VHost:
        vh = self.vhosts.get(name)
        if vh is None:
            vh = self.vhosts[name] = VHost(name, self.services)
            self.journal.changed()
            log.info("vhost '%s' created", printable(name))
        return vh

    def delete_vhost(self, name: str) -> bool:
        vh = self.vhosts.pop(name, None)
        if vh is None:
            return False
        for conn in list(self.open_connections):
            if conn.vhost is vh:
                conn.close(errors.CONNECTION_FORCED, f"CONNECTION_FORCED - vhost '{name}' is deleted")
        for q in list(vh.queues.values()):
            vh.delete_queue(q)
        vh.delayed.drop_all()
        self.users.drop_vhost(name)
        self.journal.changed()
        log.info("vhost '%s' deleted", printable(name))
        return True

    def close_user_connections(self, username: str, why: str) -> int:
        n = 0
        for conn in list(self.open_connections):
            if conn.username == username:
                conn.close(errors.CONNECTION_FORCED, f"CONNECTION_FORCED - {why}")
                n += 1
        return n

    def delete_user(self, name: str) -> bool:
        if not self.users.delete_user(name):
            return False
        self.close_user_connections(name, f"user '{name}' was deleted")
        self.journal.changed()
        return True

    def change_password(self, name: str, password: str | None) -> None:
        self.users.change_password(name, password)
        self.close_user_connections(name, f"user '{name}' password changed")
        self.journal.changed()

    def load_definitions_file(self, path: str) -> None:
        """Import a definitions file at boot (RabbitMQ's load_definitions)."""
        import json

        try:
            with open(path, "rb") as f:
                defs = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise DefinitionsError(f"cannot load definitions from {path}: {exc}") from None
        except RecursionError:
            raise DefinitionsError(f"cannot load definitions from {path}: JSON nested too deeply") from None
        if not isinstance(defs, dict):
            raise DefinitionsError(f"cannot load definitions from {path}: not a JSON object")
        report = self.apply_definitions(defs, source=path)
        counts = report.counts
        log.info(
            "imported definitions from %s: %d vhosts, %d users, %d permissions, %d exchanges, %d queues, "
            "%d bindings%s",
            path, counts["vhosts"], counts["users"], counts["permissions"], counts["exchanges"], counts["queues"],
            counts["bindings"], f"; {len(report.not_applied)} not applied (see above)" if report.not_applied else "",
        )

    def ensure_default_user(self) -> None:
        """On a blank node (no users), create the default user and vhost, as RabbitMQ does.  A node
        that has users and vhosts keeps what it has: a deleted default vhost stays deleted."""
        vh = self.default_vhost
        if (not self.users.users or not self.vhosts) and vh not in self.vhosts:
            self.vhosts[vh] = VHost(vh, self.services)
            self.journal.changed()
        if self.users.users:
            return
        self.users.add_user(self.default_user, self.default_pass, ["administrator"])
        self.users.set_permissions(self.default_user, vh, Permission())
        self.journal.changed()
        log.info("created default user '%s' with full permissions on vhost '%s'", printable(self.default_user),
                 printable(vh))

    def _housekeep(self) -> None:
        if self.store is not None:
            self.store.housekeep()
            self._housekeeper = self.loop.call_later(2.0, self._housekeep)

    # -- resource alarms ---------------------------------------------------------------
    @property
    def alarmed(self) -> bool:
        return self.monitor.alarmed

    def alarm_reasons(self) -> list[str]:
        return self.monitor.reasons()

    def block_publishers(self, reasons: list[str]) -> None:
        for conn in list(self.open_connections):
            if conn.publishing:
                conn.block(reasons)

    def unblock_publishers(self) -> None:
        for conn in list(self.open_connections):
            conn.unblock()

    async def stop(self, reason: str = "shutdown", timeout: float = 5.0) -> None:
        """Stop accepting, stop reading clients, let in-flight confirms complete
        (the last fsync), then close every client with 320 CONNECTION_FORCED."""
        if self.server is not None:
            self.server.close()
        if self.tls_server is not None:
            await self.tls_server.close()
        for conn in list(self.connections):
            conn.drain()
        store = self.store
        if store is not None and self.loop is not None:
            store.flush()
            deadline = self.loop.time() + timeout
            while (store.syncing or store.sync_wanted) and self.loop.time() < deadline:
                await asyncio.sleep(0.005)
                if store.sync_wanted and not store.syncing:
                    store.flush()
        for conn in list(self.connections):
            if conn.out or conn.confirm_dirty:
                conn.flush()
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
        self.monitor.stop()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        if self.store is not None:
            await self.journal.close()
            for vh in self.vhosts.values():
                vh.delayed.close()
            self.store.close()
        self._close_scratch()
        log.info("broker stopped")
