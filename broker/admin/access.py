"""Admin verbs for who may do what: users, virtual hosts and permissions (rabbitmqctl's)."""

from __future__ import annotations

import click

from .client import AdminApi, AdminError, choose_columns, print_rows, quote
from .command import VHOST_OPTION, admin_command

VHOST_COLUMNS = {c: c for c in ("name", "description", "tags", "tracing", "messages", "messages_ready",
                                "messages_unacknowledged", "default_queue_type")}
USER_COLUMNS = {"user": "name", "name": "name", "tags": "tags"}
PERMISSION_COLUMNS = {c: c for c in ("user", "vhost", "configure", "write", "read")}

@admin_command("add-user")
@click.argument("username")
@click.argument("new_password", metavar="PASSWORD")
@click.option("--tags", default="", help="Comma-separated tags (administrator, monitoring, management...).")
def add_user(api: AdminApi, username: str, new_password: str, tags: str) -> None:
    """Create a user (it has no permissions until set-permissions)."""
    if api.exists(f"users/{quote(username)}"):
        raise AdminError(f"user '{username}' already exists")
    click.echo(f'Adding user "{username}" ...')
    api.call("PUT", f"users/{quote(username)}", {"password": new_password, "tags": tags})


@admin_command("delete-user")
@click.argument("username")
def delete_user(api: AdminApi, username: str) -> None:
    """Delete a user (its connections are closed)."""
    click.echo(f'Deleting user "{username}" ...')
    api.call("DELETE", f"users/{quote(username)}", not_found=f"user '{username}' does not exist")


@admin_command("change-password")
@click.argument("username")
@click.argument("new_password", metavar="PASSWORD")
def change_password(api: AdminApi, username: str, new_password: str) -> None:
    """Set a user's password (its connections are closed)."""
    click.echo(f'Changing password for user "{username}" ...')
    api.call("GET", f"users/{quote(username)}", not_found=f"user '{username}' does not exist")
    api.call("PUT", f"users/{quote(username)}", {"password": new_password})


@admin_command("set-user-tags")
@click.argument("username")
@click.argument("tags", nargs=-1)
def set_user_tags(api: AdminApi, username: str, tags: tuple[str, ...]) -> None:
    """Replace a user's tags (none: no tags)."""
    click.echo(f'Setting tags for user "{username}" to [{", ".join(tags)}] ...')
    api.call("GET", f"users/{quote(username)}", not_found=f"user '{username}' does not exist")
    api.call("PUT", f"users/{quote(username)}", {"tags": ",".join(tags)})


@admin_command("list-users", listing=True)
def list_users(api: AdminApi) -> None:
    """Users and their tags."""
    users = api.call("GET", "users")
    if not api.as_json:
        for u in users:
            u["tags"] = "[" + ", ".join(u.get("tags") or []) + "]"
    print_rows(api, users, ["user", "tags"], USER_COLUMNS)


@admin_command("add-vhost")
@click.argument("name")
@click.option("--description", default=None, help="A description of the vhost.")
def add_vhost(api: AdminApi, name: str, description: str | None) -> None:
    """Create a virtual host."""
    click.echo(f'Adding vhost "{name}" ...')
    body = {"description": description} if description is not None else {}
    api.call("PUT", f"vhosts/{quote(name)}", body)


@admin_command("delete-vhost")
@click.argument("name")
def delete_vhost(api: AdminApi, name: str) -> None:
    """Delete a virtual host and everything in it."""
    click.echo(f'Deleting vhost "{name}" ...')
    api.call("DELETE", f"vhosts/{quote(name)}", not_found=f"vhost '{name}' does not exist")


@admin_command("list-vhosts", listing=True)
@click.argument("columns", nargs=-1)
def list_vhosts(api: AdminApi, columns: tuple[str, ...]) -> None:
    """Virtual hosts [COLUMNS: name description tags messages ...]."""
    cols = choose_columns(columns, ["name"], VHOST_COLUMNS)
    print_rows(api, api.call("GET", "vhosts"), cols, VHOST_COLUMNS)


@admin_command("set-permissions")
@VHOST_OPTION
@click.argument("username")
@click.argument("conf")
@click.argument("write")
@click.argument("read")
def set_permissions(api: AdminApi, vhost: str, username: str, conf: str, write: str, read: str) -> None:
    """Set USER's configure, write and read regexes in a vhost."""
    click.echo(f'Setting permissions for user "{username}" in vhost "{vhost}" ...')
    api.call("PUT", f"permissions/{quote(vhost)}/{quote(username)}", {"configure": conf, "write": write, "read": read})


@admin_command("clear-permissions")
@VHOST_OPTION
@click.argument("username")
def clear_permissions(api: AdminApi, vhost: str, username: str) -> None:
    """Remove USER's permissions in a vhost."""
    click.echo(f'Clearing permissions for user "{username}" in vhost "{vhost}" ...')
    try:
        api.call("DELETE", f"permissions/{quote(vhost)}/{quote(username)}", not_found="\0")
    except AdminError as e:
        if e.message != "\0":
            raise
        api.call("GET", f"users/{quote(username)}", not_found=f"user '{username}' does not exist")
        api.call("GET", f"vhosts/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")


@admin_command("list-permissions", listing=True)
@VHOST_OPTION
def list_permissions(api: AdminApi, vhost: str) -> None:
    """Users' permissions in a vhost."""
    perms = api.call("GET", f"vhosts/{quote(vhost)}/permissions", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, perms, ["user", "configure", "write", "read"], PERMISSION_COLUMNS)


COMMANDS = (
    add_user, delete_user, change_password, set_user_tags, list_users, add_vhost, delete_vhost, list_vhosts,
    set_permissions, clear_permissions, list_permissions,
)
