"""A broker in a background thread of the calling process (the pytest plugin's ``amqp_broker``).

Theory of operation
-------------------
:class:`EmbeddedBroker` owns one thread that runs its own event loop (uvloop where installed),
so blocking clients (pika's BlockingConnection, kombu) can talk to it from the calling thread
and asyncio clients from their own loops.  :meth:`EmbeddedBroker.start` creates the loop and
the thread, then runs the start-up of ``broker serve`` on it (engine prepared and recovered,
management API open, AMQP accepting) and waits for it; a failure there (port taken, data dir
unusable) is raised in the caller as :class:`EmbeddedBrokerError` with one line naming what
could not be had.  :meth:`EmbeddedBroker.stop` stops the listeners and the engine on the
loop (clients get Connection.Close 320), then ends the loop and joins the thread.
:meth:`EmbeddedBroker.restart` is stop then start on the same data dir and the same ports, so
clients reconnect to the same URL and find what was durable.

States: stopped -> running (start) -> stopped (stop); ``restart`` is both.  The calling thread
is the only one that changes the state; the loop thread only runs the broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from storage.log import DataDirError

from .httpguard import HttpLimits
from .management import ManagementServer
from .metadata import MetadataSaveError
from .server import Broker, DefinitionsError

log = logging.getLogger("broker.embedded")

START_TIMEOUT = 30.0  # seconds; a start takes milliseconds, this is only against a hang


class EmbeddedBrokerError(RuntimeError):
    """The broker could not start: one line naming the port or data dir that could not be had."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class EmbeddedBroker:
    """A broker (AMQP and, unless ``management=False``, the management API) running in a
    background thread; ``url``, ``host``, ``port`` and ``management_url`` say where."""

    def __init__(
        self,
        data_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        management_port: int = 0,
        management: bool = True,
        user: str = "guest",
        password: str = "guest",
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.management_port = management_port
        self.management = management
        self.user = user
        self.password = password
        self.broker: Broker | None = None
        self._http: ManagementServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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
    def start(self) -> EmbeddedBroker:
        """Start the broker thread and wait until every listener accepts."""
        if self._thread is not None:
            raise RuntimeError("the embedded broker is already running")
        loop = _new_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name="burrowmq-broker", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._call(self._start_async(), START_TIMEOUT)
        except BaseException:
            self._end_thread()
            raise
        return self

    def stop(self) -> None:
        """Stop the listeners and the engine (clients get Connection.Close 320), end the thread."""
        if self._thread is None:
            return
        try:
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

    async def _start_async(self) -> None:
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
        if self.management:
            http = ManagementServer(broker, self.host, self.management_port, limits=HttpLimits())
            try:
                await http.start()
            except OSError as exc:
                await broker.stop()
                raise EmbeddedBrokerError(
                    f"the embedded broker cannot listen on {self.host}:{self.management_port} for the "
                    f"management API: {exc.strerror or exc}"
                ) from None
            self._http = http
            self.management_port = http.port
        await broker.listen()
        self.broker = broker
        self.port = broker.port
        log.info("embedded broker ready: amqp://%s:%s", self.host, self.port)

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
