"""Admin verbs for topic permissions (rabbitmqctl's ``set_topic_permissions`` and friends)."""

from __future__ import annotations

import click

from .client import AdminApi, AdminError, print_rows, quote
from .command import VHOST_OPTION, admin_command

TOPIC_COLUMNS = {c: c for c in ("user", "vhost", "exchange", "write", "read")}


@admin_command("set-topic-permissions")
@VHOST_OPTION
@click.argument("username")
@click.argument("exchange")
@click.argument("write")
@click.argument("read")
def set_topic_permissions(api: AdminApi, vhost: str, username: str, exchange: str, write: str, read: str) -> None:
    """Set USER's write and read regexes for routing keys on topic EXCHANGE in a vhost."""
    click.echo(f'Setting topic permissions on "{exchange}" for user "{username}" in vhost "{vhost}" ...')
    api.call("PUT", f"topic-permissions/{quote(vhost)}/{quote(username)}",
             {"exchange": exchange, "write": write, "read": read})


@admin_command("clear-topic-permissions")
@VHOST_OPTION
@click.argument("username")
@click.argument("exchange", required=False)
def clear_topic_permissions(api: AdminApi, vhost: str, username: str, exchange: str | None) -> None:
    """Remove USER's topic permissions in a vhost (only those on EXCHANGE if given)."""
    click.echo(f'Clearing topic permissions for user "{username}" in vhost "{vhost}" ...')
    path = f"topic-permissions/{quote(vhost)}/{quote(username)}"
    if exchange:
        path += f"?exchange={quote(exchange)}"
    try:
        api.call("DELETE", path, not_found="\0")
    except AdminError as e:  # nothing to clear is fine, a missing user or vhost is not
        if e.message != "\0":
            raise
        api.call("GET", f"users/{quote(username)}", not_found=f"user '{username}' does not exist")
        api.call("GET", f"vhosts/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")


@admin_command("list-topic-permissions", listing=True)
@VHOST_OPTION
def list_topic_permissions(api: AdminApi, vhost: str) -> None:
    """Users' topic permissions in a vhost."""
    rows = api.call("GET", f"vhosts/{quote(vhost)}/topic-permissions", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, rows, ["user", "exchange", "write", "read"], TOPIC_COLUMNS)


@admin_command("list-user-topic-permissions", listing=True)
@click.argument("username")
def list_user_topic_permissions(api: AdminApi, username: str) -> None:
    """A user's topic permissions in every vhost."""
    rows = api.call("GET", f"users/{quote(username)}/topic-permissions",
                    not_found=f"user '{username}' does not exist")
    print_rows(api, rows, ["vhost", "exchange", "write", "read"], TOPIC_COLUMNS)


COMMANDS = (set_topic_permissions, clear_topic_permissions, list_topic_permissions, list_user_topic_permissions)
