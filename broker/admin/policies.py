"""Admin verbs for policies, operator policies, vhost limits and user limits (rabbitmqctl's
argument order and banners)."""

from __future__ import annotations

import json
from typing import Any

import click

from .client import AdminApi, AdminError, print_rows, quote
from .command import VHOST_OPTION, admin_command

POLICY_COLUMNS = {c: c for c in ("vhost", "name", "pattern", "apply-to", "definition", "priority")}
APPLY_TO = click.Choice(["all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams"])


def _json_object(text: str) -> dict[str, Any]:
    """A DEFINITION argument: a JSON object, as rabbitmqctl takes it."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AdminError(f"Could not parse JSON document: {exc}") from None
    if not isinstance(value, dict):
        raise AdminError(f"the definition must be a JSON object, like '{{\"max-length\": 1000}}', not {text!r}")
    return value


def _set_policy(api: AdminApi, kind: str, vhost: str, name: str, pattern: str, definition: str, priority: int,
                apply_to: str) -> None:
    body = {"pattern": pattern, "definition": _json_object(definition), "priority": priority, "apply-to": apply_to}
    api.call("PUT", f"{kind}/{quote(vhost)}/{quote(name)}", body, not_found=f"vhost '{vhost}' does not exist")


def _clear_policy(api: AdminApi, kind: str, vhost: str, name: str, what: str) -> None:
    try:
        api.call("DELETE", f"{kind}/{quote(vhost)}/{quote(name)}", not_found="\0")
    except AdminError as e:
        if e.message != "\0":
            raise
        api.call("GET", f"vhosts/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
        raise AdminError(f"{what} '{name}' does not exist in vhost '{vhost}'") from None


def _list_policies(api: AdminApi, kind: str, vhost: str) -> None:
    items = api.call("GET", f"{kind}/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, items, list(POLICY_COLUMNS), POLICY_COLUMNS)


def policy_options(f: Any) -> Any:
    for option in (
        click.argument("definition"),
        click.argument("pattern"),
        click.argument("name"),
        click.option("--apply-to", "apply_to", type=APPLY_TO, default="all", show_default=True,
                     help="What the policy applies to."),
        click.option("--priority", type=int, default=0, show_default=True,
                     help="The highest-priority matching policy applies."),
        VHOST_OPTION,
    ):
        f = option(f)
    return f


# -- policies ------------------------------------------------------------------------------

@admin_command("set-policy")
@policy_options
def set_policy(api: AdminApi, vhost: str, priority: int, apply_to: str, name: str, pattern: str,
               definition: str) -> None:
    """Set policy NAME: queues/exchanges matching the regex PATTERN get DEFINITION (JSON,
    e.g. '{"max-length": 1000}')."""
    click.echo(f'Setting policy "{name}" for pattern "{pattern}" to "{definition}" with priority "{priority}" '
               f'for vhost "{vhost}" ...')
    _set_policy(api, "policies", vhost, name, pattern, definition, priority, apply_to)


@admin_command("clear-policy")
@VHOST_OPTION
@click.argument("name")
def clear_policy(api: AdminApi, vhost: str, name: str) -> None:
    """Remove policy NAME."""
    click.echo(f'Clearing policy "{name}" on vhost "{vhost}" ...')
    _clear_policy(api, "policies", vhost, name, "policy")


@admin_command("list-policies", listing=True)
@VHOST_OPTION
def list_policies(api: AdminApi, vhost: str) -> None:
    """Policies of a vhost."""
    _list_policies(api, "policies", vhost)


# -- operator policies ---------------------------------------------------------------------

@admin_command("set-operator-policy")
@policy_options
def set_operator_policy(api: AdminApi, vhost: str, priority: int, apply_to: str, name: str, pattern: str,
                        definition: str) -> None:
    """Set operator policy NAME: limits (message-ttl, expires, max-length, max-length-bytes,
    delivery-limit, overflow) that users' arguments and policies cannot loosen."""
    click.echo(f'Setting operator policy override "{name}" for pattern "{pattern}" to "{definition}" with priority '
               f'"{priority}" for vhost "{vhost}" ...')
    _set_policy(api, "operator-policies", vhost, name, pattern, definition, priority, apply_to)


@admin_command("clear-operator-policy")
@VHOST_OPTION
@click.argument("name")
def clear_operator_policy(api: AdminApi, vhost: str, name: str) -> None:
    """Remove operator policy NAME."""
    click.echo(f'Clearing operator policy "{name}" on vhost "{vhost}" ...')
    _clear_policy(api, "operator-policies", vhost, name, "operator policy")


