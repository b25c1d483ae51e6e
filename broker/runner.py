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
Connection.Close 320).  On SIGHUP every TLS certificate is reloaded from its files (all or none;
a failure is logged and the certificates in use stay).

Every TLS certificate (AMQPS, management API, metrics) is checked before anything starts, so a
missing file, a key that does not match, or an expired certificate stops the start in one line.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
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
from .server import Broker, DefinitionsError
from .tls import DEFAULT_TLS_PORT, CertFiles, ClientVerification, ReloadableContext, TLSConfigError

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


def _cert_pair(cert: str | None, key: str | None, option: str, password: str | None = None) -> CertFiles | None:
    """The certificate and key given by ``--OPTION-cert`` / ``--OPTION-key``; both or neither."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("cert", "key") if key is None else ("key", "cert")
        raise TLSConfigError(f"--{option}-{given} needs --{option}-{missing}")
    return CertFiles(cert, key, password, f"--{option}-cert", f"--{option}-key")


def amqps_context(settings: ServeSettings) -> ReloadableContext | None:
    """The AMQPS listener's checked TLS context, or None when no certificate is given."""
    files = _cert_pair(settings.tls_cert, settings.tls_key, "tls", settings.tls_key_password)
    if files is None:
        needs = [f"--{n.replace('_', '-')}" for n in ("tls_port", "tls_key_password", "tls_ca", "tls_verify")
                 if getattr(settings, n) is not None] + (["--no-plain"] if settings.no_plain else [])
        if needs:
            raise TLSConfigError(f"{needs[0]} needs --tls-cert and --tls-key")
        return None
    mode = settings.tls_verify or ("peer" if settings.tls_ca else "none")
    return ReloadableContext("AMQPS listener", files, ClientVerification(mode, settings.tls_ca))


def make_broker(settings: ServeSettings) -> Broker:
    """The engine configured by ``settings``, every TLS certificate checked (a bad value raises
    ValueError)."""
    tls = amqps_context(settings)
    management = _cert_pair(settings.management_tls_cert, settings.management_tls_key, "management-tls")
    metrics = _cert_pair(settings.metrics_tls_cert, settings.metrics_tls_key, "metrics-tls") or management
    http = [(name, files) for name, files in (("management API", management), ("Prometheus metrics", metrics))
            if files is not None]
    http_contexts = [ReloadableContext(name, files) for name, files in http]
    broker = Broker(
        host=settings.host,
        port=settings.port,
        data_dir=settings.data_dir,
        default_user=settings.default_user,
        default_pass=settings.default_pass,
        default_vhost=settings.default_vhost,
        loopback_users=() if settings.allow_remote_guest else None,
        heartbeat=settings.heartbeat,
        handshake_timeout=settings.handshake_timeout,
        max_connections=settings.max_connections,
        flow_threshold=settings.flow_threshold,
        tcp_buffer_sizes=(settings.tcp_recbuf, settings.tcp_sndbuf),
        memory_high_watermark=settings.memory_high_watermark,
        disk_free_limit=settings.disk_free_limit,
        definitions_file=settings.definitions,
        consumer_timeout=settings.consumer_timeout,
        consumer_timeout_response=settings.consumer_timeout_response,
        tls=tls,
        tls_port=settings.tls_port if settings.tls_port is not None else DEFAULT_TLS_PORT,
        tls_login_from=settings.tls_login_from,
        plain=not settings.no_plain,
    )
    for rc in http_contexts:
        broker.certificates.add(rc)
    return broker


def run(broker: Broker, settings: ServeSettings) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop where it is installed; exits 1 if a start step fails."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(broker, settings, "asyncio"))
        return
    uvloop.run(serve(broker, settings, "uvloop"))


def raise_fd_limit() -> None:
    """Every connection is a file descriptor: lift the soft limit to the hard one, as RabbitMQ's
    start script does (ulimit -n), so that ``--max-connections`` and not the limit decides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an infinite hard limit the kernel caps
            log.debug("cannot raise the open file limit from %s: %s", soft, exc)
            return
    log.debug("open file limit: %s", resource.getrlimit(resource.RLIMIT_NOFILE)[0])


async def serve(broker: Broker, settings: ServeSettings, loop_name: str) -> None:
    """Start in order (engine, HTTP listeners, AMQP), wait for a stop signal, stop."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_certificates, broker)
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
    log.info("BurrowMQ %s ready: %s (event loop %s)", __version__, broker.urls(), loop_name)
    await stop.wait()
    t0 = loop.time()
    log.info("stopping: no new connections; finishing in-flight confirms, then closing clients")
    await _stop_all(broker, services)
    log.info("stopped in %.2f s", loop.time() - t0)


def _reload_certificates(broker: Broker) -> None:
    """SIGHUP: every TLS certificate from its files again, or none if one of them is bad."""
    try:
        broker.certificates.reload()
    except TLSConfigError as exc:
        log.error("TLS certificates not reloaded (those in use stay): %s", exc)


def _cannot_listen(settings: ServeSettings, exc: OSError) -> None:
    log.error("cannot listen on %s: %s (is another broker running? try --port / --tls-port)", settings.host, exc)


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
        tls = broker.certificates.get(what)
        ssl_context = tls.front_context() if tls is not None else None
        if kind == "management":
            service = ManagementServer(broker, host, port, limits=limits, ssl_context=ssl_context)
        else:
            from .metrics import MetricsServer  # prometheus_client only when the metrics listener is on

            service = MetricsServer(broker, host, port, limits=limits, ssl_context=ssl_context)
        try:
            await service.start()
        except OSError as exc:
            log.error("cannot listen on %s:%s for the %s: %s (try --%s-port)", host, port, what, exc, kind)
            await _stop_all(broker, services)
            raise SystemExit(1) from None
        services.append(service)
        scheme = "https" if ssl_context is not None else "http"
        logging.getLogger(f"broker.{kind}").info("%s listening on %s://%s:%s%s", what, scheme, host, service.port,
                                                 path)
    return services


async def _stop_all(broker: Broker, services: list[HttpService]) -> None:
    for service in services:
        await service.stop()
    await broker.stop()
