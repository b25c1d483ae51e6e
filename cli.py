"""The ``broker`` command: ``broker serve`` runs the broker in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from broker import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="broker (BurrowMQ)")
def main() -> None:
    """BurrowMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged."""


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=5672, show_default=True, type=int, help="AMQP port (0 picks a free one).")
@click.option(
    "--data-dir",
    default=lambda: os.environ.get("BROKER_DATA_DIR", "./burrowmq-data"),
    show_default="./burrowmq-data",
    help="Where durable state is kept.",
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option(
    "--default-user",
    default=lambda: os.environ.get("BROKER_DEFAULT_USER", "guest"),
    show_default="guest (env BROKER_DEFAULT_USER)",
    help="User created at start, with full rights on vhost '/'.",
)
@click.option(
    "--default-pass",
    default=lambda: os.environ.get("BROKER_DEFAULT_PASS", "guest"),
    show_default="guest (env BROKER_DEFAULT_PASS)",
    help="Password of the default user.",
)
@click.option(
    "--allow-remote-guest",
    is_flag=True,
    help="Let the user 'guest' log in from other hosts than loopback (off, like RabbitMQ).",
)
@click.option("--heartbeat", default=60, show_default=True, type=int, help="Heartbeat interval offered (s).")
@click.option(
    "--memory-high-watermark",
    default="0.4",
    show_default=True,
    help="Block publishers above this resident memory: a fraction of RAM (0.4) or a size (512MB).",
)
@click.option(
    "--disk-free-limit",
    default="50MB",
    show_default=True,
    help="Block publishers when the data dir's disk has less free space than this (0 disables).",
)
def serve(
    host: str,
    port: int,
    data_dir: str,
    log_level: str,
    default_user: str,
    default_pass: str,
    allow_remote_guest: bool,
    heartbeat: int,
    memory_high_watermark: str,
    disk_free_limit: str,
) -> None:
    """Run the broker in the foreground until SIGINT or SIGTERM."""
    _setup_logging(log_level)
    log = logging.getLogger("broker")
    from broker.server import Broker

    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        uvloop = None

    broker = Broker(
        host=host,
        port=port,
        data_dir=data_dir,
        default_user=default_user,
        default_pass=default_pass,
        loopback_users=() if allow_remote_guest else None,
        heartbeat=heartbeat,
        memory_high_watermark=memory_high_watermark,
        disk_free_limit=disk_free_limit,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        from storage.log import DataDirLocked

        try:
            await broker.start()
        except DataDirLocked as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s (is another broker running? try --port)", host, port, exc)
            raise SystemExit(1) from None
        log.info(
            "BurrowMQ %s ready: amqp://%s:%s (event loop %s)",
            __version__,
            host,
            broker.port,
            "uvloop" if uvloop is not None else "asyncio",
        )
        await stop.wait()
        log.info("stopping: closing client connections")
        await broker.stop()

    if uvloop is not None:
        uvloop.run(run())
    else:
        asyncio.run(run())


if __name__ == "__main__":
    main()
