"""The ``broker`` command: ``broker serve`` runs the broker in the foreground; the other verbs
(rabbitmqctl's) administer a running broker through its management API.

This module only wires the pieces together: serve's options and their checks are in
:mod:`broker.config`, the process's start-up and stop in :mod:`broker.runner`, the admin verbs in
:mod:`broker.admin`.  The engine is imported only when ``serve`` runs, so the admin verbs stay light.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import click

from broker import __version__
from broker.admin import COMMANDS as ADMIN_COMMANDS
from broker.config import ServeCommand, ServeSettings, describe_config, serve_options


class BrokerGroup(click.Group):
    """The ``broker`` group; its help shows each verb's whole summary (its docstring's first
    paragraph), never cut to the terminal's width."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if cmd.short_help is None and cmd.help:
            cmd.short_help = " ".join(inspect.cleandoc(cmd.help).split("\n\n")[0].split())
        super().add_command(cmd, name)


@click.group(cls=BrokerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="broker (BurrowMQ)")
def main() -> None:
    """BurrowMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged."""


@main.command(cls=ServeCommand)
@serve_options
@click.pass_context
def serve(ctx: click.Context, **opts: Any) -> None:
    """Run the broker in the foreground until SIGINT or SIGTERM."""
    settings = ServeSettings(**opts)
    from broker import runner

    runner.setup_logging(settings.log_level)
    logging.getLogger("broker").info("configuration: %s", describe_config(ctx, opts))
    try:
        broker = runner.make_broker(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    runner.run(broker, settings)


for _command in ADMIN_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