@admin_command("list-operator-policies", listing=True)
@VHOST_OPTION
def list_operator_policies(api: AdminApi, vhost: str) -> None:
    """Operator policies of a vhost."""
    _list_policies(api, "operator-policies", vhost)


# -- limits --------------------------------------------------------------------------------

def _limits_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@admin_command("set-vhost-limits")
@VHOST_OPTION
@click.argument("definition")
def set_vhost_limits(api: AdminApi, vhost: str, definition: str) -> None:
    """Replace a vhost's limits with DEFINITION (JSON: max-connections, max-queues; -1 is no limit)."""
    click.echo(f'Setting vhost limits to "{definition}" for vhost "{vhost}" ...')
    api.call("PUT", f"vhost-limits/{quote(vhost)}", _json_object(definition),
             not_found=f"vhost '{vhost}' does not exist")


@admin_command("clear-vhost-limits")
@VHOST_OPTION
def clear_vhost_limits(api: AdminApi, vhost: str) -> None:
    """Remove every limit of a vhost."""
    click.echo(f'Clearing vhost "{vhost}" limits ...')
    api.call("DELETE", f"vhost-limits/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")


@admin_command("list-vhost-limits", listing=True)
@VHOST_OPTION
@click.option("--global", "all_vhosts", is_flag=True, help="The limits of every vhost.")
def list_vhost_limits(api: AdminApi, vhost: str, all_vhosts: bool) -> None:
    """A vhost's limits (JSON), or with --global every vhost's."""
    if all_vhosts:
        items = api.call("GET", "vhost-limits")
        if not api.as_json:
            items = [{"vhost": i["vhost"], "limits": _limits_json(i["value"])} for i in items]
        print_rows(api, items, ["vhost", "limits"], {"vhost": "vhost", "limits": "limits" if not api.as_json
                                                     else "value"})
        return
    items = api.call("GET", f"vhost-limits/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    click.echo(_limits_json(items[0]["value"] if items else {}))


@admin_command("set-user-limits")
@click.argument("username")
@click.argument("definition")
def set_user_limits(api: AdminApi, username: str, definition: str) -> None:
    """Replace USERNAME's limits with DEFINITION (JSON: max-connections, max-channels; -1 is no limit)."""
    click.echo(f'Setting user limits to "{definition}" for user "{username}" ...')
    api.call("PUT", f"user-limits/{quote(username)}", _json_object(definition),
             not_found=f"user '{username}' does not exist")


@admin_command("clear-user-limits")
@click.argument("username")
@click.argument("limit_type", metavar="LIMIT_TYPE|all")
def clear_user_limits(api: AdminApi, username: str, limit_type: str) -> None:
    """Remove one limit of USERNAME (max-connections, max-channels), or all of them."""
    if limit_type == "all":
        click.echo(f'Clearing all limits for user "{username}" ...')
        path = f"user-limits/{quote(username)}"
    else:
        click.echo(f'Clearing "{limit_type}" limit for user "{username}" ...')
        path = f"user-limits/{quote(username)}/{quote(limit_type)}"
    api.call("DELETE", path, not_found=f"user '{username}' does not exist")


@admin_command("list-user-limits", listing=True)
@click.argument("username", default="guest")
@click.option("--global", "all_users", is_flag=True, help="The limits of every user.")
def list_user_limits(api: AdminApi, username: str, all_users: bool) -> None:
    """USERNAME's limits (JSON; default: guest), or with --global every user's.  (rabbitmqctl's
    --user is the login option here, so the user is an argument.)"""
    if all_users:
        items = api.call("GET", "user-limits")
        if not api.as_json:
            items = [{"user": i["user"], "limits": _limits_json(i["value"])} for i in items]
        print_rows(api, items, ["user", "limits"], {"user": "user", "limits": "limits" if not api.as_json
                                                   else "value"})
        return
    items = api.call("GET", f"user-limits/{quote(username)}", not_found=f"user '{username}' does not exist")
    click.echo(_limits_json(items[0]["value"] if items else {}))


COMMANDS = (
    set_policy, clear_policy, list_policies, set_operator_policy, clear_operator_policy, list_operator_policies,
    set_vhost_limits, clear_vhost_limits, list_vhost_limits, set_user_limits, clear_user_limits, list_user_limits,
)
