"""A broker in a background thread of the calling process (the pytest plugin's ``amqp_broker``).

Theory of operation
-------------------
:class:`EmbeddedBroker` owns one thread that runs its own event loop (asyncio's own, which starts
faster; uvloop with ``uvloop=True``, for throughput), so blocking clients (pika's
BlockingConnection, kombu) can talk to it from the calling thread
and asyncio clients from their own loops.  :meth:`EmbeddedBroker.start` creates the loop and
the thread, then runs the start-up of ``broker serve`` on it (engine prepared and recovered,
management socket bound, AMQP accepting) and waits for it; a failure there (port taken, data dir
unusable) is raised in the caller as :class:`EmbeddedBrokerError` with one line naming what
could not be had.

The management API is served by aiohttp, whose import costs more than the rest of the engine's
together.  So its socket is bound and listening before ``start`` returns, and a thread of its own
(``burrowmq-management``) imports the HTTP side and then serves that socket on the broker's loop.
The AMQP loop keeps running meanwhile; an HTTP client that connects early waits in the socket's
backlog until the API answers.  ``start()`` waits for that as well unless told not to
(``wait_for_management=False``, what the pytest plugin does); :meth:`wait_management` waits later.

:meth:`EmbeddedBroker.stop` lets a management start under way finish, stops the listeners and the
engine on the loop (clients get Connection.Close 320), then ends the loop and joins the thread.
:meth:`EmbeddedBroker.restart` is stop then start on the same data dir and the same ports, so
clients reconnect to the same URL and find what was durable.

States: stopped -> running (start) -> stopped (stop); ``restart`` is both.  The calling thread
is the only one that changes the state; the loop thread only runs the broker, and the
management thread only hands the loop the management listener (a failure there is kept for
:meth:`wait_management` to raise).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from storage.interfaces import DataDirError

from .metadata import MetadataSaveError
from .server import Broker, DefinitionsError

if TYPE_CHECKING:  # imported in the management thread, off the start's critical path
    from .management import ManagementServer

log = logging.getLogger("broker.embedded")

START_TIMEOUT = 30.0  # seconds; a start takes milliseconds, this is only against a hang


class EmbeddedBrokerError(RuntimeError):
    """The broker could not start: one line naming the port or data dir that could not be had."""


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop's loop when asked for and installed, else asyncio's (no import of uvloop, and an IP
    address as host needs no name lookup: a faster start)."""
    if use_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            return asyncio.new_event_loop()
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class EmbeddedBroker:
    """A broker (AMQP and, unless ``management=False``, the management API) running in a
    background thread; ``url``, ``host``, ``port`` and ``management_url`` say where.
    ``uvloop=True`` runs it on uvloop (as ``broker serve``), which starts slower."""

    def __init__(
        self,
        data_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        management_port: int = 0,
        management: bool = True,
        user: str = "guest",
        password: str = "guest",
        uvloop: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.management_port = management_port
        self.management = management
        self.user = user
        self.password = password
        self.uvloop = uvloop
        self.broker: Broker | None = None
        self._http: ManagementServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._management_thread: threading.Thread | None = None
        self._management_error: str | None = None

    # -- where it is ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """``amqp://user:password@host:port/`` (the default vhost ``/``)."""
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/"

    @property
    def management_url(self) -> str | None:
        """``http://host:port`` of the management API (None when it is off)."""
        if not self.management:
            return None
        return f"http://{self.host}:{self.management_port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- start and stop ------------------------------------------------------------
    def start(self, wait_for_management: bool = True) -> EmbeddedBroker:
        """Start the broker thread and wait until AMQP accepts and, unless
        ``wait_for_management`` is false, until the management API answers."""
        if self._thread is not None:
            raise RuntimeError("the embedded broker is already running")
        loop = _new_loop(self.uvloop)
        thread = threading.Thread(target=self._run, args=(loop,), name="burrowmq-broker", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            sock = self._call(self._start_async(), START_TIMEOUT)
        except BaseException:
            self._end_thread()
            raise
        if sock is not None:
            self._management_error = None
            self._management_thread = threading.Thread(
                target=self._open_management, args=(sock,), name="burrowmq-management", daemon=True)
            self._management_thread.start()
            if wait_for_management:
                self.wait_management()
        return self

    def wait_management(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the management API answers (at once when it is off or already up);
        :class:`EmbeddedBrokerError` if it could not start."""
        thread = self._management_thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise EmbeddedBrokerError(f"the embedded broker's management API did not start within {timeout:g} s")
        if self._management_error is not None:
            raise EmbeddedBrokerError(f"the embedded broker's management API cannot start: {self._management_error}")

    def stop(self) -> None:
        """Stop the listeners and the engine (clients get Connection.Close 320), end the thread."""
        if self._thread is None:
            return
        try:
            if self._management_thread is not None:  # a management API half started is stopped whole
                self._management_thread.join(START_TIMEOUT)
                self._management_thread = None
            self._call(self._stop_async(), START_TIMEOUT)
        finally:
            self._end_thread()

    def restart(self) -> None:
        """Stop, then start again on the same data dir and ports (what was durable is back)."""
        self.stop()
        self.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = START_TIMEOUT) -> Any:
        """Run ``coro`` on the broker's loop and return its result (for in-process checks)."""
        if self._thread is None:
            coro.close()
            raise RuntimeError("the embedded broker is not running")
        return self._call(coro, timeout)

    # -- the loop thread -----------------------------------------------------------
    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _end_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)

    async def _start_async(self) -> socket.socket | None:
        """Prepare the engine, bind the management socket, open AMQP; return that socket."""
        broker = Broker(host=self.host, port=self.port, data_dir=self.data_dir,
                        default_user=self.user, default_pass=self.password)
        try:
            await broker.prepare()
        except (DataDirError, DefinitionsError, MetadataSaveError) as exc:
            await self._abandon(broker)
            raise EmbeddedBrokerError(f"the embedded broker cannot start: {exc}") from None
        except OSError as exc:
            await self._abandon(broker)
            raise EmbeddedBrokerError(
                f"the embedded broker cannot listen on {self.host}:{self.port} for AMQP: {exc.strerror or exc}"
            ) from None
        sock = None
        if self.management:
            try:
                sock = socket.create_server((self.host, self.management_port), backlog=128)
            except OSError as exc:
                await broker.stop()
                raise EmbeddedBrokerError(
                    f"the embedded broker cannot listen on {self.host}:{self.management_port} for the "
                    f"management API: {exc.strerror or exc}"
                ) from None
            self.management_port = sock.getsockname()[1]
        await broker.listen()
        self.broker = broker
        self.port = broker.port
        log.info("embedded broker ready: amqp://%s:%s", self.host, self.port)
        return sock

    def _open_management(self, sock: socket.socket) -> None:
        """The management thread: import the HTTP side here, then serve ``sock`` on the loop."""
        try:
            from .httpguard import HttpLimits
            from .management import ManagementServer

            http = ManagementServer(self.broker, self.host, self.management_port, limits=HttpLimits())
            self._call(self._serve_management(http, sock), START_TIMEOUT)
        except Exception as exc:  # reported by wait_management(); AMQP keeps running
            sock.close()
            self._management_error = str(exc) or type(exc).__name__
            log.error("embedded broker: the management API cannot start: %s", self._management_error)

    async def _serve_management(self, http: ManagementServer, sock: socket.socket) -> None:
        await http.start(sock)
        self._http = http

    @staticmethod
    async def _abandon(broker: Broker) -> None:
        """Release what a failed prepare() took (the data dir lock, the socket)."""
        try:
            await broker.stop()
        except Exception:  # a half-prepared broker: release what can be released
            if broker.store is not None:
                broker.store.close()

    async def _stop_async(self) -> None:
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None
