"""The ``broker`` command's admin verbs (rabbitmqctl's), which talk to a running broker's
management API: ``client`` is the HTTP client and table printing, ``command`` what every verb
shares (--url and how its default is found), and one module of verbs per kind of resource."""

from __future__ import annotations

import click

from . import access, node, policies, topics, topology, tracing

COMMANDS: tuple[click.Command, ...] = (
    *access.COMMANDS, *topology.COMMANDS, *node.COMMANDS, *tracing.COMMANDS, *policies.COMMANDS, *topics.COMMANDS
)

__all__ = ["COMMANDS"]
