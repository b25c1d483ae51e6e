"""A broker process (``broker serve``): start-up in order, the signals that stop it, a graceful stop.

Start-up order (as RabbitMQ, which starts its client listeners last):

1. the engine prepares: the data dir is locked, recovered, definitions are imported, the default
   user exists, the AMQP socket is bound (so a port in use fails here, and port 0 is resolved)
   but does not accept connections yet;
2. the management API and the Prometheus metrics listeners open;
3. the AMQP socket accepts, and ``BurrowMQ <version> ready: amqp://host:port`` is logged.

So a deploy script or a health check that waits for the AMQP port can call the HTTP API at once,
and ``ready`` in the log means every listener is open.  On SIGINT or SIGTERM the HTTP listeners
close, then the engine stops (no new connections, in-flight confirms complete, clients get
Connection.Close 320).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Protocol

from storage.log import DataDirError

from . import __version__
from .alarms import parse_size
from .config import ServeSettings
from .httpguard import HttpLimits
from .management import ManagementServer
from .metadata import MetadataSaveError
from .metrics import MetricsServer
from .server import Broker, DefinitionsError

log = logging.getLogger("broker")


class HttpService(Protocol):
    """What the runner needs of an HTTP listener (management API, metrics)."""

    port: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def setup_logging(level: str) -> None:
    """One line per event on standard error, with its level and logger."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def make_broker(settings: ServeSettings) -> Broker:
    """The engine configured by ``settings`` (a bad value raises ValueError)."""
    return Broker(
        host=settings.host,
        port=settings.port,
        data_dir=settings.data_dir,
        default_user=settings.default_user,
        default_pass=settings.default_pass,
        default_vhost=settings.default_vhost,
        loopback_users=() if settings.allow_remote_guest else None,
        heartbeat=settings.heartbeat,
        memory_high_watermark=settings.memory_high_watermark,
        disk_free_limit=settings.disk_free_limit,
        definitions_file=settings.definitions,
        consumer_timeout=settings.consumer_timeout,
        consumer_timeout_response=settings.consumer_timeout_response,
    )


def run(broker: Broker, settings: ServeSettings) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop where it is installed; exits 1 if a start step fails."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(broker, settings, "asyncio"))
        return
    uvloop.run(serve(broker, settings, "uvloop"))


async def serve(broker: Broker, settings: ServeSettings, loop_name: str) -> None:
    """Start in order (engine, HTTP listeners, AMQP), wait for a stop signal, stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await broker.prepare()
    except (DataDirError, DefinitionsError, MetadataSaveError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except OSError as exc:
        _cannot_listen(settings, exc)
        raise SystemExit(1) from None
    services = await _start_http(broker, settings)
    # Queued messages are many small tracked objects: collect young objects less
    # often (measured: +20% deliveries per CPU second), and keep the start-up
    # objects out of every collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        await broker.listen()
    except OSError as exc:  # another process started listening on the port since it was bound
        _cannot_listen(settings, exc)
        await _stop_all(broker, services)
        raise SystemExit(1) from None
    log.info("BurrowMQ %s ready: amqp://%s:%s (event loop %s)", __version__, settings.host, broker.port, loop_name)
    await stop.wait()
    t0 = loop.time()
    log.info("stopping: no new connections; finishing in-flight confirms, then closing clients")
    await _stop_all(broker, services)
    log.info("stopped in %.2f s", loop.time() - t0)


def _cannot_listen(settings: ServeSettings, exc: OSError) -> None:
    log.error("cannot listen on %s:%s: %s (is another broker running? try --port)", settings.host, settings.port, exc)


async def _start_http(broker: Broker, settings: ServeSettings) -> list[HttpService]:
    """Open the management API and metrics listeners that are not turned off (port -1)."""
    limits = HttpLimits(
        max_body_size=parse_size(settings.management_max_body_size),
        max_connections=settings.http_max_connections,
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        keepalive_timeout=settings.http_keepalive_timeout,
    )
    wanted = (
        ("management", settings.management_port, settings.management_host or settings.host, "management API", ""),
        ("metrics", settings.metrics_port, settings.host, "Prometheus metrics", "/metrics"),
    )
    services: list[HttpService] = []
    for kind, port, host, what, path in wanted:
        if port < 0:
            continue
        service: HttpService
        if kind == "management":
            service = ManagementServer(broker, host, port, limits=limits)
        else:
            service = MetricsServer(broker, host, port, limits=limits)
        try:
            await service.start()
        except OSError as exc:
            log.error("cannot listen on %s:%s for the %s: %s (try --%s-port)", host, port, what, exc, kind)
            await _stop_all(broker, services)
            raise SystemExit(1) from None
        services.append(service)
        logging.getLogger(f"broker.{kind}").info("%s listening on http://%s:%s%s", what, host, service.port, path)
    return services


async def _stop_all(broker: Broker, services: list[HttpService]) -> None:
    for service in services:
        await service.stop()
    await broker.stop()
