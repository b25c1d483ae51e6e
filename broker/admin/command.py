"""How an admin verb is made: the options every verb shares, and where the management API is.

The API's URL is, in order: ``--url``; ``BROKER_URL``; where ``broker serve`` would put the API
given the same settings (``BROKER_MANAGEMENT_HOST`` / ``BROKER_MANAGEMENT_PORT``, then the
``management-host`` / ``management-port`` keys of the TOML file given by ``--config`` or
``BROKER_CONFIG_FILE``; the host falls back to ``BROKER_HOST`` / ``host`` as serve's does;
``https`` when ``BROKER_MANAGEMENT_TLS_CERT`` / ``management-tls-cert`` is set); else
``http://localhost:15672``.  An https API's certificate is checked against ``--cacert``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click

from ..config import PORT_OR_OFF, read_config_file
from .client import AdminApi, AdminError

DEFAULT_URL = "http://localhost:15672"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

URL_HELP = (
    "The broker's management API. Default: BROKER_URL; else http://HOST:PORT from "
    "BROKER_MANAGEMENT_HOST / BROKER_MANAGEMENT_PORT or the --config file's management-host / "
    f"management-port keys (as broker serve reads them); else {DEFAULT_URL}."
)

Verb = Callable[..., None]


def _setting(env: str, key: str, file: dict[str, Any], path: str | None) -> tuple[Any, str] | None:
    """A serve setting from the environment, else from the config file, with where it came from."""
    value = os.environ.get(env)
    if value:
        return value, env
    if key in file:
        return file[key], f"config file {path}: '{key}'"
    return None


def management_url(config_path: str | None) -> str:
    """The management API's URL when neither --url nor BROKER_URL is given."""
    file = read_config_file(config_path) if config_path else {}
    port_setting = _setting("BROKER_MANAGEMENT_PORT", "management-port", file, config_path)
    https = _setting("BROKER_MANAGEMENT_TLS_CERT", "management-tls-cert", file, config_path) is not None
    host_setting = (_setting("BROKER_MANAGEMENT_HOST", "management-host", file, config_path)
                    or _setting("BROKER_HOST", "host", file, config_path))
    if port_setting is None and host_setting is None and not https:
        return DEFAULT_URL
    port = 15672
    if port_setting is not None:
        value, origin = port_setting
        try:
            port = PORT_OR_OFF.convert(value, None, None)
        except click.BadParameter as exc:
            raise AdminError(f"invalid management port in {origin}: {exc.message}") from None
        if port == 0:
            raise AdminError(f"the management port in {origin} is 0 (a free port picked at start): give the "
                             "broker's API with --url (its log says 'management API listening on ...')")
        if port < 0:
            raise AdminError(f"the management API is turned off ({origin} is -1): start the broker with a "
                             "management port, or give --url")
    host = str(host_setting[0]) if host_setting is not None else "localhost"
    if host in WILDCARD_HOSTS:
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if https else 'http'}://{host}:{port}"


def admin_command(name: str, listing: bool = False) -> Callable[[Verb], click.Command]:
    """A verb that talks to the broker: adds --url/--config/--user/--password (and --json for
    listings); the function gets an :class:`AdminApi` first."""

    def deco(f: Verb) -> click.Command:
        @functools.wraps(f)
        def wrapper(url: str | None, config: str | None, user: str, password: str, cacert: str | None,
                    as_json: bool = False, **kw: Any) -> None:
            f(AdminApi(url or management_url(config), user, password, as_json, cacert), **kw)

        opts = [
            click.option("--url", envvar="BROKER_URL", default=None, help=URL_HELP),
            click.option(
                "--config", envvar="BROKER_CONFIG_FILE", default=None, type=click.Path(dir_okay=False),
                help="broker serve's TOML config file (env BROKER_CONFIG_FILE): its management-host and "
                     "management-port keys give the default --url.",
            ),
            click.option(
                "--user",
                default=lambda: os.environ.get("BROKER_USER", "guest"),
                show_default="guest (env BROKER_USER)",
                help="User to log in to the management API as.",
            ),
            click.option(
                "--password",
                default=lambda: os.environ.get("BROKER_PASS", "guest"),
                show_default="guest (env BROKER_PASS)",
                help="Its password.",
            ),
            click.option("--cacert", envvar="BROKER_CACERT", default=None, type=click.Path(dir_okay=False),
                         help="CA bundle (PEM) to check an https API's certificate with (default: the "
                              "system's CAs)."),
        ]
        if listing:
            opts.append(click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."))
        command: Any = wrapper
        for o in opts:
            command = o(command)
        return click.command(name)(command)

    return deco


VHOST_OPTION = click.option("-p", "--vhost", default="/", show_default=True, help="Virtual host.")
